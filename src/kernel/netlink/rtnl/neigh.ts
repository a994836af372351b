// Neighbours (ARP/ND): `ip neigh`.
import * as libc from "../../libc.js";
import { Attrs, attr, attrU32, bytesToMac, encodeMessage, ipToBytes } from "../codec.js";
import { type NetlinkSocket } from "../socket.js";
import { AF_UNSPEC, RTM_DELNEIGH, RTM_GETNEIGH, NDA_DST, NDA_LLADDR, NDA_IFINDEX, NUD_NOARP, NTF_PROXY } from "./consts.js";
import { ndmsg, decodeNdmsg, af, fromAf, type NdMsg } from "./headers.js";

export interface Neighbour {
  family: 4 | 6;
  index: number;
  address: string;
  mac?: string;
  /** NUD_* */
  state: number;
  /** NTF_* */
  flags: number;
}

/** `ip [-4|-6] neigh show [dev INDEX]` */
export function neighbours(sock: NetlinkSocket, family?: 4 | 6, index?: number): Neighbour[] {
  const out: Neighbour[] = [];
  for (const m of dumpNeighbours(sock, family === undefined ? AF_UNSPEC : af(family), { index })) {
    const fam = fromAf(m.family);
    if (fam === undefined || (family !== undefined && fam !== family)) continue;
    const a = m.attrs;
    const address = a.ip(NDA_DST);
    if (address === undefined) continue;
    const n: Neighbour = {
      family: fam,
      index: m.index,
      address,
      state: m.state,
      flags: m.flags,
    };
    if (index !== undefined && n.index !== index) continue;
    const ll = a.get(NDA_LLADDR);
    if (ll !== undefined && ll.length > 0) n.mac = bytesToMac(ll);
    out.push(n);
  }
  return out;
}

/**
 * Neighbour entries of address family `family` (AF_*; AF_BRIDGE for the bridge FDB),
 * decoded: of device `index` only (the kernel filters), or the proxy entries with `proxy`.
 */
export function dumpNeighbours(sock: NetlinkSocket, family: number, opts: { index?: number | undefined; proxy?: boolean } = {}): NdMsg[] {
  const parts = [ndmsg(family, 0, opts.proxy ? NTF_PROXY : 0)];
  if (opts.index !== undefined) parts.push(attrU32(NDA_IFINDEX, opts.index));
  return sock.dump(encodeMessage(RTM_GETNEIGH, 0, parts), opts.proxy ? "RTM_GETNEIGH proxy dump" : "RTM_GETNEIGH dump").map(decodeNdmsg);
}

/** `ip neigh del ADDRESS dev INDEX`; a missing entry is success. */
export function deleteNeighbour(sock: NetlinkSocket, n: Pick<Neighbour, "family" | "index" | "address">): void {
  sock.request(neighbourDelete(n), `RTM_DELNEIGH ${n.address} dev ${n.index}`, [libc.ENOENT]);
}

/**
 * `ip neigh flush all [dev INDEX]`: deletes every entry except NUD_NOARP ones, permanent
 * entries included. The deletes go out batched, not one round trip each.
 */
export function flushNeighbours(sock: NetlinkSocket, index?: number): void {
  const victims = neighbours(sock, undefined, index).filter((n) => (n.state & NUD_NOARP) === 0);
  if (victims.length === 0) return;
  sock.requestBatch(victims.map((n) => neighbourDelete(n)), "RTM_DELNEIGH flush", [libc.ENOENT]);
}

function neighbourDelete(n: Pick<Neighbour, "family" | "index" | "address">): Buffer {
  return encodeMessage(RTM_DELNEIGH, 0, [ndmsg(af(n.family), n.index), attr(NDA_DST, ipToBytes(n.address))]);
}

const RTM_GETNEIGHTBL = 66;
const NDTA_NAME = 1;
const NDTA_PARMS = 6;
const NDTPA_IFINDEX = 1;

/**
 * A device's neighbour parameters (`ip ntable show dev D`): NDTPA_* number → value, times
 * in milliseconds as the kernel reports them.
 */
export interface NeighbourParms {
  /** "arp_cache" (IPv4) or "ndisc_cache" (IPv6). */
  table: string;
  index: number;
  parms: Map<number, number>;
}

/** Per-device parameters of every neighbour table, as one RTM_GETNEIGHTBL dump (`ip ntable show`). */
export function dumpNeighbourParms(sock: NetlinkSocket): NeighbourParms[] {
  const out: NeighbourParms[] = [];
  // struct ndtmsg: family and 3 bytes of padding.
  for (const m of sock.dump(encodeMessage(RTM_GETNEIGHTBL, 0, [Buffer.alloc(4)]), "RTM_GETNEIGHTBL dump")) {
    const a = new Attrs(m.payload, 4);
    const table = a.str(NDTA_NAME);
    const p = a.nested(NDTA_PARMS);
    const index = p?.u32(NDTPA_IFINDEX);
    if (table === undefined || p === undefined || index === undefined) continue; // the table's defaults
    const parms = new Map<number, number>();
    for (const at of p.list) {
      if (at.value.length === 8) parms.set(at.type, Number(at.value.readBigUInt64LE(0)));
      else if (at.value.length === 4) parms.set(at.type, at.value.readUInt32LE(0));
    }
    out.push({ table, index, parms });
  }
  return out;
}
