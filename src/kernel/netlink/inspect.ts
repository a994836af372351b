// Read-only rtnetlink inspection of the calling thread's network namespace, rendered as
// the canonical lines of a slot fingerprint (src/dataplane/fingerprint.ts): link
// references are names; counters, timers and carrier-dependent state are left out.
// The messages are dumped and decoded by the same code as the operations (rtnl/*.ts,
// headers decoded in rtnl/headers.ts); this file only renders them. It renders more than
// the operations parse (txqlen, alias, altnames, XDP, tun flags, route metrics and
// multipath, rule matches, proxy neighbours, the bridge FDB, qdisc options) because
// anything a tenant can change must show up here.
import { Attrs, bytesToIp, bytesToMac, readCString } from "./codec.js";
import { NETLINK_ROUTE, NetlinkSocket, isNetlinkErrno } from "./socket.js";
import type { DeviceConf } from "../sysctl.js";
import { dumpAddresses as dumpAddressMessages } from "./rtnl/addr.js";
import {
  AF_BRIDGE,
  AF_INET,
  AF_INET6,
  AF_UNSPEC,
  EAFNOSUPPORT,
  EOPNOTSUPP,
  IFA_ADDRESS,
  IFA_FLAGS,
  IFA_LOCAL,
  IFLA_ADDRESS,
  IFLA_IFNAME,
  IFLA_INFO_DATA,
  IFLA_INFO_KIND,
  IFLA_LINK,
  IFLA_LINK_NETNSID,
  IFLA_LINKINFO,
  IFLA_MASTER,
  IFLA_MTU,
  IFLA_QDISC,
  NDA_DST,
  NDA_LLADDR,
  NUD_NOARP,
  NUD_PERMANENT,
  RTA_DST,
  RTA_TABLE,
  RTM_F_CLONED,
  FRA_DST,
  FRA_PRIORITY,
  FRA_SRC,
  FRA_TABLE,
  TCA_KIND,
  TCA_OPTIONS,
} from "./rtnl/consts.js";
import type { NdMsg } from "./rtnl/headers.js";
import { dumpLinks as dumpLinkMessages } from "./rtnl/link.js";
import { dumpNeighbours as dumpNeighbourMessages } from "./rtnl/neigh.js";
import { dumpRoutes as dumpRouteMessages, nexthops as listNexthops } from "./rtnl/route.js";
import { dumpRules as dumpRuleMessages } from "./rtnl/rule.js";
import { dumpQdiscs as dumpQdiscMessages, filters as listFilters } from "./rtnl/tc.js";
import { listActions } from "./rtnl/actions.js";

// ───────────────────────────── small decoders ─────────────────────────────

const hex = (b: Buffer) => b.toString("hex");
const tcHandle = (h: number) => (h === 0xffffffff ? "root" : `${(h >>> 16).toString(16)}:${(h & 0xffff).toString(16)}`);

function ipOrHex(b: Buffer): string {
  return b.length === 4 || b.length === 16 ? bytesToIp(b) : hex(b);
}

function names(map: Record<number, string>, value: number, fallback = String(value)): string {
  return map[value] ?? fallback;
}

