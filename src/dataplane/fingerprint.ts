// A slot fingerprint: everything a tenant can change or leave behind in a slot namespace,
// read through the kernel and put in a canonical form in which two identical slots are
// equal whatever their index. The pool compares a scrubbed slot's fingerprint with the
// golden one of a freshly built slot: equal → free; different → rebuild or quarantine.
//
// Canonical form: link references are names (ifindexes repeat across namespaces and
// differ between builds), counters, timers, kernel-assigned ids and carrier-dependent
// state are left out, and per-slot values are replaced by placeholders (<slot-mac>,
// <slot-addr>, <host-addr>, <outside-addr>, <link-net>, <slot>). Every section is sorted
// except the nftables ruleset, whose order is its meaning.
//
// The rtnetlink dumps below decode more attributes than src/kernel/netlink/rtnl.ts
// (txqlen, alias, altnames, XDP, tun flags, route metrics and multipath, rule matches,
// proxy neighbours, the bridge FDB, qdisc options); they belong in rtnl.ts eventually.
import { createHash } from "node:crypto";
import { withNetns } from "../kernel/netns.js";
import { Attrs, bytesToIp, bytesToMac, encodeMessage, readCString, type NlMsg } from "../kernel/netlink/codec.js";
import { NETLINK_ROUTE, NetlinkSocket, isNetlinkErrno } from "../kernel/netlink/socket.js";
import { Rtnl } from "../kernel/netlink/rtnl.js";
import { conntrackEntries, type ConntrackEntry } from "../kernel/netlink/conntrack.js";
import { nftJson } from "../kernel/nft.js";
import { readAllNetSysctls, readSysctl } from "../kernel/sysctl.js";
import { xfrmPolicies, xfrmStates, type XfrmSelector } from "../kernel/xfrm.js";
import { namespaceSockets, nsIdOf, processesInNetns, tunHolders } from "../kernel/procfs.js";
import { ipToInt, type SlotAddressing } from "./topology.js";

export const FINGERPRINT_VERSION = 1;

export interface FingerprintContext {
  /** The slot namespace, /run/netns/P-n. */
  netnsPath: string;
  addressing: SlotAddressing;
  /** The slot's entry in the eBPF `slots` map, or undefined when it has none. */
  bpfEntry?: { mac: string; outsideAddress: string; vni: number } | undefined;
  /**
   * Links whose MAC the kernel draws at random when the slot is built: recorded as
   * "<random-mac>". Default: the VXLAN device, which the dataplane creates without a MAC.
   */
  randomMacLinks?: readonly string[];
  /**
   * When to scan every process's descriptors for holders of the slot's tun/tap devices:
   * "attached" (default) only when a device reports carrier or attached queues, which a
   * tun device has while a descriptor is attached, unless the holder turned it off with
   * TUNSETCARRIER; "always" scans anyway (about 5-10 ms with a few hundred processes).
   */
  tapHolderScan?: "attached" | "always";
}

export interface Fingerprint {
  version: number;
  /** Link name → attribute → value. */
  links: Record<string, Record<string, string>>;
  addresses: string[];
  routes: string[];
  rules: string[];
  nexthops: string[];
  /** ARP/ND entries, proxy entries and the bridge FDB (VXLAN remotes). */
  neighbours: string[];
  qdiscs: string[];
  tcFilters: string[];
  /** `nft -j list ruleset`, one object per line, in kernel order. */
  nftables: string[];
  bpf: string[];
  conntrack: { count: number; entries: string[] };
  /** net.* sysctl → value, volatile ones excluded (SYSCTL_EXCLUSIONS). */
  sysctls: Record<string, string>;
  xfrm: { states: string[]; policies: string[] };
  sockets: string[];
  processes: string[];
  tapHolders: string[];
}

/**
 * net.* sysctls that differ between two identical fresh slots, or that cannot say
 * anything about a tenant (found by fingerprinting fresh slots and diffing).
 */
export const SYSCTL_EXCLUSIONS: ReadonlyArray<{ pattern: RegExp; reason: string }> = [
  { pattern: /^net\.netfilter\.nf_conntrack_count$/, reason: "a statistic (entries come and go with traffic); the entries themselves are the conntrack section" },
];

