// Addresses: `ip addr`.
import * as libc from "../../libc.js";
import { NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, attrIp, attrU32, encodeMessage, ipFamily } from "../codec.js";
import { type NetlinkSocket } from "../socket.js";
import { AF_UNSPEC, RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR, IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS, RT_SCOPE_UNIVERSE, EADDRNOTAVAIL } from "./consts.js";
import { ifaddrmsg, decodeIfaddrmsg, af, fromAf, type IfAddrMsg } from "./headers.js";

export interface Address {
  index: number;
  family: 4 | 6;
  address: string;
  prefixLength: number;
  /** The peer of a point-to-point address (`ip addr add A peer P`). */
  peer?: string;
  scope: number;
  /** IFA_F_* (IFA_FLAGS when present). */
  flags: number;
}

/** IFA_F_NODAD: an IPv6 address usable at once, without duplicate address detection. */
const IFA_F_NODAD = 0x02;

export interface AddressOptions {
  peer?: string;
  replace?: boolean;
  /** IPv6: `nodad` (no DAD probe, never tentative). */
  nodad?: boolean;
}

/** `ip addr add IP/LEN [peer PEER] dev INDEX [nodad]` (`ip addr replace` with `replace`). */
export function addAddress(sock: NetlinkSocket, index: number, ip: string, prefixLength: number, opts: AddressOptions = {}): void {
  const family = ipFamily(ip);
  const msg = encodeMessage(RTM_NEWADDR, NLM_F_CREATE | (opts.replace ? NLM_F_REPLACE : NLM_F_EXCL), [
    ifaddrmsg(af(family), prefixLength, RT_SCOPE_UNIVERSE, index),
    attrIp(IFA_LOCAL, ip),
    attrIp(IFA_ADDRESS, opts.peer ?? ip),
    ...(opts.nodad ? [attrU32(IFA_FLAGS, IFA_F_NODAD)] : []),
  ]);
  sock.request(msg, `RTM_NEWADDR ${ip}/${prefixLength} dev ${index}`);
}

/** `ip addr del IP/LEN dev INDEX`; an address (or device) already gone is success. */
export function deleteAddress(sock: NetlinkSocket, index: number, ip: string, prefixLength: number): void {
  const family = ipFamily(ip);
  const msg = encodeMessage(RTM_DELADDR, 0, [ifaddrmsg(af(family), prefixLength, 0, index), attrIp(IFA_LOCAL, ip)]);
  sock.request(msg, `RTM_DELADDR ${ip}/${prefixLength} dev ${index}`, [EADDRNOTAVAIL, libc.ENODEV]);
}

/** `ip addr show` (IPv4 and IPv6). */
export function addresses(sock: NetlinkSocket): Address[] {
  const out: Address[] = [];
  for (const m of dumpAddresses(sock)) {
    const family = fromAf(m.family);
    if (family === undefined) continue;
    const a = m.attrs;
    const local = a.ip(IFA_LOCAL);
    const address = a.ip(IFA_ADDRESS);
    const entry: Address = {
      index: m.index,
      family,
      address: local ?? address ?? "",
      prefixLength: m.prefixLength,
      scope: m.scope,
      flags: a.u32(IFA_FLAGS) ?? m.flags,
    };
    if (local !== undefined && address !== undefined && local !== address) entry.peer = address;
    out.push(entry);
  }
  return out;
}

/** Every address of the namespace (all families), decoded. */
export function dumpAddresses(sock: NetlinkSocket): IfAddrMsg[] {
  const msg = encodeMessage(RTM_GETADDR, 0, [ifaddrmsg(AF_UNSPEC, 0, 0, 0)]);
  return sock.dump(msg, "RTM_GETADDR dump").map(decodeIfaddrmsg);
}
