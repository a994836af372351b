// IPsec state of the calling thread's network namespace over NETLINK_XFRM: security
// associations and policies, read-only. Only configuration is decoded; lifetimes in use,
// statistics, replay state and kernel-assigned policy indexes are left out.
import * as libc from "./libc.js";
import { Attrs, bytesToIp, encodeMessage, readCString, type NlMsg } from "./netlink/codec.js";
import { NetlinkSocket, isNetlinkErrno } from "./netlink/socket.js";
import { fromAf } from "./netlink/rtnl.js";

export const NETLINK_XFRM = 6;

const XFRM_MSG_NEWSA = 0x10;
const XFRM_MSG_GETSA = 0x12;
const XFRM_MSG_NEWPOLICY = 0x13;
const XFRM_MSG_GETPOLICY = 0x15;

const XFRMA_ALG_AUTH = 1;
const XFRMA_ALG_CRYPT = 2;
const XFRMA_ALG_COMP = 3;
const XFRMA_ENCAP = 4;
const XFRMA_TMPL = 5;
const XFRMA_POLICY_TYPE = 16;
const XFRMA_ALG_AEAD = 18;
const XFRMA_ALG_AUTH_TRUNC = 20;
const XFRMA_MARK = 21;
const XFRMA_IF_ID = 31;

const EPROTONOSUPPORT = 93;

const USERSA_INFO_SIZE = 224;
const USERPOLICY_INFO_SIZE = 168;
const USER_TMPL_SIZE = 64;

export interface XfrmSelector {
  src: string;
  dst: string;
  proto: number;
  sport: number;
  dport: number;
  ifindex: number;
}

/** What names a security association: in a state, and in a policy's template of one. */
export interface XfrmSaId {
  family: 4 | 6;
  src: string;
  dst: string;
  /** IPPROTO_ESP (50), AH (51), COMP (108), … */
  proto: number;
  spi: number;
  /** XFRM_MODE_*: 0 transport, 1 tunnel, 2 ro, 3 in_trigger, 4 beet. */
  mode: number;
  reqid: number;
}

export interface XfrmState extends XfrmSaId {
  flags: number;
  selector: XfrmSelector;
  /** "auth hmac(sha256)", "enc cbc(aes)", "aead rfc4106(gcm(aes))", "comp deflate", "encap 2 4500→4500". */
  algorithms: string[];
  mark?: { value: number; mask: number };
  ifId?: number;
}

export interface XfrmTemplate extends XfrmSaId {
  share: number;
  optional: boolean;
}

export interface XfrmPolicy {
  /** XFRM_POLICY_IN (0), OUT (1), FWD (2). */
  dir: number;
  /** XFRM_POLICY_ALLOW (0), BLOCK (1). */
  action: number;
  priority: number;
  flags: number;
  share: number;
  /** XFRM_POLICY_TYPE_MAIN (0) or SUB (1). */
  type: number;
  selector: XfrmSelector;
  templates: XfrmTemplate[];
  mark?: { value: number; mask: number };
  ifId?: number;
}

function address(buf: Buffer, off: number, fam: 4 | 6 | undefined): string {
  return fam === 6 ? bytesToIp(buf.subarray(off, off + 16)) : bytesToIp(buf.subarray(off, off + 4));
}

/** struct xfrm_selector (56 bytes) at `off`. */
function selector(buf: Buffer, off: number): XfrmSelector {
  const fam = fromAf(buf.readUInt16LE(off + 40)) ?? 4;
  return {
    dst: `${address(buf, off, fam)}/${buf.readUInt8(off + 42)}`,
    src: `${address(buf, off + 16, fam)}/${buf.readUInt8(off + 43)}`,
    dport: buf.readUInt16BE(off + 32),
    sport: buf.readUInt16BE(off + 36),
    proto: buf.readUInt8(off + 44),
    ifindex: buf.readInt32LE(off + 48),
  };
}

/**
 * struct xfrm_id (daddr, spi, proto) at `id`, with the source address, reqid and mode at
 * the offsets where xfrm_usersa_info and xfrm_user_tmpl keep them.
 */
function saId(buf: Buffer, fam: 4 | 6, off: { id: number; src: number; reqid: number; mode: number }): XfrmSaId {
  return {
    family: fam,
    dst: address(buf, off.id, fam),
    spi: buf.readUInt32BE(off.id + 16),
    proto: buf.readUInt8(off.id + 20),
    src: address(buf, off.src, fam),
    reqid: buf.readUInt32LE(off.reqid),
    mode: buf.readUInt8(off.mode),
  };
}