const RT_TABLES: Record<number, string> = { 253: "default", 254: "main", 255: "local" };
const RT_PROTOS: Record<number, string> = { 0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static" };
const RT_SCOPES: Record<number, string> = { 0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere" };
const RT_TYPES: Record<number, string> = {
  0: "unspec",
  1: "unicast",
  2: "local",
  3: "broadcast",
  4: "anycast",
  5: "multicast",
  6: "blackhole",
  7: "unreachable",
  8: "prohibit",
  9: "throw",
  10: "nat",
  11: "xresolve",
};
const FR_ACTIONS: Record<number, string> = { 1: "lookup", 2: "goto", 3: "nop", 6: "blackhole", 7: "unreachable", 8: "prohibit" };

/** Interface flags a tenant sets; RUNNING, LOWER_UP and DORMANT follow the carrier (a VM attached or not). */
const IFF_NAMES: Array<[number, string]> = [
  [0x1, "up"],
  [0x2, "broadcast"],
  [0x4, "debug"],
  [0x8, "loopback"],
  [0x10, "pointopoint"],
  [0x20, "notrailers"],
  [0x80, "noarp"],
  [0x100, "promisc"],
  [0x200, "allmulti"],
  [0x400, "master"],
  [0x800, "slave"],
  [0x1000, "multicast"],
  [0x2000, "portsel"],
  [0x4000, "automedia"],
  [0x8000, "dynamic"],
  [0x40000, "echo"],
];

function flagNames(flags: number, table: Array<[number, string]>): string[] {
  const out: string[] = [];
  for (const [bit, name] of table) if (flags & bit) out.push(name);
  return out;
}

export interface InspectedLink {
  index: number;
  name: string;
  kind?: string;
  /** tun/tap: attached plus disabled queues (multi-queue devices only report them). */
  tunQueues?: number;
  /** IFLA_CARRIER: a tun/tap has carrier while a descriptor is attached, up or down. */
  carrier: boolean;
  attrs: Record<string, string>;
  /** The device's IPv4/IPv6 configuration arrays (see DeviceConf in src/kernel/sysctl.ts). */
  devconf: DeviceConf;
}

/** A dump the kernel may not support (proxy neighbours, the bridge FDB): [] when it does not. */
function optionalDump<T>(dump: () => T[]): T[] {
  try {
    return dump();
  } catch (err) {
    if (isNetlinkErrno(err, EOPNOTSUPP, EAFNOSUPPORT)) return [];
    throw err;
  }
}

const VXLAN_ATTRS: Record<number, [string, "u8" | "u16be" | "u32" | "ip" | "link" | "flag" | "range"]> = {
  1: ["id", "u32"],
  2: ["group", "ip"],
  3: ["link", "link"],
  4: ["local", "ip"],
  5: ["ttl", "u8"],
  6: ["tos", "u8"],
  7: ["learning", "u8"],
  8: ["ageing", "u32"],
  9: ["limit", "u32"],
  10: ["port_range", "range"],
  11: ["proxy", "u8"],
  12: ["rsc", "u8"],
  13: ["l2miss", "u8"],
  14: ["l3miss", "u8"],
  15: ["port", "u16be"],
  16: ["group6", "ip"],
  17: ["local6", "ip"],
  18: ["udp_csum", "u8"],
  19: ["udp_zero_csum6_tx", "u8"],
  20: ["udp_zero_csum6_rx", "u8"],
  21: ["remcsum_tx", "u8"],
  22: ["remcsum_rx", "u8"],
  23: ["gbp", "flag"],
  24: ["remcsum_nopartial", "flag"],
  25: ["collect_metadata", "u8"],
  26: ["label", "u32"],
  27: ["gpe", "flag"],
  28: ["ttl_inherit", "u8"],
  29: ["df", "u8"],
  30: ["vnifilter", "u8"],
  31: ["localbypass", "u8"],
};
const TUN_ATTRS: Record<number, string> = { 1: "owner", 2: "group", 3: "type", 4: "pi", 5: "vnet_hdr", 6: "persist", 7: "multi_queue" };
const IFLA_TUN_NUM_QUEUES = 8;
const IFLA_TUN_NUM_DISABLED_QUEUES = 9;

/** u32 (or shorter) attributes of a link that are configuration, by IFLA_* number. */
const LINK_NUMBERS: Record<number, string> = {
  13: "txqlen",
  17: "linkmode",
  27: "group",
  30: "promiscuity",
  31: "numtxqueues",
  32: "numrxqueues",
  39: "proto_down",
  40: "gso_max_segs",
  41: "gso_max_size",
  50: "min_mtu",
  51: "max_mtu",
  58: "gro_max_size",
  59: "tso_max_size",
  60: "tso_max_segs",
  61: "allmulti",
  63: "gso_ipv4_max_size",
  64: "gro_ipv4_max_size",
};

function num(b: Buffer): number {
  return b.length >= 4 ? b.readUInt32LE(0) : b.length >= 2 ? b.readUInt16LE(0) : b.length === 1 ? b.readUInt8(0) : 0;
}

const IFLA_AF_SPEC = 26;
const IFLA_INET_CONF = 1;
const IFLA_INET6_CONF = 2;

/** IFLA_AF_SPEC's per-device sysctl arrays: IPv4 indexed from IPV4_DEVCONF_FORWARDING (1), IPv6 from DEVCONF_FORWARDING (0). */
function deviceConf(a: Attrs): DeviceConf {
  const spec = a.nested(IFLA_AF_SPEC);
  const ints = (b: Buffer | undefined) => {
    if (!b) return undefined;
    const out: number[] = [];
    for (let off = 0; off + 4 <= b.length; off += 4) out.push(b.readInt32LE(off));
    return out;
  };
  const v4 = ints(spec?.nested(AF_INET)?.get(IFLA_INET_CONF));
  const v6 = ints(spec?.nested(AF_INET6)?.get(IFLA_INET6_CONF));
  return { ...(v4 ? { ipv4: [0, ...v4] } : {}), ...(v6 ? { ipv6: v6 } : {}) };
}

/** `ip -d link show`, keeping configuration only. Link references are resolved in a second pass. */
function dumpLinks(sock: NetlinkSocket): { links: InspectedLink[]; byIndex: Map<number, string> } {
  const byIndex = new Map<number, string>();
  const raw = dumpLinkMessages(sock).map((m) => ({ m, a: m.attrs, index: m.index, name: m.attrs.str(IFLA_IFNAME) ?? `#${m.index}` }));
  for (const { index, name } of raw) byIndex.set(index, name);
  const ref = (i: number) => byIndex.get(i) ?? (i === 0 ? "none" : "other-namespace");
  const links: InspectedLink[] = [];
  for (const { m, a, index, name } of raw) {
    const attrs: Record<string, string> = {
      type: String(m.type),
      flags: flagNames(m.flags, IFF_NAMES).join(",") || "none",
    };
    const link: InspectedLink = { index, name, attrs, carrier: a.u8(33) === 1, devconf: {} };
    const mac = a.get(IFLA_ADDRESS);
    if (mac !== undefined && mac.length > 0) attrs.address = mac.length === 6 ? bytesToMac(mac) : hex(mac);
    const brd = a.get(2);
    if (brd !== undefined && brd.length > 0) attrs.broadcast = brd.length === 6 ? bytesToMac(brd) : hex(brd);
    const perm = a.get(54);
    if (perm !== undefined && perm.length > 0) attrs.perm_address = perm.length === 6 ? bytesToMac(perm) : hex(perm);
    const mtu = a.u32(IFLA_MTU);
    if (mtu !== undefined) attrs.mtu = String(mtu);
    const qdisc = a.str(IFLA_QDISC);
    if (qdisc !== undefined) attrs.qdisc = qdisc;
    const master = a.u32(IFLA_MASTER);
    if (master !== undefined) attrs.master = ref(master);
    // IFLA_LINK of a veth names the peer in another namespace: only same-namespace links count.
    const lower = a.u32(IFLA_LINK);
    if (lower !== undefined && !a.has(IFLA_LINK_NETNSID) && lower !== index) attrs.link = ref(lower);
    const alias = a.str(20);
    if (alias !== undefined && alias !== "") attrs.alias = alias;
    for (const [t, label] of Object.entries(LINK_NUMBERS)) {
      const v = a.get(Number(t));
      if (v !== undefined) attrs[label] = String(num(v));
    }
    const props = a.nested(52);
    if (props) {
      const alt = props.all(53).map((b) => readCString(b));
      if (alt.length > 0) attrs.altnames = alt.sort().join(",");
    }
    const xdp = a.nested(43);
    const xdpMode = xdp?.u8(2);
    if (xdpMode !== undefined && xdpMode !== 0) attrs.xdp = ["none", "driver", "generic", "offload", "multi"][xdpMode] ?? String(xdpMode);
    const info = a.nested(IFLA_LINKINFO);
    if (info) {
      const kind = info.str(IFLA_INFO_KIND);
      if (kind !== undefined) {
        link.kind = kind;
        attrs.kind = kind;
      }
      const slaveKind = info.str(4);
      if (slaveKind !== undefined) attrs.slave_kind = slaveKind;
      const data = info.nested(IFLA_INFO_DATA);
      if (data) {
        for (const at of data.list) {
          if (kind === "vxlan") {
            const spec = VXLAN_ATTRS[at.type];
            const key = `vxlan.${spec?.[0] ?? at.type}`;
            const v = at.value;
            switch (spec?.[1]) {
              case "u8":
                attrs[key] = String(v.readUInt8(0));
                break;
              case "u16be":
                attrs[key] = String(v.readUInt16BE(0));
                break;
              case "u32":
                attrs[key] = String(v.readUInt32LE(0));
                break;
              case "ip":
                attrs[key] = ipOrHex(v);
                break;
              case "link":
                attrs[key] = ref(v.readUInt32LE(0));
                break;
              case "flag":
                attrs[key] = "on";
                break;
              case "range":
                attrs[key] = `${v.readUInt16BE(0)}-${v.readUInt16BE(2)}`;
                break;
              default:
                attrs[key] = hex(v);
            }
          } else if (kind === "tun") {
            if (at.type === IFLA_TUN_NUM_QUEUES || at.type === IFLA_TUN_NUM_DISABLED_QUEUES) {
              link.tunQueues = (link.tunQueues ?? 0) + num(at.value);
              continue; // attached queues: a VMM holding the tap, reported under tapHolders
            }
            attrs[`tun.${TUN_ATTRS[at.type] ?? at.type}`] = String(num(at.value));
          } else {
            attrs[`${kind ?? "info"}.${at.type}`] = hex(at.value);
          }
        }
      }
      const slaveData = info.nested(5);
      if (slaveData) for (const at of slaveData.list) attrs[`${slaveKind ?? "slave"}.${at.type}`] = hex(at.value);
    }
    link.devconf = deviceConf(a);
    links.push(link);
  }
  return { links, byIndex };
}

const IFA_FLAGS_NAMES: Array<[number, string]> = [
  [0x1, "secondary"],
  [0x2, "nodad"],
  [0x4, "optimistic"],
  [0x8, "dadfailed"],
  [0x10, "homeaddress"],
  [0x20, "deprecated"],
  [0x40, "tentative"],
  [0x80, "permanent"],
  [0x100, "mngtmpaddr"],
  [0x200, "noprefixroute"],
  [0x400, "autojoin"],
  [0x800, "stable-privacy"],
];

/** `ip addr show` */
function dumpAddresses(sock: NetlinkSocket, ref: (i: number) => string): string[] {
  const out: string[] = [];
  for (const m of dumpAddressMessages(sock)) {
    const fam = m.family;
    if (fam !== AF_INET && fam !== AF_INET6) continue;
    const a = m.attrs;
    const local = a.get(IFA_LOCAL);
    const address = a.get(IFA_ADDRESS);
    const main = local ?? address;
    if (!main) continue;
    const parts = [`${fam === AF_INET6 ? "inet6" : "inet"} ${ipOrHex(main)}/${m.prefixLength}`];
    if (local && address && !local.equals(address)) parts.push(`peer ${ipOrHex(address)}`);
    parts.push(`dev ${ref(m.index)}`);
    const brd = a.get(4);
    if (brd) parts.push(`brd ${ipOrHex(brd)}`);
    const any = a.get(5);
    if (any) parts.push(`anycast ${ipOrHex(any)}`);
    parts.push(`scope ${names(RT_SCOPES, m.scope)}`);
    const label = a.str(3);
    if (label !== undefined && label !== ref(m.index)) parts.push(`label ${label}`);
    const flags = a.u32(IFA_FLAGS) ?? m.flags;
    const fl = flagNames(flags, IFA_FLAGS_NAMES);
    if (fl.length) parts.push(fl.join(" "));
    const metric = a.u32(9);
    if (metric !== undefined) parts.push(`metric ${metric}`);
    const proto = a.u8(11);
    if (proto !== undefined) parts.push(`proto ${proto}`);
    out.push(parts.join(" "));
  }
  return out;
}

const RTAX_NAMES: Record<number, string> = {
  1: "lock",
  2: "mtu",
  3: "window",
  4: "rtt",
  5: "rttvar",
  6: "ssthresh",
  7: "cwnd",
  8: "advmss",
  9: "reordering",
  10: "hoplimit",
  11: "initcwnd",
  12: "features",
  13: "rto_min",
  14: "initrwnd",
  15: "quickack",
  16: "congctl",
  17: "fastopen_no_cookie",
};

/** Route attributes that are state, not configuration: RTA_CACHEINFO, RTA_MFC_STATS, RTA_EXPIRES, RTA_PAD. */
const ROUTE_SKIP = new Set([12, 17, 23, 24]);
const RTNH_F_PERVASIVE = 2;
const RTNH_F_ONLINK = 4;

/** `ip [-6] route show table all` (cached clones left out). */
function dumpRoutes(sock: NetlinkSocket, family: number, ref: (i: number) => string): string[] {
  const out: string[] = [];
  for (const m of dumpRouteMessages(sock, family)) {
    if (m.family !== family) continue;
    const { flags, dstLen, srcLen, type, attrs: a } = m;
    if (flags & RTM_F_CLONED) continue;
    const dst = a.get(RTA_DST);
    const parts: string[] = [];
    if (family === AF_INET6) parts.push("inet6");
    if (type !== 1) parts.push(names(RT_TYPES, type));
    parts.push(dst ? `${ipOrHex(dst)}/${dstLen}` : dstLen === 0 ? "default" : `?/${dstLen}`);
    const src = a.get(2);
    if (src) parts.push(`from ${ipOrHex(src)}/${srcLen}`);
    if (m.tos) parts.push(`tos ${m.tos}`);
    const extra: string[] = [];
    for (const at of a.list) {
      if (ROUTE_SKIP.has(at.type) || at.type === 1 || at.type === 2) continue;
      const v = at.value;
      switch (at.type) {
        case 3:
          extra.push(`iif ${ref(v.readUInt32LE(0))}`);
          break;
        case 4:
          extra.push(`dev ${ref(v.readUInt32LE(0))}`);
          break;
        case 5:
          extra.push(`via ${ipOrHex(v)}`);
          break;
        case 6:
          extra.push(`metric ${v.readUInt32LE(0)}`);
          break;
        case 7:
          extra.push(`src ${ipOrHex(v)}`);
          break;
        case 8: {
          const metrics = new Attrs(v).list.map((x) => `${RTAX_NAMES[x.type] ?? x.type}=${x.type === 16 ? readCString(x.value) : num(x.value)}`);
          if (metrics.length) extra.push(`metrics ${metrics.sort().join(",")}`);
          break;
        }
        case 9: {
          // struct rtnexthop { u16 len; u8 flags; u8 hops; int ifindex } + attributes
          for (let off = 0; off + 8 <= v.length; ) {
            const len = v.readUInt16LE(off);
            if (len < 8) break;
            const nh = new Attrs(v.subarray(off + 8, off + len));
            const gw = nh.get(5);
            extra.push(`nexthop${gw ? ` via ${ipOrHex(gw)}` : ""} dev ${ref(v.readInt32LE(off + 4))} weight ${v.readUInt8(off + 3) + 1}`);
            off += (len + 3) & ~3;
          }
          break;
        }
        case 15:
          break; // RTA_TABLE: printed below from the same value
        case 18:
          extra.push(`via ${v.length >= 6 ? ipOrHex(v.subarray(2)) : hex(v)}`);
          break;
        case 30:
          extra.push(`nhid ${v.readUInt32LE(0)}`);
          break;
        default:
          extra.push(`rta${at.type}=${hex(v)}`);
      }
    }
    // ip-route order: gateway and device first, whatever order the kernel sent them in.
    const rank = (x: string) => ["via", "nexthop", "dev", "iif", "src", "metric", "nhid", "metrics"].indexOf(x.split(" ")[0]!) >>> 0;
    parts.push(...extra.sort((x, y) => rank(x) - rank(y)));
    parts.push(`table ${names(RT_TABLES, a.u32(RTA_TABLE) ?? m.table)}`);
    parts.push(`proto ${names(RT_PROTOS, m.protocol)}`);
    parts.push(`scope ${names(RT_SCOPES, m.scope)}`);
    if (flags & RTNH_F_ONLINK) parts.push("onlink");
    if (flags & RTNH_F_PERVASIVE) parts.push("pervasive");
    out.push(parts.join(" "));
  }
  return out;
}

const RULE_ATTRS: Record<number, [string, "ip" | "str" | "u32" | "u8" | "range" | "uid"]> = {
  3: ["iif", "str"],
  4: ["goto", "u32"],
  10: ["fwmark", "u32"],
  11: ["realms", "u32"],
  13: ["suppress_ifgroup", "u32"],
  14: ["suppress_prefixlength", "u32"],
  16: ["fwmask", "u32"],
  17: ["oif", "str"],
  19: ["l3mdev", "u8"],
  20: ["uidrange", "uid"],
  21: ["protocol", "u8"],
  22: ["ipproto", "u8"],
  23: ["sport", "range"],
  24: ["dport", "range"],
};

/** `ip [-6] rule show` */
function dumpRules(sock: NetlinkSocket, family: number): string[] {
  const out: string[] = [];
  for (const m of dumpRuleMessages(sock, family)) {
    if (m.family !== family) continue;
    const a = m.attrs;
    const parts = [`${family === AF_INET6 ? "inet6 " : ""}${a.u32(FRA_PRIORITY) ?? 0}:`];
    if (m.flags & 0x2) parts.push("not"); // FIB_RULE_INVERT
    const src = a.get(FRA_SRC);
    parts.push(`from ${src ? `${ipOrHex(src)}/${m.srcLen}` : "all"}`);
    const dst = a.get(FRA_DST);
    if (dst) parts.push(`to ${ipOrHex(dst)}/${m.dstLen}`);
    if (m.tos) parts.push(`tos ${m.tos}`);
    for (const at of a.list) {
      if (at.type === 1 || at.type === 2 || at.type === 6 || at.type === 15 || at.type === 18) continue;
      const spec = RULE_ATTRS[at.type];
      const v = at.value;
      if (!spec) {
        parts.push(`fra${at.type}=${hex(v)}`);
        continue;
      }
      const [label, kind] = spec;
      if (at.type === 14 && v.readUInt32LE(0) === 0xffffffff) continue; // suppress_prefixlength unset
      if (at.type === 21) {
        parts.push(`proto ${names(RT_PROTOS, v.readUInt8(0))}`);
        continue;
      }
      const value =
        kind === "str" ? readCString(v) : kind === "u8" ? String(v.readUInt8(0)) : kind === "u32" ? String(v.readUInt32LE(0)) : kind === "ip" ? ipOrHex(v) : kind === "range" ? `${v.readUInt16LE(0)}-${v.readUInt16LE(2)}` : `${v.readUInt32LE(0)}-${v.readUInt32LE(4)}`;
      parts.push(`${label} ${value}`);
    }
    const action = m.action;
    const table = a.u32(FRA_TABLE) ?? m.table;
    parts.push(action === 1 ? `lookup ${names(RT_TABLES, table)}` : names(FR_ACTIONS, action));
    out.push(parts.join(" "));
  }
  return out;
}

const NTF_NAMES: Array<[number, string]> = [
  [0x2, "self"],
  [0x4, "master"],
  [0x8, "proxy"],
  [0x10, "extern_learn"],
  [0x40, "sticky"],
  [0x80, "router"],
];

/** NUD state as a class: reachable/stale/delay/probe/incomplete/failed move with timers and traffic. */
function nudClass(state: number): string {
  if (state & NUD_PERMANENT) return "permanent";
  if (state & NUD_NOARP) return "noarp";
  return state === 0 ? "none" : "dynamic";
}

/** `ip neigh show`, `ip neigh show proxy` and `bridge fdb show`. */
function dumpNeighbours(sock: NetlinkSocket, ref: (i: number) => string): string[] {
  const out: string[] = [];
  const render = (m: NdMsg, kind: "neigh" | "proxy" | "fdb") => {
    const fam = m.family;
    const a = m.attrs;
    const parts: string[] = [kind];
    const dst = a.get(NDA_DST);
    const ll = a.get(NDA_LLADDR);
    if (kind === "fdb") {
      if (ll) parts.push(ll.length === 6 ? bytesToMac(ll) : hex(ll));
      if (dst) parts.push(`dst ${ipOrHex(dst)}`);
    } else {
      parts.push(`${fam === AF_INET6 ? "inet6 " : ""}${dst ? ipOrHex(dst) : "?"}`);
      if (ll && ll.length > 0) parts.push(`lladdr ${ll.length === 6 ? bytesToMac(ll) : hex(ll)}`);
    }
    parts.push(`dev ${ref(m.index)}`);
    const port = a.get(6);
    if (port) parts.push(`port ${port.readUInt16BE(0)}`);
    const vni = a.u32(7);
    if (vni !== undefined) parts.push(`vni ${vni}`);
    const via = a.u32(8);
    if (via !== undefined) parts.push(`via ${ref(via)}`);
    const master = a.u32(9);
    if (master !== undefined) parts.push(`master ${ref(master)}`);
    const vlan = a.get(5);
    if (vlan) parts.push(`vlan ${vlan.readUInt16LE(0)}`);
    parts.push(...flagNames(m.flags, NTF_NAMES));
    if (kind !== "proxy") parts.push(nudClass(m.state));
    out.push(parts.join(" "));
  };
  for (const m of dumpNeighbourMessages(sock, AF_UNSPEC)) {
    if (m.family === AF_INET || m.family === AF_INET6) render(m, "neigh");
  }
  for (const m of optionalDump(() => dumpNeighbourMessages(sock, AF_UNSPEC, { proxy: true }))) render(m, "proxy");
  for (const m of optionalDump(() => dumpNeighbourMessages(sock, AF_BRIDGE))) render(m, "fdb");
  return out;
}

/**
 * `tc qdisc show` with each qdisc's options (its statistics left out); `hooks` gets, per
 * device, the clsact/ingress parents filters can hang from (only those are dumped).
 */
function dumpQdiscs(sock: NetlinkSocket, ref: (i: number) => string, hooks: Map<number, Array<"ingress" | "egress">>): string[] {
  const out: string[] = [];
  for (const m of dumpQdiscMessages(sock)) {
    const a = m.attrs;
    const kind = a.str(TCA_KIND);
    if (kind === "clsact") hooks.set(m.index, ["ingress", "egress"]);
    else if (kind === "ingress" && !hooks.has(m.index)) hooks.set(m.index, ["ingress"]);
    const parts = [`dev ${ref(m.index)}`, a.str(TCA_KIND) ?? "?", `handle ${tcHandle(m.handle)}`, `parent ${tcHandle(m.parent)}`];
    const options = a.get(TCA_OPTIONS);
    if (options && options.length > 0) parts.push(`options ${hex(options)}`);
    for (const [t, label] of [
      [8, "stab"],
      [11, "chain"],
      [13, "ingress_block"],
      [14, "egress_block"],
    ] as const) {
      const v = a.get(t);
      if (v) parts.push(`${label} ${hex(v)}`);
    }
    out.push(parts.join(" "));
  }
  return out;
}

// ───────────────────────────── the namespace ─────────────────────────────

/**
 * The rendered sections, one line per object, in kernel order (not sorted); routes and
 * rules IPv4 then IPv6; neighbours are ARP/ND entries, proxy entries and the bridge FDB.
 */
export type InspectedSection = "addresses" | "routes" | "rules" | "nexthops" | "neighbours" | "qdiscs" | "tcFilters" | "tcActions";

/** The rtnetlink part of a slot fingerprint. */
export interface NamespaceInspection extends Record<InspectedSection, string[]> {
  links: InspectedLink[];
  /** ifindex → link name. */
  byIndex: Map<number, string>;
  /** A link reference as text: its name, "none" for 0, "#N" for an index not in this namespace. */
  ref: (index: number) => string;
}

/**
 * Dumps the calling thread's current network namespace: `ip -d link show`, `ip addr show`,
 * `ip [-6] route show table all`, `ip [-6] rule show`, `ip nexthop show`, `ip neigh show`,
 * `ip neigh show proxy`, `bridge fdb show`, `tc qdisc show`, `tc filter show dev D
 * ingress|egress` for every link, `tc actions ls action K` for every action kind.
 */
export function inspectNamespace(): NamespaceInspection {
  const sock = NetlinkSocket.open(NETLINK_ROUTE, { strict: true });
  try {
    // Not the neighbour tables' per-device parameters (RTM_GETNEIGHTBL): that dump walks
    // the parameters of every device of every namespace on the host (5.4 ms beside 4,766
    // root links), so a fingerprint reads them from the slot's own neigh files instead.
    const { links, byIndex } = dumpLinks(sock);
    const ref = (i: number) => byIndex.get(i) ?? (i === 0 ? "none" : `#${i}`);
    const addresses = dumpAddresses(sock, ref);
    const routes = [...dumpRoutes(sock, AF_INET, ref), ...dumpRoutes(sock, AF_INET6, ref)];
    const rules = [...dumpRules(sock, AF_INET), ...dumpRules(sock, AF_INET6)];
    const nexthops = listNexthops(sock).map((n) => {
      const parts = [`id ${n.id}`];
      if (n.group) parts.push(`group ${n.group.map((g) => `${g.id},${g.weight}`).join("/")}`);
      if (n.gateway) parts.push(`via ${n.gateway}`);
      if (n.oif !== undefined) parts.push(`dev ${ref(n.oif)}`);
      if (n.blackhole) parts.push("blackhole");
      if (n.fdb) parts.push("fdb");
      parts.push(`proto ${names(RT_PROTOS, n.protocol)}`);
      return parts.join(" ");
    });
    const neighbours = dumpNeighbours(sock, ref);
    // Filters at the ingress and egress hooks need a clsact (or ingress) qdisc on the
    // device, which the qdisc dump shows: other devices have none to dump.
    const hooks = new Map<number, Array<"ingress" | "egress">>();
    const qdiscs = dumpQdiscs(sock, ref, hooks);
    const tcFilters: string[] = [];
    for (const l of links) {
      for (const dir of hooks.get(l.index) ?? []) {
        for (const f of listFilters(sock, l.index, dir)) {
          const parts = [`dev ${l.name} ${dir} prio ${f.priority} proto 0x${f.protocol.toString(16).padStart(4, "0")} handle 0x${f.handle.toString(16)} ${f.kind}`];
          if (f.chain) parts.push(`chain ${f.chain}`);
          if (f.bpf) parts.push(`${f.bpf.name ?? "?"} tag ${f.bpf.tag ?? "?"}${f.bpf.directAction ? " direct-action" : ""}`);
          tcFilters.push(parts.join(" "));
        }
      }
    }
    // Actions in the namespace's tables, standalone ones included (bound to no filter).
    const tcActions = listActions(sock);
    return { links, byIndex, ref, addresses, routes, rules, nexthops, neighbours, qdiscs, tcFilters, tcActions };
  } finally {
    sock.close();
  }
}