/** Sysctls whose value is a secret: recorded as a digest so that diffs and logs do not carry it. */
const SECRET_SYSCTLS = /^net\.ipv4\.tcp_fastopen_key$|^net\.ipv6\.conf\.[^.]+\.stable_secret$/;

function sysctlValue(key: string, value: string): string {
  if (!SECRET_SYSCTLS.test(key) || /^[0-]*$/.test(value)) return value;
  return `secret sha256:${createHash("sha256").update(value).digest("hex").slice(0, 16)}`;
}

function sysctlExcluded(key: string): boolean {
  return SYSCTL_EXCLUSIONS.some((e) => e.pattern.test(key));
}

// ───────────────────────────── placeholders ─────────────────────────────

type Placeholder = (text: string) => string;

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/**
 * Replaces the slot's own values by placeholders, as whole tokens only: 10.0.0.1 is not
 * replaced inside 10.0.0.10. An address followed by a prefix length is replaced only when
 * it is not the network address of that prefix: "<slot-addr>/31" is an interface address,
 * but 10.200.0.0/16 (slot 0's host address is the link CIDR's base) is a network and stays.
 */
export function placeholders(
  a: Pick<SlotAddressing, "name" | "slotMac" | "slotAddress" | "hostAddress" | "outsideAddress" | "linkNetwork"> & { vxlanMac?: string },
): Placeholder {
  const addrs = new Map<string, string>([
    [a.slotAddress, "<slot-addr>"],
    [a.hostAddress, "<host-addr>"],
    [a.outsideAddress, "<outside-addr>"],
  ]);
  const ipv4 = /(?<![0-9A-Za-z.:])(\d{1,3}(?:\.\d{1,3}){3})(?:\/(\d{1,2}))?(?![0-9A-Za-z]|\.[0-9])/g;
  const mac = new RegExp(`(?<![0-9A-Fa-f:])${escapeRegex(a.slotMac)}(?![0-9A-Fa-f:])`, "gi");
  const name = new RegExp(`(?<![A-Za-z0-9_-])${escapeRegex(a.name)}(?![A-Za-z0-9_-])`, "g");
  const vxlanMac = a.vxlanMac ? new RegExp(`(?<![0-9A-Fa-f:])${escapeRegex(a.vxlanMac)}(?![0-9A-Fa-f:])`, "gi") : undefined;
  return (text) =>
    (vxlanMac ? text.replace(vxlanMac, "<vxlan-mac>") : text)
      .replace(ipv4, (whole: string, ip: string, len: string | undefined) => {
        if (len !== undefined && `${ip}/${len}` === a.linkNetwork) return "<link-net>";
        const ph = addrs.get(ip);
        if (ph === undefined) return whole;
        if (len === undefined) return ph;
        const bits = Number(len);
        const host = bits >= 32 ? 0 : (ipToInt(ip) & (2 ** (32 - bits) - 1)) >>> 0;
        return bits === 32 || host !== 0 ? `${ph}/${len}` : whole;
      })
      .replace(mac, "<slot-mac>")
      .replace(name, "<slot>");
}

// ───────────────────────────── small decoders ─────────────────────────────

const AF_INET = 2;
const AF_INET6 = 10;
const AF_BRIDGE = 7;

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

// ───────────────────────────── rtnetlink dumps ─────────────────────────────

const RTM_GETLINK = 18;
const RTM_GETADDR = 22;
const RTM_GETROUTE = 26;
const RTM_GETNEIGH = 30;
const RTM_GETRULE = 34;
const RTM_GETQDISC = 38;
const IFLA_EXT_MASK = 29;
const RTEXT_FILTER_SKIP_STATS = 1 << 3;
const NTF_PROXY = 0x08;
const EOPNOTSUPP = 95;
const EAFNOSUPPORT = 97;

interface LinkInfo {
  index: number;
  name: string;
  kind?: string;
  /** tun/tap: attached plus disabled queues (multi-queue devices only report them). */
  tunQueues?: number;
  /** IFLA_CARRIER: a tun/tap has carrier while a descriptor is attached, up or down. */
  carrier: boolean;
  attrs: Record<string, string>;
}

