// The fixed headers of rtnetlink messages (struct ifinfomsg, ifaddrmsg, rtmsg,
// fib_rule_hdr, nhmsg, ndmsg, tcmsg): encoded for requests and decoded, with the
// attributes after them, for every reply. The one place that knows their layouts.
import { Attrs, ipFamily, type NlMsg } from "../codec.js";
import { AF_INET, AF_INET6, AF_UNSPEC } from "./consts.js";

// ── encoding ──

export function ifinfomsg(index = 0, flags = 0, change = 0, family = AF_UNSPEC): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt8(family, 0);
  b.writeInt32LE(index, 4);
  b.writeUInt32LE(flags >>> 0, 8);
  b.writeUInt32LE(change >>> 0, 12);
  return b;
}

export function ifaddrmsg(family: number, prefixLength: number, scope: number, index: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt8(family, 0);
  b.writeUInt8(prefixLength, 1);
  b.writeUInt8(scope, 3);
  b.writeUInt32LE(index, 4);
  return b;
}

export function rtmsg(f: { family: number; dstLen: number; table: number; protocol: number; scope: number; type: number }): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(f.family, 0);
  b.writeUInt8(f.dstLen, 1);
  b.writeUInt8(f.table < 256 ? f.table : 0, 4);
  b.writeUInt8(f.protocol, 5);
  b.writeUInt8(f.scope, 6);
  b.writeUInt8(f.type, 7);
  return b;
}

export function ndmsg(family: number, index = 0, flags = 0): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(family, 0);
  b.writeInt32LE(index, 4);
  b.writeUInt8(flags, 10);
  return b;
}

export function tcmsg(index: number, handle: number, parent: number, info = 0): Buffer {
  const b = Buffer.alloc(20);
  b.writeInt32LE(index, 4);
  b.writeUInt32LE(handle >>> 0, 8);
  b.writeUInt32LE(parent >>> 0, 12);
  b.writeUInt32LE(info >>> 0, 16);
  return b;
}

/** A header of `size` bytes holding only the address family (dump requests). */
export function familyHeader(family: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  b.writeUInt8(family, 0);
  return b;
}

// ── decoding ──

/** struct ifinfomsg */
export interface IfInfoMsg {
  family: number;
  /** ARPHRD_* */
  type: number;
  index: number;
  /** IFF_* */
  flags: number;
  attrs: Attrs;
}

export function decodeIfinfomsg(m: NlMsg): IfInfoMsg {
  const p = m.payload;
  return { family: p.readUInt8(0), type: p.readUInt16LE(2), index: p.readInt32LE(4), flags: p.readUInt32LE(8), attrs: new Attrs(p, 16) };
}

/** struct ifaddrmsg */
export interface IfAddrMsg {
  family: number;
  prefixLength: number;
  /** IFA_F_* (8 bits; IFA_FLAGS holds all of them). */
  flags: number;
  scope: number;
  index: number;
  attrs: Attrs;
}

export function decodeIfaddrmsg(m: NlMsg): IfAddrMsg {
  const p = m.payload;
  return { family: p.readUInt8(0), prefixLength: p.readUInt8(1), flags: p.readUInt8(2), scope: p.readUInt8(3), index: p.readUInt32LE(4), attrs: new Attrs(p, 8) };
}

/** struct rtmsg */
export interface RtMsg {
  family: number;
  dstLen: number;
  srcLen: number;
  tos: number;
  /** rtm_table (8 bits; RTA_TABLE holds the full number). */
  table: number;
  protocol: number;
  scope: number;
  type: number;
  /** RTM_F_* and RTNH_F_* */
  flags: number;
  attrs: Attrs;
}

export function decodeRtmsg(m: NlMsg): RtMsg {
  const p = m.payload;
  return {
    family: p.readUInt8(0),
    dstLen: p.readUInt8(1),
    srcLen: p.readUInt8(2),
    tos: p.readUInt8(3),
    table: p.readUInt8(4),
    protocol: p.readUInt8(5),
    scope: p.readUInt8(6),
    type: p.readUInt8(7),
    flags: p.readUInt32LE(8),
    attrs: new Attrs(p, 12),
  };
}

/** struct fib_rule_hdr */
export interface FibRuleHdr {
  family: number;
  dstLen: number;
  srcLen: number;
  tos: number;
  /** 8 bits; FRA_TABLE holds the full number. */
  table: number;
  /** FR_ACT_* */
  action: number;
  /** FIB_RULE_* */
  flags: number;
  attrs: Attrs;
}

export function decodeFibRuleHdr(m: NlMsg): FibRuleHdr {
  const p = m.payload;
  return {
    family: p.readUInt8(0),
    dstLen: p.readUInt8(1),
    srcLen: p.readUInt8(2),
    tos: p.readUInt8(3),
    table: p.readUInt8(4),
    action: p.readUInt8(7),
    flags: p.readUInt32LE(8),
    attrs: new Attrs(p, 12),
  };
}

/** struct nhmsg */
export interface NhMsg {
  family: number;
  protocol: number;
  attrs: Attrs;
}

export function decodeNhmsg(m: NlMsg): NhMsg {
  const p = m.payload;
  return { family: p.readUInt8(0), protocol: p.readUInt8(2), attrs: new Attrs(p, 8) };
}

/** struct ndmsg */
export interface NdMsg {
  family: number;
  index: number;
  /** NUD_* */
  state: number;
  /** NTF_* */
  flags: number;
  attrs: Attrs;
}

export function decodeNdmsg(m: NlMsg): NdMsg {
  const p = m.payload;
  return { family: p.readUInt8(0), index: p.readInt32LE(4), state: p.readUInt16LE(8), flags: p.readUInt8(10), attrs: new Attrs(p, 12) };
}

/** struct tcmsg */
export interface TcMsg {
  index: number;
  handle: number;
  parent: number;
  /** Filters: priority << 16 | protocol (network order). */
  info: number;
  attrs: Attrs;
}

export function decodeTcmsg(m: NlMsg): TcMsg {
  const p = m.payload;
  return { index: p.readInt32LE(4), handle: p.readUInt32LE(8), parent: p.readUInt32LE(12), info: p.readUInt32LE(16), attrs: new Attrs(p, 20) };
}

// ── families and prefixes ──

export function af(family: 4 | 6): number {
  return family === 6 ? AF_INET6 : AF_INET;
}

/** AF_INET → 4, AF_INET6 → 6, any other address family → undefined. */
export function fromAf(family: number): 4 | 6 | undefined {
  return family === AF_INET ? 4 : family === AF_INET6 ? 6 : undefined;
}

export function parsePrefix(text: string, defaultFamily: 4 | 6): { family: 4 | 6; addr?: string; len: number } {
  if (text === "default") return { family: defaultFamily, len: 0 };
  const slash = text.indexOf("/");
  const addr = slash < 0 ? text : text.slice(0, slash);
  const family = ipFamily(addr);
  const len = slash < 0 ? (family === 6 ? 128 : 32) : Number(text.slice(slash + 1));
  if (!Number.isInteger(len) || len < 0 || len > (family === 6 ? 128 : 32)) throw new Error(`bad prefix: ${text}`);
  return { family, addr, len };
}

export function formatPrefix(addr: string | undefined, len: number): string {
  return len === 0 || addr === undefined ? "default" : `${addr}/${len}`;
}