/** XFRMA_MARK and XFRMA_IF_ID, which states and policies both carry. */
function addMarkAndIfId(a: Attrs, into: { mark?: { value: number; mask: number }; ifId?: number }): void {
  const m = a.get(XFRMA_MARK);
  if (m && m.length >= 8) into.mark = { value: m.readUInt32LE(0), mask: m.readUInt32LE(4) };
  const ifId = a.u32(XFRMA_IF_ID);
  if (ifId !== undefined) into.ifId = ifId;
}

function dump(type: number, operation: string): NlMsg[] {
  let sock: NetlinkSocket;
  try {
    sock = NetlinkSocket.open(NETLINK_XFRM);
  } catch (err) {
    // A kernel without CONFIG_XFRM_USER has no IPsec state to show.
    if (err instanceof libc.SyscallError && err.errno === EPROTONOSUPPORT) return [];
    throw err;
  }
  try {
    return sock.dump(encodeMessage(type, 0, []), operation);
  } catch (err) {
    if (isNetlinkErrno(err, EPROTONOSUPPORT, libc.ENOENT)) return [];
    throw err;
  } finally {
    sock.close();
  }
}

/** `ip xfrm state list` in the current namespace. */
export function xfrmStates(): XfrmState[] {
  const out: XfrmState[] = [];
  for (const m of dump(XFRM_MSG_GETSA, "XFRM_MSG_GETSA dump")) {
    if (m.type !== XFRM_MSG_NEWSA || m.payload.length < USERSA_INFO_SIZE) continue;
    const p = m.payload;
    const fam = fromAf(p.readUInt16LE(212)) ?? 4;
    const a = new Attrs(p, USERSA_INFO_SIZE);
    const algorithms: string[] = [];
    const alg = (t: number, label: string) => {
      const v = a.get(t);
      if (v !== undefined) algorithms.push(`${label} ${readCString(v.subarray(0, 64))}`);
    };
    alg(XFRMA_ALG_AUTH, "auth");
    alg(XFRMA_ALG_AUTH_TRUNC, "auth-trunc");
    alg(XFRMA_ALG_CRYPT, "enc");
    alg(XFRMA_ALG_AEAD, "aead");
    alg(XFRMA_ALG_COMP, "comp");
    const encap = a.get(XFRMA_ENCAP);
    if (encap !== undefined && encap.length >= 8) {
      algorithms.push(`encap ${encap.readUInt16LE(0)} ${encap.readUInt16BE(2)}→${encap.readUInt16BE(4)}`);
    }
    const s: XfrmState = {
      ...saId(p, fam, { id: 56, src: 80, reqid: 208, mode: 214 }),
      flags: p.readUInt8(216),
      selector: selector(p, 0),
      algorithms: algorithms.sort(),
    };
    addMarkAndIfId(a, s);
    out.push(s);
  }
  return out;
}

/** `ip xfrm policy list` in the current namespace (main and sub policies). */
export function xfrmPolicies(): XfrmPolicy[] {
  const out: XfrmPolicy[] = [];
  for (const m of dump(XFRM_MSG_GETPOLICY, "XFRM_MSG_GETPOLICY dump")) {
    if (m.type !== XFRM_MSG_NEWPOLICY || m.payload.length < USERPOLICY_INFO_SIZE) continue;
    const p = m.payload;
    const a = new Attrs(p, USERPOLICY_INFO_SIZE);
    const templates: XfrmTemplate[] = [];
    const tmpl = a.get(XFRMA_TMPL);
    if (tmpl !== undefined) {
      // struct xfrm_user_tmpl: id{daddr[16], spi be32, proto u8}, family u16, saddr[16], reqid, mode, share, optional, aalgos, ealgos, calgos
      for (let off = 0; off + USER_TMPL_SIZE <= tmpl.length; off += USER_TMPL_SIZE) {
        const fam = fromAf(tmpl.readUInt16LE(off + 24)) ?? 4;
        templates.push({
          ...saId(tmpl, fam, { id: off, src: off + 28, reqid: off + 44, mode: off + 48 }),
          share: tmpl.readUInt8(off + 49),
          optional: tmpl.readUInt8(off + 50) !== 0,
        });
      }
    }
    const ptype = a.get(XFRMA_POLICY_TYPE);
    const pol: XfrmPolicy = {
      selector: selector(p, 0),
      priority: p.readUInt32LE(152),
      dir: p.readUInt8(160),
      action: p.readUInt8(161),
      flags: p.readUInt8(162),
      share: p.readUInt8(163),
      type: ptype !== undefined && ptype.length >= 1 ? ptype.readUInt8(0) : 0,
      templates,
    };
    addMarkAndIfId(a, pol);
    out.push(pol);
  }
  return out;
}
