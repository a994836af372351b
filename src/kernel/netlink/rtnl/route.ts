// Routes and nexthop objects: `ip route`, `ip nexthop`.
import * as libc from "../../libc.js";
import { NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, attrIp, attrU32, bytesToIp, encodeMessage, ipFamily } from "../codec.js";
import { isNetlinkErrno, type NetlinkSocket } from "../socket.js";
import { AF_UNSPEC, RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE, RTM_DELNEXTHOP, RTM_GETNEXTHOP, RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC, RTA_TABLE, RTA_VIA, RTA_NH_ID, RTM_F_CLONED, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_NOWHERE, RTN_UNICAST, NHA_ID, NHA_GROUP, NHA_BLACKHOLE, NHA_OIF, NHA_GATEWAY, NHA_FDB, EOPNOTSUPP, EAFNOSUPPORT } from "./consts.js";
import { rtmsg, familyHeader, decodeRtmsg, decodeNhmsg, af, fromAf, parsePrefix, formatPrefix, type RtMsg, type NhMsg } from "./headers.js";

export interface RouteSpec {
  /** "a.b.c.d/n", an IPv6 prefix, or "default" (IPv4 unless gateway/src are IPv6). */
  dst: string;
  gateway?: string;
  oif?: number;
  /** rtm_protocol; RTPROT_BOOT when adding without one, any when deleting without one. */
  protocol?: number;
  /** Routing table; main (254) by default. */
  table?: number;
  /** RT_SCOPE_*; link for routes without gateway, universe otherwise (as `ip route`). */
  scope?: number;
  /** Preferred source address (RTA_PREFSRC, `ip route ... src`). */
  src?: string;
  /** Metric (RTA_PRIORITY). */
  priority?: number;
  /** NLM_F_REPLACE: `ip route replace`. */
  replace?: boolean;
}

export interface Route {
  family: 4 | 6;
  /** "a.b.c.d/n" or "default". */
  dst: string;
  gateway?: string;
  oif?: number;
  prefsrc?: string;
  protocol: number;
  /** RTN_* */
  type: number;
  scope: number;
  table: number;
  priority?: number;
  nexthopId?: number;
}

export interface Nexthop {
  id: number;
  /** 0 for groups and blackholes without a family. */
  family: 0 | 4 | 6;
  protocol: number;
  oif?: number;
  gateway?: string;
  blackhole: boolean;
  fdb: boolean;
  group?: { id: number; weight: number }[];
}

/** `ip route add|replace DST [via GW] [dev OIF] [proto P] [table T] [scope S] [src SRC] [metric M]` */
export function addRoute(sock: NetlinkSocket, spec: RouteSpec): void {
  sock.request(routeMessage(RTM_NEWROUTE, spec), `RTM_NEWROUTE ${spec.dst}`);
}

/** `ip route del DST [via GW] [dev OIF] [proto P] [table T]`; a missing route is success. */
export function deleteRoute(sock: NetlinkSocket, spec: RouteSpec): void {
  sock.request(routeMessage(RTM_DELROUTE, spec), `RTM_DELROUTE ${spec.dst}`, [libc.ESRCH, libc.ENOENT]);
}

function routeMessage(type: number, spec: RouteSpec): Buffer {
  const hint = spec.gateway ?? spec.src;
  const p = parsePrefix(spec.dst, hint !== undefined ? ipFamily(hint) : 4);
  const table = spec.table ?? RT_TABLE_MAIN;
  const adding = type === RTM_NEWROUTE;
  // As iproute2: deletes match any protocol/scope/type unless given.
  const scope = spec.scope ?? (adding ? (spec.gateway ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK) : RT_SCOPE_NOWHERE);
  const header = rtmsg({
    family: af(p.family),
    dstLen: p.len,
    table,
    protocol: spec.protocol ?? (adding ? RTPROT_BOOT : 0),
    scope,
    type: adding ? RTN_UNICAST : 0,
  });
  const attrs: Buffer[] = [attrU32(RTA_TABLE, table)];
  if (p.addr !== undefined && p.len > 0) attrs.push(attrIp(RTA_DST, p.addr));
  if (spec.gateway) attrs.push(attrIp(RTA_GATEWAY, spec.gateway));
  if (spec.oif !== undefined) attrs.push(attrU32(RTA_OIF, spec.oif));
  if (spec.src) attrs.push(attrIp(RTA_PREFSRC, spec.src));
  if (spec.priority !== undefined) attrs.push(attrU32(RTA_PRIORITY, spec.priority));
  const flags = adding ? NLM_F_CREATE | (spec.replace ? NLM_F_REPLACE : NLM_F_EXCL) : 0;
  return encodeMessage(type, flags, [header, ...attrs]);
}