function header(family: number, size: number, flags = 0, flagsOffset = -1): Buffer {
  const b = Buffer.alloc(size);
  b.writeUInt8(family, 0);
  if (flagsOffset >= 0) b.writeUInt8(flags, flagsOffset);
  return b;
}

function safeDump(sock: NetlinkSocket, msg: Buffer, operation: string): NlMsg[] {
  try {
    return sock.dump(msg, operation);
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

/** `ip -d link show`, keeping configuration only. Link references are resolved in a second pass. */
function dumpLinks(sock: NetlinkSocket): { links: LinkInfo[]; byIndex: Map<number, string> } {
  const msgs = sock.dump(encodeMessage(RTM_GETLINK, 0, [header(0, 16), attrU32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)]), "RTM_GETLINK dump");
  const byIndex = new Map<number, string>();
  const raw: Array<{ m: NlMsg; a: Attrs; index: number; name: string }> = [];
  for (const m of msgs) {
    const a = new Attrs(m.payload, 16);
    const index = m.payload.readInt32LE(4);
    const name = a.str(3) ?? `#${index}`;
    byIndex.set(index, name);
    raw.push({ m, a, index, name });
  }
  const ref = (i: number) => byIndex.get(i) ?? (i === 0 ? "none" : "other-namespace");
  const links: LinkInfo[] = [];
  for (const { m, a, index, name } of raw) {
    const p = m.payload;
    const attrs: Record<string, string> = {
      type: String(p.readUInt16LE(2)),
      flags: flagNames(p.readUInt32LE(8), IFF_NAMES).join(",") || "none",
    };
    const link: LinkInfo = { index, name, attrs, carrier: a.u8(33) === 1 };
    const mac = a.get(1);
    if (mac !== undefined && mac.length > 0) attrs.address = mac.length === 6 ? bytesToMac(mac) : hex(mac);
    const brd = a.get(2);
    if (brd !== undefined && brd.length > 0) attrs.broadcast = brd.length === 6 ? bytesToMac(brd) : hex(brd);
    const perm = a.get(54);
    if (perm !== undefined && perm.length > 0) attrs.perm_address = perm.length === 6 ? bytesToMac(perm) : hex(perm);
    const mtu = a.u32(4);
    if (mtu !== undefined) attrs.mtu = String(mtu);
    const qdisc = a.str(6);
    if (qdisc !== undefined) attrs.qdisc = qdisc;
    const master = a.u32(10);
    if (master !== undefined) attrs.master = ref(master);
    // IFLA_LINK of a veth names the peer in another namespace: only same-namespace links count.
    const lower = a.u32(5);
    if (lower !== undefined && !a.has(37) && lower !== index) attrs.link = ref(lower);
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
    const info = a.nested(18);
    if (info) {
      const kind = info.str(1);
      if (kind !== undefined) {
        link.kind = kind;
        attrs.kind = kind;
      }
      const slaveKind = info.str(4);
      if (slaveKind !== undefined) attrs.slave_kind = slaveKind;
      const data = info.nested(2);
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
    links.push(link);
  }
  return { links, byIndex };
}

function attrU32(type: number, value: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt16LE(8, 0);
  b.writeUInt16LE(type, 2);
  b.writeUInt32LE(value >>> 0, 4);
  return b;
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
  for (const m of sock.dump(encodeMessage(RTM_GETADDR, 0, [header(0, 8)]), "RTM_GETADDR dump")) {
    const p = m.payload;
    const fam = p.readUInt8(0);
    if (fam !== AF_INET && fam !== AF_INET6) continue;
    const a = new Attrs(p, 8);
    const local = a.get(2);
    const address = a.get(1);
    const main = local ?? address;
    if (!main) continue;
    const parts = [`${fam === AF_INET6 ? "inet6" : "inet"} ${ipOrHex(main)}/${p.readUInt8(1)}`];
    if (local && address && !local.equals(address)) parts.push(`peer ${ipOrHex(address)}`);
    parts.push(`dev ${ref(p.readUInt32LE(4))}`);
    const brd = a.get(4);
    if (brd) parts.push(`brd ${ipOrHex(brd)}`);
    const any = a.get(5);
    if (any) parts.push(`anycast ${ipOrHex(any)}`);
    parts.push(`scope ${names(RT_SCOPES, p.readUInt8(3))}`);
    const label = a.str(3);
    if (label !== undefined && label !== ref(p.readUInt32LE(4))) parts.push(`label ${label}`);
    const flags = a.u32(8) ?? p.readUInt8(2);
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
  for (const m of sock.dump(encodeMessage(RTM_GETROUTE, 0, [header(family, 12)]), "RTM_GETROUTE dump")) {
    const p = m.payload;
    if (p.readUInt8(0) !== family) continue;
    const flags = p.readUInt32LE(8);
    if (flags & 0x200) continue; // RTM_F_CLONED
    const a = new Attrs(p, 12);
    const dstLen = p.readUInt8(1);
    const srcLen = p.readUInt8(2);
    const dst = a.get(1);
    const parts: string[] = [];
    if (family === AF_INET6) parts.push("inet6");
    const type = p.readUInt8(7);
    if (type !== 1) parts.push(names(RT_TYPES, type));
    parts.push(dst ? `${ipOrHex(dst)}/${dstLen}` : dstLen === 0 ? "default" : `?/${dstLen}`);
    const src = a.get(2);
    if (src) parts.push(`from ${ipOrHex(src)}/${srcLen}`);
    if (p.readUInt8(3)) parts.push(`tos ${p.readUInt8(3)}`);
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
    parts.push(`table ${names(RT_TABLES, a.u32(15) ?? p.readUInt8(4))}`);
    parts.push(`proto ${names(RT_PROTOS, p.readUInt8(5))}`);
    parts.push(`scope ${names(RT_SCOPES, p.readUInt8(6))}`);
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
  for (const m of sock.dump(encodeMessage(RTM_GETRULE, 0, [header(family, 12)]), "RTM_GETRULE dump")) {
    const p = m.payload;
    if (p.readUInt8(0) !== family) continue;
    const a = new Attrs(p, 12);
    const parts = [`${family === AF_INET6 ? "inet6 " : ""}${a.u32(6) ?? 0}:`];
    const flags = p.readUInt32LE(8);
    if (flags & 0x2) parts.push("not"); // FIB_RULE_INVERT
    const src = a.get(2);
    parts.push(`from ${src ? `${ipOrHex(src)}/${p.readUInt8(2)}` : "all"}`);
    const dst = a.get(1);
    if (dst) parts.push(`to ${ipOrHex(dst)}/${p.readUInt8(1)}`);
    if (p.readUInt8(3)) parts.push(`tos ${p.readUInt8(3)}`);
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
    const action = p.readUInt8(7);
    const table = a.u32(15) ?? p.readUInt8(4);
    parts.push(action === 1 ? `lookup ${names(RT_TABLES, table)}` : names(FR_ACTIONS, action));
    out.push(parts.join(" "));
  }
  return out;
}

const NUD_PERMANENT = 0x80;
const NUD_NOARP = 0x40;
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
  const render = (m: NlMsg, kind: "neigh" | "proxy" | "fdb") => {
    const p = m.payload;
    const fam = p.readUInt8(0);
    const a = new Attrs(p, 12);
    const parts: string[] = [kind];
    const dst = a.get(1);
    const ll = a.get(2);
    if (kind === "fdb") {
      if (ll) parts.push(ll.length === 6 ? bytesToMac(ll) : hex(ll));
      if (dst) parts.push(`dst ${ipOrHex(dst)}`);
    } else {
      parts.push(`${fam === AF_INET6 ? "inet6 " : ""}${dst ? ipOrHex(dst) : "?"}`);
      if (ll && ll.length > 0) parts.push(`lladdr ${ll.length === 6 ? bytesToMac(ll) : hex(ll)}`);
    }
    parts.push(`dev ${ref(p.readInt32LE(4))}`);
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
    parts.push(...flagNames(p.readUInt8(10), NTF_NAMES));
    if (kind !== "proxy") parts.push(nudClass(p.readUInt16LE(8)));
    out.push(parts.join(" "));
  };
  for (const m of sock.dump(encodeMessage(RTM_GETNEIGH, 0, [header(0, 12)]), "RTM_GETNEIGH dump")) {
    const fam = m.payload.readUInt8(0);
    if (fam === AF_INET || fam === AF_INET6) render(m, "neigh");
  }
  for (const m of safeDump(sock, encodeMessage(RTM_GETNEIGH, 0, [header(0, 12, NTF_PROXY, 10)]), "RTM_GETNEIGH proxy dump")) render(m, "proxy");
  for (const m of safeDump(sock, encodeMessage(RTM_GETNEIGH, 0, [header(AF_BRIDGE, 12)]), "RTM_GETNEIGH fdb dump")) render(m, "fdb");
  return out;
}

/** `tc qdisc show` with each qdisc's options (its statistics left out). */
function dumpQdiscs(sock: NetlinkSocket, ref: (i: number) => string): string[] {
  const out: string[] = [];
  for (const m of sock.dump(encodeMessage(RTM_GETQDISC, 0, [header(0, 20)]), "RTM_GETQDISC dump")) {
    const p = m.payload;
    const a = new Attrs(p, 20);
    const parts = [`dev ${ref(p.readInt32LE(4))}`, a.str(1) ?? "?", `handle ${tcHandle(p.readUInt32LE(8))}`, `parent ${tcHandle(p.readUInt32LE(12))}`];
    const options = a.get(2);
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

// ───────────────────────────── nftables ─────────────────────────────

/**
 * One nftables JSON value without handles, packet/byte counts, quota usage, `last used`
 * times or element expiry; prefixes become "addr/len" so placeholders see them whole.
 */
export function canonicalNft(v: unknown, parentKey = ""): unknown {
  if (Array.isArray(v)) return v.map((x) => canonicalNft(x, parentKey));
  if (v === null || typeof v !== "object") return v;
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o);
  if (keys.length === 1 && keys[0] === "prefix") {
    const pre = o.prefix as { addr?: unknown; len?: unknown } | undefined;
    if (pre && typeof pre.addr === "string" && typeof pre.len === "number") return { prefix: `${pre.addr}/${pre.len}` };
  }
  const out: Record<string, unknown> = {};
  for (const k of keys.sort()) {
    if (k === "handle" || k === "expires") continue;
    if (parentKey === "counter" && (k === "packets" || k === "bytes")) continue;
    if (parentKey === "quota" && (k === "used" || k === "used_unit")) continue;
    if (parentKey === "last" && k === "used") continue;
    out[k] = canonicalNft(o[k], k);
  }
  return out;
}

function nftLines(): string[] {
  const doc = nftJson("list ruleset") as { nftables?: Array<Record<string, unknown>> };
  const out: string[] = [];
  for (const entry of doc.nftables ?? []) {
    const kind = Object.keys(entry)[0];
    if (kind === undefined || kind === "metainfo") continue;
    out.push(`${kind} ${JSON.stringify(canonicalNft(entry[kind], kind))}`);
  }
  return out;
}

// ───────────────────────────── the rest ─────────────────────────────

/**
 * The namespace's conntrack entries. A ctnetlink dump walks the host-wide table (about
 * 9 ms here), so the namespace's own count (net.netfilter.nf_conntrack_count, absent
 * while conntrack is not loaded) is read first and the dump skipped when it is zero.
 */
function conntrackTuples(): ConntrackEntry[] {
  let count: string;
  try {
    count = readSysctl("net.netfilter.nf_conntrack_count");
  } catch {
    return [];
  }
  return count === "0" ? [] : conntrackEntries();
}

const IP_PROTOS: Record<number, string> = { 1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 50: "esp", 51: "ah", 108: "comp" };
const XFRM_MODES: Record<number, string> = { 0: "transport", 1: "tunnel", 2: "ro", 3: "in_trigger", 4: "beet" };
const XFRM_DIRS: Record<number, string> = { 0: "in", 1: "out", 2: "fwd" };

function selectorText(s: XfrmSelector, ref: (i: number) => string): string {
  const parts = [`src ${s.src}`, `dst ${s.dst}`];
  if (s.proto) parts.push(`proto ${names(IP_PROTOS, s.proto)}`);
  if (s.sport) parts.push(`sport ${s.sport}`);
  if (s.dport) parts.push(`dport ${s.dport}`);
  if (s.ifindex) parts.push(`dev ${ref(s.ifindex)}`);
  return parts.join(" ");
}

function sortedRecord(entries: Iterable<[string, string]>): Record<string, string> {
  const list = [...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const out: Record<string, string> = {};
  for (const [k, v] of list) out[k] = v;
  return out;
}

const sorted = (xs: string[]) => [...xs].sort();

/**
 * Reads the slot's namespace through the kernel and returns its canonical fingerprint.
 * Synchronous: the namespace is entered once for all kernel reads; the process and tap
 * holder scans run from the home namespace. `timings`, when given, receives the
 * milliseconds each phase took.
 */
export function slotFingerprint(ctx: FingerprintContext, timings?: Record<string, number>): Fingerprint {
  const ph = placeholders(ctx.addressing);
  let t = performance.now();
  const lap = (phase: string) => {
    const now = performance.now();
    if (timings) timings[phase] = (timings[phase] ?? 0) + (now - t);
    t = now;
  };
  const ns = nsIdOf(ctx.netnsPath);
  const inside = withNetns(ctx.netnsPath, () => {
    const sock = NetlinkSocket.open(NETLINK_ROUTE, { strict: true });
    const rtnl = Rtnl.open();
    try {
      const { links, byIndex } = dumpLinks(sock);
      const ref = (i: number) => byIndex.get(i) ?? (i === 0 ? "none" : `#${i}`);
      const addresses = dumpAddresses(sock, ref);
      const routes = [...dumpRoutes(sock, AF_INET, ref), ...dumpRoutes(sock, AF_INET6, ref)];
      const rules = [...dumpRules(sock, AF_INET), ...dumpRules(sock, AF_INET6)];
      const nexthops = rtnl.nexthops().map((n) => {
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
      const qdiscs = dumpQdiscs(sock, ref);
      const tcFilters: string[] = [];
      for (const l of links) {
        for (const dir of ["ingress", "egress"] as const) {
          for (const f of rtnl.filters(l.index, dir)) {
            const parts = [`dev ${l.name} ${dir} prio ${f.priority} proto 0x${f.protocol.toString(16).padStart(4, "0")} handle 0x${f.handle.toString(16)} ${f.kind}`];
            if (f.chain) parts.push(`chain ${f.chain}`);
            if (f.bpf) parts.push(`${f.bpf.name ?? "?"} tag ${f.bpf.tag ?? "?"}${f.bpf.directAction ? " direct-action" : ""}`);
            tcFilters.push(parts.join(" "));
          }
        }
      }
      lap("rtnetlink");
      const nftables = nftLines();
      lap("nftables");
      const conntrack = conntrackTuples().map((e) => {
        const p = names(IP_PROTOS, e.proto);
        const port = (x: number | undefined) => (x === undefined ? "" : `:${x}`);
        return `${e.family === 6 ? "inet6 " : ""}${p} ${e.src}${port(e.sport)} → ${e.dst}${port(e.dport)}`;
      });
      lap("conntrack");
      const sysctls = readAllNetSysctls(sysctlExcluded);
      lap("sysctls");
      const states = xfrmStates().map(
        (s) =>
          `${s.src} → ${s.dst} proto ${names(IP_PROTOS, s.proto)} spi 0x${s.spi.toString(16)} mode ${names(XFRM_MODES, s.mode)} reqid ${s.reqid} flags ${s.flags}` +
          ` sel ${selectorText(s.selector, ref)}${s.algorithms.length ? ` ${s.algorithms.join(" ")}` : ""}` +
          `${s.mark ? ` mark ${s.mark.value}/${s.mark.mask}` : ""}${s.ifId !== undefined ? ` if_id ${s.ifId}` : ""}`,
      );
      const policies = xfrmPolicies().map(
        (pl) =>
          `dir ${names(XFRM_DIRS, pl.dir)} ${pl.action ? "block" : "allow"} priority ${pl.priority} type ${pl.type ? "sub" : "main"} flags ${pl.flags} share ${pl.share}` +
          ` sel ${selectorText(pl.selector, ref)}` +
          pl.templates
            .map((tm) => ` tmpl ${tm.src} → ${tm.dst} proto ${names(IP_PROTOS, tm.proto)} spi 0x${tm.spi.toString(16)} mode ${names(XFRM_MODES, tm.mode)} reqid ${tm.reqid}${tm.optional ? " optional" : ""}`)
            .join("") +
          `${pl.mark ? ` mark ${pl.mark.value}/${pl.mark.mask}` : ""}${pl.ifId !== undefined ? ` if_id ${pl.ifId}` : ""}`,
      );
      lap("xfrm");
      const sockets = namespaceSockets().map((s) => {
        if (s.proto === "packet") return `packet dev ${s.local === "0" ? "any" : ref(Number(s.local))} ${s.state} ${s.detail ?? ""}`.trim();
        if (s.proto === "unix") return `unix ${s.detail ?? ""} ${s.state} ${s.local === "" ? "(unnamed)" : s.local}`;
        const remote = s.remote && !/^(0\.0\.0\.0|::):0$/.test(s.remote) ? ` → ${s.remote}` : "";
        return `${s.proto} ${s.local}${remote} ${s.state}`;
      });
      lap("sockets");
      return { links, addresses, routes, rules, nexthops, neighbours, qdiscs, tcFilters, nftables, conntrack, sysctls, states, policies, sockets };
    } finally {
      rtnl.close();
      sock.close();
    }
  });
  t = performance.now();

  const processes = processesInNetns(ns).map((p) => `${p.pid} ${p.comm}${p.threads ? ` (threads ${p.threads.join(",")})` : ""}`);
  lap("processes");
  const holders: string[] = [];
  for (const l of inside.links) {
    if (l.kind !== "tun") continue;
    const attached = l.carrier || (l.tunQueues ?? 0) > 0;
    // Only scan descriptors when the device says someone is attached: the scan is costly.
    if (!attached && ctx.tapHolderScan !== "always") continue;
    const found = tunHolders(l.name, ns);
    if (found.length === 0 && attached) holders.push(`${l.name}: attached to a process that cannot be seen from here`);
    for (const h of found) holders.push(`${l.name}: held by ${h.pid} ${h.comm}`);
  }
  lap("tapHolders");

  const links: Record<string, Record<string, string>> = {};
  const randomMac = new Set(ctx.randomMacLinks ?? []);
  for (const l of [...inside.links].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const attrs = Object.entries(l.attrs).map(([k, v]): [string, string] => [k, k === "address" && randomMac.has(l.name) ? "<random-mac>" : ph(v)]);
    links[ph(l.name)] = sortedRecord(attrs);
  }
  const list = (xs: string[]) => sorted(xs.map(ph));
  const bpf = ctx.bpfEntry ? [ph(`${ctx.bpfEntry.mac.toLowerCase()} outside ${ctx.bpfEntry.outsideAddress} vni ${ctx.bpfEntry.vni}`)] : ["no map entry"];
  const conntrackList = list(inside.conntrack);
  const fp: Fingerprint = {
    version: FINGERPRINT_VERSION,
    links,
    addresses: list(inside.addresses),
    routes: list(inside.routes),
    rules: list(inside.rules),
    nexthops: list(inside.nexthops),
    neighbours: list(inside.neighbours),
    qdiscs: list(inside.qdiscs),
    tcFilters: list(inside.tcFilters),
    nftables: inside.nftables.map(ph),
    bpf,
    conntrack: { count: conntrackList.length, entries: conntrackList },
    sysctls: sortedRecord([...inside.sysctls].map(([k, v]): [string, string] => [k, sysctlValue(k, v)])),
    xfrm: { states: list(inside.states), policies: list(inside.policies) },
    sockets: list(inside.sockets),
    processes: sorted(processes.map(ph)),
    tapHolders: sorted(holders.map(ph)),
  };
  lap("canonicalise");
  return fp;
}

// ───────────────────────────── comparing ─────────────────────────────

/** Canonical JSON: keys in the order the fingerprint was built with (already sorted). */
export function canonicalJson(f: Fingerprint): string {
  return JSON.stringify(f);
}

/** sha256 (hex) of the canonical JSON. */
export function fingerprintHash(f: Fingerprint): string {
  return createHash("sha256").update(canonicalJson(f)).digest("hex");
}

function listDiff(section: string, a: readonly string[], b: readonly string[], out: string[]): void {
  const count = (xs: readonly string[]) => {
    const m = new Map<string, number>();
    for (const x of xs) m.set(x, (m.get(x) ?? 0) + 1);
    return m;
  };
  const ca = count(a);
  const cb = count(b);
  const before = out.length;
  for (const [x, n] of ca) for (let i = cb.get(x) ?? 0; i < n; i++) out.push(`${section}: - ${x}`);
  for (const [x, n] of cb) for (let i = ca.get(x) ?? 0; i < n; i++) out.push(`${section}: + ${x}`);
  if (out.length === before && a.join("\n") !== b.join("\n")) out.push(`${section}: order changed`);
}

function recordDiff(label: (key: string) => string, a: Record<string, string>, b: Record<string, string>, out: string[]): void {
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
  for (const k of keys) {
    const va = a[k];
    const vb = b[k];
    if (va === vb) continue;
    if (va === undefined) out.push(`${label(k)}: + ${vb}`);
    else if (vb === undefined) out.push(`${label(k)}: - ${va}`);
    else out.push(`${label(k)}: ${va} → ${vb}`);
  }
}

function describeLink(attrs: Record<string, string>): string {
  const pick = ["kind", "address", "mtu", "flags"].filter((k) => attrs[k] !== undefined).map((k) => `${k} ${attrs[k]}`);
  return pick.join(", ");
}

/**
 * Human-readable differences from `a` to `b` ("routes: + 10.9.0.0/16 dev eth0 …",
 * "sysctl net.ipv4.ip_forward: 1 → 0", "links eth0 mtu: 1500 → 1400"); empty when equal.
 */
export function diffFingerprints(a: Fingerprint, b: Fingerprint): string[] {
  const out: string[] = [];
  if (a.version !== b.version) out.push(`version: ${a.version} → ${b.version}`);
  const names = [...new Set([...Object.keys(a.links), ...Object.keys(b.links)])].sort();
  for (const n of names) {
    const la = a.links[n];
    const lb = b.links[n];
    if (!la) out.push(`links: + ${n} (${describeLink(lb!)})`);
    else if (!lb) out.push(`links: - ${n} (${describeLink(la)})`);
    else recordDiff((k) => `links ${n} ${k}`, la, lb, out);
  }
  listDiff("addresses", a.addresses, b.addresses, out);
  listDiff("routes", a.routes, b.routes, out);
  listDiff("rules", a.rules, b.rules, out);
  listDiff("nexthops", a.nexthops, b.nexthops, out);
  listDiff("neighbours", a.neighbours, b.neighbours, out);
  listDiff("qdiscs", a.qdiscs, b.qdiscs, out);
  listDiff("tc filters", a.tcFilters, b.tcFilters, out);
  listDiff("nftables", a.nftables, b.nftables, out);
  listDiff("bpf", a.bpf, b.bpf, out);
  if (a.conntrack.count !== b.conntrack.count) out.push(`conntrack count: ${a.conntrack.count} → ${b.conntrack.count}`);
  listDiff("conntrack", a.conntrack.entries, b.conntrack.entries, out);
  recordDiff((k) => `sysctl ${k}`, a.sysctls, b.sysctls, out);
  listDiff("xfrm states", a.xfrm.states, b.xfrm.states, out);
  listDiff("xfrm policies", a.xfrm.policies, b.xfrm.policies, out);
  listDiff("sockets", a.sockets, b.sockets, out);
  listDiff("processes", a.processes, b.processes, out);
  listDiff("tap holders", a.tapHolders, b.tapHolders, out);
  return out;
}

/**
 * Why the slot cannot be scrubbed back to baseline, or undefined: a process lives in its
 * namespace, or holds its tap open (a VMM still attached). The pool quarantines these.
 */
export function liveHolders(f: Fingerprint): string | undefined {
  const reasons: string[] = [];
  if (f.processes.length > 0) reasons.push(`processes in the namespace: ${f.processes.join(", ")}`);
  if (f.tapHolders.length > 0) reasons.push(`tap held open: ${f.tapHolders.join(", ")}`);
  return reasons.length > 0 ? reasons.join("; ") : undefined;
}