/** `ip [-6] route show table all` (or `table T`). Cached (cloned) routes are left out. */
export function routes(sock: NetlinkSocket, family: 4 | 6, table?: number): Route[] {
  const out: Route[] = [];
  for (const m of dumpRoutes(sock, af(family), table)) {
    const r = parseRoute(m);
    if (r && (table === undefined || r.table === table)) out.push(r);
  }
  return out;
}

/**
 * The routes of address family `family` (AF_*), of every table or of `table` (the kernel
 * filters: strict checking), decoded; cached clones included. A missing table has none.
 */
export function dumpRoutes(sock: NetlinkSocket, family: number, table?: number): RtMsg[] {
  const parts = [rtmsg({ family, dstLen: 0, table: 0, protocol: 0, scope: 0, type: 0 })];
  if (table !== undefined) parts.push(attrU32(RTA_TABLE, table));
  try {
    return sock.dump(encodeMessage(RTM_GETROUTE, 0, parts), "RTM_GETROUTE dump").map(decodeRtmsg);
  } catch (err) {
    if (table !== undefined && isNetlinkErrno(err, libc.ENOENT)) return []; // no such table
    throw err;
  }
}

/** `ip nexthop show`; [] on kernels without nexthop objects. */
export function nexthops(sock: NetlinkSocket): Nexthop[] {
  const out: Nexthop[] = [];
  for (const m of dumpNexthops(sock)) {
    const a = m.attrs;
    const fam = fromAf(m.family) ?? 0;
    const nh: Nexthop = {
      id: a.u32(NHA_ID) ?? 0,
      family: fam,
      protocol: m.protocol,
      blackhole: a.has(NHA_BLACKHOLE),
      fdb: a.has(NHA_FDB),
    };
    const oif = a.u32(NHA_OIF);
    if (oif !== undefined) nh.oif = oif;
    const gw = a.ip(NHA_GATEWAY);
    if (gw !== undefined) nh.gateway = gw;
    const grp = a.get(NHA_GROUP);
    if (grp !== undefined) {
      nh.group = [];
      // struct nexthop_grp: u32 id, u8 weight (stored minus one), u8 weight_high, u16
      for (let off = 0; off + 8 <= grp.length; off += 8) {
        nh.group.push({ id: grp.readUInt32LE(off), weight: grp.readUInt8(off + 4) + 1 });
      }
    }
    out.push(nh);
  }
  return out;
}

/** Every nexthop object, decoded; [] on kernels without them. */
export function dumpNexthops(sock: NetlinkSocket): NhMsg[] {
  try {
    return sock.dump(encodeMessage(RTM_GETNEXTHOP, 0, [familyHeader(AF_UNSPEC, 8)]), "RTM_GETNEXTHOP dump").map(decodeNhmsg);
  } catch (err) {
    if (isNetlinkErrno(err, EOPNOTSUPP, EAFNOSUPPORT)) return [];
    throw err;
  }
}

/** `ip nexthop del id ID`; a missing nexthop is success. */
export function deleteNexthop(sock: NetlinkSocket, id: number): void {
  sock.request(encodeMessage(RTM_DELNEXTHOP, 0, [familyHeader(AF_UNSPEC, 8), attrU32(NHA_ID, id)]), `RTM_DELNEXTHOP ${id}`, [libc.ENOENT]);
}

function parseRoute(m: RtMsg): Route | undefined {
  const family = fromAf(m.family);
  if (family === undefined) return undefined;
  if (m.flags & RTM_F_CLONED) return undefined;
  const a = m.attrs;
  const r: Route = {
    family,
    dst: formatPrefix(a.ip(RTA_DST), m.dstLen),
    protocol: m.protocol,
    type: m.type,
    scope: m.scope,
    table: a.u32(RTA_TABLE) ?? m.table,
  };
  const gw = a.ip(RTA_GATEWAY);
  if (gw !== undefined) r.gateway = gw;
  else {
    // RTA_VIA: struct rtvia { u16 family; u8 addr[] } (an IPv6 gateway of an IPv4 route).
    const via = a.get(RTA_VIA);
    if (via !== undefined && (via.length === 6 || via.length === 18)) r.gateway = bytesToIp(via.subarray(2));
  }
  const oif = a.u32(RTA_OIF);
  if (oif !== undefined) r.oif = oif;
  const prefsrc = a.ip(RTA_PREFSRC);
  if (prefsrc !== undefined) r.prefsrc = prefsrc;
  const prio = a.u32(RTA_PRIORITY);
  if (prio !== undefined) r.priority = prio;
  const nh = a.u32(RTA_NH_ID);
  if (nh !== undefined) r.nexthopId = nh;
  return r;
}
