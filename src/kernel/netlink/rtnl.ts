// Typed rtnetlink operations (links, addresses, routes, rules, nexthops, neighbours, tc)
// over one NETLINK_ROUTE socket in the namespace that was current when it was opened.
// Each operation is one request (or one dump); nothing here spawns a process.
import * as libc from "../libc.js";
import {
  Attrs,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REPLACE,
  attr,
  attrIp,
  attrNested,
  attrString,
  attrU16be,
  attrU32,
  attrU8,
  bytesToIp,
  bytesToMac,
  encodeMessage,
  ipFamily,
  ipToBytes,
  macToBytes,
  type NlMsg,
} from "./codec.js";
import { NETLINK_ROUTE, NetlinkSocket, isNetlinkErrno } from "./socket.js";

// ───────────────────────────── constants ─────────────────────────────

export const AF_UNSPEC = 0;
export const AF_INET = 2;
export const AF_INET6 = 10;

const RTM_NEWLINK = 16;
const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
const RTM_SETLINK = 19;
const RTM_NEWADDR = 20;
const RTM_DELADDR = 21;
export const RTM_GETADDR = 22;
const RTM_NEWROUTE = 24;
const RTM_DELROUTE = 25;
export const RTM_GETROUTE = 26;
const RTM_DELNEIGH = 29;
export const RTM_GETNEIGH = 30;
const RTM_DELRULE = 33;
export const RTM_GETRULE = 34;
const RTM_NEWQDISC = 36;
const RTM_DELQDISC = 37;
export const RTM_GETQDISC = 38;
const RTM_NEWTFILTER = 44;
const RTM_DELTFILTER = 45;
const RTM_GETTFILTER = 46;
const RTM_DELNEXTHOP = 105;
const RTM_GETNEXTHOP = 106;

const IFLA_ADDRESS = 1;
const IFLA_IFNAME = 3;
const IFLA_MTU = 4;
const IFLA_LINK = 5;
const IFLA_QDISC = 6;
const IFLA_MASTER = 10;
const IFLA_OPERSTATE = 16;
const IFLA_LINKINFO = 18;
const IFLA_NET_NS_FD = 28;
const IFLA_AF_SPEC = 26;
const IFLA_INET_CONF = 1;
const IFLA_INET6_ADDR_GEN_MODE = 8;
const IPV4_DEVCONF_FORWARDING = 1;
/** IN6_ADDR_GEN_MODE_NONE: no link-local address, so no DAD or router solicitation. */
const IN6_ADDR_GEN_MODE_NONE = 1;
export const IFLA_EXT_MASK = 29;
const IFLA_LINK_NETNSID = 37;
const IFLA_INFO_KIND = 1;
const IFLA_INFO_DATA = 2;
const VETH_INFO_PEER = 1;
export const RTEXT_FILTER_SKIP_STATS = 1 << 3;

const IFLA_VXLAN_ID = 1;
const IFLA_VXLAN_GROUP = 2;
const IFLA_VXLAN_LINK = 3;
const IFLA_VXLAN_LOCAL = 4;
const IFLA_VXLAN_LEARNING = 7;
const IFLA_VXLAN_PORT = 15;
const IFLA_VXLAN_GROUP6 = 16;
const IFLA_VXLAN_LOCAL6 = 17;
const IFLA_GENEVE_ID = 1;
const IFLA_GENEVE_REMOTE = 2;
const IFLA_GENEVE_PORT = 5;

export const IFF_UP = 0x1;
export const IFF_LOWER_UP = 0x10000;

const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
const IFA_FLAGS = 8;

const RTA_DST = 1;
const RTA_OIF = 4;
const RTA_GATEWAY = 5;
const RTA_PRIORITY = 6;
const RTA_PREFSRC = 7;
const RTA_TABLE = 15;
const RTA_VIA = 18;
const RTA_NH_ID = 30;
export const RTM_F_CLONED = 0x200;

export const RT_TABLE_MAIN = 254;
export const RT_TABLE_LOCAL = 255;
/** `proto boot`, what `ip route add` sets when no protocol is given. */
export const RTPROT_BOOT = 3;
export const RTPROT_STATIC = 4;
export const RT_SCOPE_UNIVERSE = 0;
export const RT_SCOPE_SITE = 200;
export const RT_SCOPE_LINK = 253;
export const RT_SCOPE_HOST = 254;
export const RT_SCOPE_NOWHERE = 255;
export const RTN_UNICAST = 1;
export const RTN_LOCAL = 2;
export const RTN_BROADCAST = 3;

const FRA_DST = 1;
const FRA_SRC = 2;
const FRA_IIFNAME = 3;
const FRA_PRIORITY = 6;
const FRA_FWMARK = 10;
const FRA_TABLE = 15;
const FRA_FWMASK = 16;
const FRA_OIFNAME = 17;
/** fib rule actions (`ip rule ... lookup|goto|nop|blackhole|unreachable|prohibit`). */
export const FR_ACT_TO_TBL = 1;
export const FR_ACT_GOTO = 2;
export const FR_ACT_NOP = 3;
export const FR_ACT_BLACKHOLE = 6;
export const FR_ACT_UNREACHABLE = 7;
export const FR_ACT_PROHIBIT = 8;

const NHA_ID = 1;
const NHA_GROUP = 2;
const NHA_BLACKHOLE = 4;
const NHA_OIF = 5;
const NHA_GATEWAY = 6;
const NHA_FDB = 11;

const NDA_DST = 1;
const NDA_LLADDR = 2;
const NDA_IFINDEX = 8;
export const NUD_INCOMPLETE = 0x01;
export const NUD_REACHABLE = 0x02;
export const NUD_STALE = 0x04;
export const NUD_DELAY = 0x08;
export const NUD_PROBE = 0x10;
export const NUD_FAILED = 0x20;
export const NUD_NOARP = 0x40;
export const NUD_PERMANENT = 0x80;

const TCA_KIND = 1;
const TCA_OPTIONS = 2;
const TCA_CHAIN = 11;
const TCA_BPF_FD = 6;
const TCA_BPF_NAME = 7;
const TCA_BPF_FLAGS = 8;
const TCA_BPF_TAG = 10;
const TCA_BPF_ID = 11;
const TCA_BPF_FLAG_ACT_DIRECT = 1;
/** TC_H_CLSACT (== TC_H_INGRESS): parent of the clsact qdisc. */
export const TC_H_CLSACT = 0xfffffff1;
const CLSACT_HANDLE = 0xffff0000;
const TC_H_MIN_INGRESS = 0xfff2;
const TC_H_MIN_EGRESS = 0xfff3;
const ETH_P_ALL = 0x0003;

const EADDRNOTAVAIL = 99;
export const EOPNOTSUPP = 95;
export const EAFNOSUPPORT = 97;

// ───────────────────────────── types ─────────────────────────────

export type OperState = "UNKNOWN" | "NOTPRESENT" | "DOWN" | "LOWERLAYERDOWN" | "TESTING" | "DORMANT" | "UP";
const OPERSTATES: readonly OperState[] = ["UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP"];

export interface VxlanInfo {
  vni: number;
  remote?: string;
  local?: string;
  port?: number;
  /** Underlay device index (IFLA_VXLAN_LINK). */
  link?: number;
  learning?: boolean;
}

export interface Link {
  index: number;
  name: string;
  /** IFLA_INFO_KIND: "veth", "vxlan", "tun", … (absent for physical devices and lo). */
  kind?: string;
  mac?: string;
  mtu: number;
  /** ifi_flags (IFF_*). */
  flags: number;
  up: boolean;
  /** IFF_LOWER_UP: carrier. */
  lowerUp: boolean;
  master?: number;
  operstate: OperState;
  qdisc?: string;
  /** For a veth, the namespace id of its peer's namespace as seen from this one. */
  linkNetnsId?: number;
  /** IFLA_LINK: the lower device; for a veth, the peer's ifindex (in the peer's namespace). */
  linkIndex?: number;
  vxlan?: VxlanInfo;
}

export interface VethSpec {
  name: string;
  peerName: string;
  /** Create the peer directly in this namespace (an open /run/netns/… fd). */
  peerNetnsFd?: number;
  mac?: string;
  peerMac?: string;
  /** MTU of this end, and of the peer unless `peerMtu` is given. */
  mtu?: number;
  peerMtu?: number;
  up?: boolean;
  peerUp?: boolean;
}

/**
 * `ip link set dev INDEX [up|down] [mtu M] [address MAC]` plus, in the same request,
 * `sysctl net.ipv4.conf.DEV.forwarding` and `ip link set DEV addrgenmode none`.
 */
export interface LinkChange {
  up?: boolean;
  mtu?: number;
  mac?: string;
  ipv4Forwarding?: boolean;
  /** false: no IPv6 link-local address (addrgenmode none), hence no DAD/RS/MLD work. */
  ipv6LinkLocal?: boolean;
}

export interface VxlanSpec {
  name: string;
  /** 0 is allowed. */
  vni: number;
  remote: string;
  local?: string;
  /** UDP destination port, e.g. 4789. */
  port: number;
  linkIndex?: number;
  learning: boolean;
  mtu?: number;
  mac?: string;
  up?: boolean;
}

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

export interface RoutingRule {
  family: 4 | 6;
  priority: number;
  table: number;
  /** FR_ACT_*. */
  action: number;
  src?: string;
  dst?: string;
  iifname?: string;
  oifname?: string;
  fwmark?: number;
  fwmask?: number;
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

export interface Qdisc {
  index: number;
  kind: string;
  handle: number;
  parent: number;
}

export type TcDirection = "ingress" | "egress";

export interface TcFilter {
  kind: string;
  priority: number;
  /** Ethertype in host order (ETH_P_ALL = 3). */
  protocol: number;
  handle: number;
  chain?: number;
  bpf?: { name?: string; id?: number; tag?: string; directAction: boolean };
}

// ───────────────────────────── family headers ─────────────────────────────

interface VethEnd {
  name: string;
  mac: string | undefined;
  mtu: number | undefined;
  up: boolean;
  netnsFd?: number | undefined;
}

function vethEndAttrs(end: VethEnd): Buffer[] {
  const attrs: Buffer[] = [attrString(IFLA_IFNAME, end.name)];
  if (end.mac) attrs.push(attr(IFLA_ADDRESS, macToBytes(end.mac)));
  if (end.mtu !== undefined) attrs.push(attrU32(IFLA_MTU, end.mtu));
  if (end.netnsFd !== undefined) attrs.push(attrU32(IFLA_NET_NS_FD, end.netnsFd));
  return attrs;
}

function ifinfomsg(index = 0, flags = 0, change = 0, family = AF_UNSPEC): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt8(family, 0);
  b.writeInt32LE(index, 4);
  b.writeUInt32LE(flags >>> 0, 8);
  b.writeUInt32LE(change >>> 0, 12);
  return b;
}

function ifaddrmsg(family: number, prefixLength: number, scope: number, index: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt8(family, 0);
  b.writeUInt8(prefixLength, 1);
  b.writeUInt8(scope, 3);
  b.writeUInt32LE(index, 4);
  return b;
}

function rtmsg(f: { family: number; dstLen: number; table: number; protocol: number; scope: number; type: number }): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(f.family, 0);
  b.writeUInt8(f.dstLen, 1);
  b.writeUInt8(f.table < 256 ? f.table : 0, 4);
  b.writeUInt8(f.protocol, 5);
  b.writeUInt8(f.scope, 6);
  b.writeUInt8(f.type, 7);
  return b;
}

function ndmsg(family: number, index = 0): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(family, 0);
  b.writeInt32LE(index, 4);
  return b;
}

function tcmsg(index: number, handle: number, parent: number, info = 0): Buffer {
  const b = Buffer.alloc(20);
  b.writeInt32LE(index, 4);
  b.writeUInt32LE(handle >>> 0, 8);
  b.writeUInt32LE(parent >>> 0, 12);
  b.writeUInt32LE(info >>> 0, 16);
  return b;
}

export function familyHeader(family: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  b.writeUInt8(family, 0);
  return b;
}

function af(family: 4 | 6): number {
  return family === 6 ? AF_INET6 : AF_INET;
}

/** AF_INET → 4, AF_INET6 → 6, any other address family → undefined. */
export function fromAf(family: number): 4 | 6 | undefined {
  return family === AF_INET ? 4 : family === AF_INET6 ? 6 : undefined;
}

function parsePrefix(text: string, defaultFamily: 4 | 6): { family: 4 | 6; addr?: string; len: number } {
  if (text === "default") return { family: defaultFamily, len: 0 };
  const slash = text.indexOf("/");
  const addr = slash < 0 ? text : text.slice(0, slash);
  const family = ipFamily(addr);
  const len = slash < 0 ? (family === 6 ? 128 : 32) : Number(text.slice(slash + 1));
  if (!Number.isInteger(len) || len < 0 || len > (family === 6 ? 128 : 32)) throw new Error(`bad prefix: ${text}`);
  return { family, addr, len };
}

function formatPrefix(addr: string | undefined, len: number): string {
  return len === 0 || addr === undefined ? "default" : `${addr}/${len}`;
}

function tcParent(direction: TcDirection): number {
  return ((TC_H_CLSACT & 0xffff0000) | (direction === "ingress" ? TC_H_MIN_INGRESS : TC_H_MIN_EGRESS)) >>> 0;
}

const htons = (v: number): number => ((v & 0xff) << 8) | ((v >> 8) & 0xff);

// ───────────────────────────── Rtnl ─────────────────────────────

export class Rtnl {
  private readonly sock: NetlinkSocket;

  private constructor(sock: NetlinkSocket) {
    this.sock = sock;
  }

  /** Opens a NETLINK_ROUTE socket in the calling thread's current network namespace. */
  static open(): Rtnl {
    // Strict checking lets the kernel filter dumps (routes by table, neighbours by device).
    return new Rtnl(NetlinkSocket.open(NETLINK_ROUTE, { strict: true }));
  }

  close(): void {
    this.sock.close();
  }

  // ── links ──

  /** `ip -d link show` */
  links(): Link[] {
    const msg = encodeMessage(RTM_GETLINK, 0, [ifinfomsg(), attrU32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)]);
    return this.sock.dump(msg, "RTM_GETLINK dump").map(parseLink);
  }

  /** `ip -d link show dev NAME`; undefined when there is no such device. */
  linkByName(name: string): Link | undefined {
    const msg = encodeMessage(RTM_GETLINK, 0, [ifinfomsg(), attrString(IFLA_IFNAME, name), attrU32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)]);
    try {
      const replies = this.sock.query(msg, `RTM_GETLINK ${name}`);
      return replies.length > 0 ? parseLink(replies[0]!) : undefined;
    } catch (err) {
      if (isNetlinkErrno(err, libc.ENODEV)) return undefined;
      throw err;
    }
  }

  /**
   * `ip link add NAME [address MAC] [mtu M] type veth peer name PEER [address PMAC]
   * [mtu PM] [netns NS]`, then `ip link set … up` as asked. The peer is created directly
   * in the namespace of `peerNetnsFd`: nothing is created in one namespace and moved.
   *
   * The kernel opens the VETH_INFO_PEER end before pairing it, so that end cannot be
   * brought up in the creating request (ENOTCONN). The end that must come up in the other
   * namespace is therefore made the primary device (created there by IFLA_NET_NS_FD), the
   * local end the VETH_INFO_PEER; a local end that must come up too costs one RTM_SETLINK
   * by name. Without peerUp it is a single request.
   */
  createVeth(spec: VethSpec): void {
    const local: VethEnd = { name: spec.name, mac: spec.mac, mtu: spec.mtu, up: spec.up ?? false };
    const remote: VethEnd = { name: spec.peerName, mac: spec.peerMac, mtu: spec.peerMtu ?? spec.mtu, up: spec.peerUp ?? false, netnsFd: spec.peerNetnsFd };
    const swap = remote.up && remote.netnsFd !== undefined;
    const primary = swap ? remote : local;
    const secondary = swap ? local : remote;
    const operation = `RTM_NEWLINK veth ${spec.name} peer ${spec.peerName}`;
    const peerInfo = attr(VETH_INFO_PEER, Buffer.concat([ifinfomsg(), ...vethEndAttrs(secondary)]));
    const up = primary.up ? IFF_UP : 0;
    const linkinfo = attrNested(IFLA_LINKINFO, [attrString(IFLA_INFO_KIND, "veth"), attrNested(IFLA_INFO_DATA, [peerInfo])]);
    this.sock.request(encodeMessage(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, [ifinfomsg(0, up, up), ...vethEndAttrs(primary), linkinfo]), operation);
    if (!secondary.up) return;
    // The secondary end is in this namespace whenever it has to come up here.
    try {
      this.sock.request(encodeMessage(RTM_SETLINK, 0, [ifinfomsg(0, IFF_UP, IFF_UP), attrString(IFLA_IFNAME, secondary.name)]), `RTM_SETLINK ${secondary.name} up`);
    } catch (err) {
      this.deleteLinkByName(local.name);
      throw err;
    }
  }

  private deleteLinkByName(name: string): void {
    this.sock.request(encodeMessage(RTM_DELLINK, 0, [ifinfomsg(), attrString(IFLA_IFNAME, name)]), `RTM_DELLINK ${name}`, [libc.ENODEV]);
  }

  /**
   * `ip link add NAME [mtu M] [up] type vxlan id VNI remote R [local L] dstport PORT
   * [dev LINK] [no]learning`
   */
  createVxlan(spec: VxlanSpec): void {
    const data: Buffer[] = [attrU32(IFLA_VXLAN_ID, spec.vni)];
    data.push(attrIp(ipFamily(spec.remote) === 6 ? IFLA_VXLAN_GROUP6 : IFLA_VXLAN_GROUP, spec.remote));
    if (spec.local) data.push(attrIp(ipFamily(spec.local) === 6 ? IFLA_VXLAN_LOCAL6 : IFLA_VXLAN_LOCAL, spec.local));
    data.push(attrU16be(IFLA_VXLAN_PORT, spec.port));
    if (spec.linkIndex !== undefined) data.push(attrU32(IFLA_VXLAN_LINK, spec.linkIndex));
    data.push(attrU8(IFLA_VXLAN_LEARNING, spec.learning ? 1 : 0));
    const attrs: Buffer[] = [attrString(IFLA_IFNAME, spec.name)];
    if (spec.mtu !== undefined) attrs.push(attrU32(IFLA_MTU, spec.mtu));
    if (spec.mac) attrs.push(attr(IFLA_ADDRESS, macToBytes(spec.mac)));
    attrs.push(attrNested(IFLA_LINKINFO, [attrString(IFLA_INFO_KIND, "vxlan"), attrNested(IFLA_INFO_DATA, data)]));
    const up = spec.up ? IFF_UP : 0;
    this.sock.request(encodeMessage(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, [ifinfomsg(0, up, up), ...attrs]), `RTM_NEWLINK vxlan ${spec.name}`);
  }

  /**
   * `ip link add NAME [mtu M] [up] type geneve id VNI remote R dstport PORT`. Needs
   * CONFIG_GENEVE; without it the kernel answers EOPNOTSUPP ("Unknown device type").
   */
  createGeneve(spec: { name: string; vni: number; remote: string; port?: number; mtu?: number; up?: boolean }): void {
    const data: Buffer[] = [attrU32(IFLA_GENEVE_ID, spec.vni), attrIp(IFLA_GENEVE_REMOTE, spec.remote), attrU16be(IFLA_GENEVE_PORT, spec.port ?? 6081)];
    const attrs: Buffer[] = [attrString(IFLA_IFNAME, spec.name)];
    if (spec.mtu !== undefined) attrs.push(attrU32(IFLA_MTU, spec.mtu));
    attrs.push(attrNested(IFLA_LINKINFO, [attrString(IFLA_INFO_KIND, "geneve"), attrNested(IFLA_INFO_DATA, data)]));
    const up = spec.up ? IFF_UP : 0;
    this.sock.request(encodeMessage(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, [ifinfomsg(0, up, up), ...attrs]), `RTM_NEWLINK geneve ${spec.name}`);
  }

  /** `ip link add NAME type dummy` (needs CONFIG_DUMMY). */
  createDummy(spec: { name: string; up?: boolean }): void {
    const up = spec.up ? IFF_UP : 0;
    const attrs = [attrString(IFLA_IFNAME, spec.name), attrNested(IFLA_LINKINFO, [attrString(IFLA_INFO_KIND, "dummy")])];
    this.sock.request(encodeMessage(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, [ifinfomsg(0, up, up), ...attrs]), `RTM_NEWLINK dummy ${spec.name}`);
  }

  /** `ip link set dev INDEX [up|down] [mtu M] [address MAC]`, in one request. */
  setLink(index: number, change: LinkChange): void {
    const flags = change.up ? IFF_UP : 0;
    const mask = change.up === undefined ? 0 : IFF_UP;
    const attrs: Buffer[] = [];
    if (change.mtu !== undefined) attrs.push(attrU32(IFLA_MTU, change.mtu));
    if (change.mac !== undefined) attrs.push(attr(IFLA_ADDRESS, macToBytes(change.mac)));
    // Per-device IP settings through netlink rather than /proc/sys: a /proc/sys/net path
    // lookup walks one dentry per network namespace on the host, so it slows down as the
    // pool grows; this does not.
    const af: Buffer[] = [];
    if (change.ipv4Forwarding !== undefined) {
      const conf = Buffer.alloc(4);
      conf.writeUInt32LE(change.ipv4Forwarding ? 1 : 0);
      af.push(attrNested(AF_INET, [attrNested(IFLA_INET_CONF, [attr(IPV4_DEVCONF_FORWARDING, conf)])]));
    }
    if (change.ipv6LinkLocal === false) af.push(attrNested(AF_INET6, [attrU8(IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE)]));
    if (af.length > 0) {
      // The kernel applies IFLA_AF_SPEC after the flags: a device with carrier would get
      // its IPv6 link-local address on the way up. So the per-family settings go first.
      this.sock.request(encodeMessage(RTM_NEWLINK, 0, [ifinfomsg(index), attrNested(IFLA_AF_SPEC, af)]), `RTM_NEWLINK set ${index} af`);
    }
    if (attrs.length === 0 && mask === 0) return;
    this.sock.request(encodeMessage(RTM_NEWLINK, 0, [ifinfomsg(index, flags, mask), ...attrs]), `RTM_NEWLINK set ${index}`);
  }

  /** `ip link delete dev INDEX`; a missing device is success. */
  deleteLink(index: number): void {
    this.sock.request(encodeMessage(RTM_DELLINK, 0, [ifinfomsg(index)]), `RTM_DELLINK ${index}`, [libc.ENODEV]);
  }

  // ── addresses ──

  /** `ip addr add IP/LEN [peer PEER] dev INDEX` (`ip addr replace` with `replace`). */
  addAddress(index: number, ip: string, prefixLength: number, opts: { peer?: string; replace?: boolean } = {}): void {
    const family = ipFamily(ip);
    const msg = encodeMessage(RTM_NEWADDR, NLM_F_CREATE | (opts.replace ? NLM_F_REPLACE : NLM_F_EXCL), [
      ifaddrmsg(af(family), prefixLength, RT_SCOPE_UNIVERSE, index),
      attrIp(IFA_LOCAL, ip),
      attrIp(IFA_ADDRESS, opts.peer ?? ip),
    ]);
    this.sock.request(msg, `RTM_NEWADDR ${ip}/${prefixLength} dev ${index}`);
  }

  /** `ip addr del IP/LEN dev INDEX`; an address (or device) already gone is success. */
  deleteAddress(index: number, ip: string, prefixLength: number): void {
    const family = ipFamily(ip);
    const msg = encodeMessage(RTM_DELADDR, 0, [ifaddrmsg(af(family), prefixLength, 0, index), attrIp(IFA_LOCAL, ip)]);
    this.sock.request(msg, `RTM_DELADDR ${ip}/${prefixLength} dev ${index}`, [EADDRNOTAVAIL, libc.ENODEV]);
  }

  /** `ip addr show` (IPv4 and IPv6). */
  addresses(): Address[] {
    const msg = encodeMessage(RTM_GETADDR, 0, [ifaddrmsg(AF_UNSPEC, 0, 0, 0)]);
    const out: Address[] = [];
    for (const m of this.sock.dump(msg, "RTM_GETADDR dump")) {
      const family = fromAf(m.payload.readUInt8(0));
      if (family === undefined) continue;
      const a = new Attrs(m.payload, 8);
      const local = a.ip(IFA_LOCAL);
      const address = a.ip(IFA_ADDRESS);
      const entry: Address = {
        index: m.payload.readUInt32LE(4),
        family,
        address: local ?? address ?? "",
        prefixLength: m.payload.readUInt8(1),
        scope: m.payload.readUInt8(3),
        flags: a.u32(IFA_FLAGS) ?? m.payload.readUInt8(2),
      };
      if (local !== undefined && address !== undefined && local !== address) entry.peer = address;
      out.push(entry);
    }
    return out;
  }

  // ── routes ──

  /** `ip route add|replace DST [via GW] [dev OIF] [proto P] [table T] [scope S] [src SRC] [metric M]` */
  addRoute(spec: RouteSpec): void {
    this.sock.request(this.routeMessage(RTM_NEWROUTE, spec), `RTM_NEWROUTE ${spec.dst}`);
  }

  /** `ip route del DST [via GW] [dev OIF] [proto P] [table T]`; a missing route is success. */
  deleteRoute(spec: RouteSpec): void {
    this.sock.request(this.routeMessage(RTM_DELROUTE, spec), `RTM_DELROUTE ${spec.dst}`, [libc.ESRCH, libc.ENOENT]);
  }

  private routeMessage(type: number, spec: RouteSpec): Buffer {
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
  routes(family: 4 | 6, table?: number): Route[] {
    const parts = [rtmsg({ family: af(family), dstLen: 0, table: 0, protocol: 0, scope: 0, type: 0 })];
    if (table !== undefined) parts.push(attrU32(RTA_TABLE, table));
    let messages: NlMsg[];
    try {
      messages = this.sock.dump(encodeMessage(RTM_GETROUTE, 0, parts), "RTM_GETROUTE dump");
    } catch (err) {
      if (table !== undefined && isNetlinkErrno(err, libc.ENOENT)) return []; // no such table
      throw err;
    }
    const out: Route[] = [];
    for (const m of messages) {
      const r = parseRoute(m);
      if (r && (table === undefined || r.table === table)) out.push(r);
    }
    return out;
  }

  // ── policy rules ──

  /** `ip [-6] rule show` */
  rules(family: 4 | 6): RoutingRule[] {
    const msg = encodeMessage(RTM_GETRULE, 0, [familyHeader(af(family), 12)]);
    const out: RoutingRule[] = [];
    for (const m of this.sock.dump(msg, "RTM_GETRULE dump")) {
      const fam = fromAf(m.payload.readUInt8(0));
      if (fam === undefined) continue;
      const a = new Attrs(m.payload, 12);
      const rule: RoutingRule = {
        family: fam,
        priority: a.u32(FRA_PRIORITY) ?? 0,
        table: a.u32(FRA_TABLE) ?? m.payload.readUInt8(4),
        action: m.payload.readUInt8(7),
      };
      const dstLen = m.payload.readUInt8(1);
      const srcLen = m.payload.readUInt8(2);
      const src = a.ip(FRA_SRC);
      const dst = a.ip(FRA_DST);
      if (src !== undefined) rule.src = `${src}/${srcLen}`;
      if (dst !== undefined) rule.dst = `${dst}/${dstLen}`;
      const iif = a.str(FRA_IIFNAME);
      const oif = a.str(FRA_OIFNAME);
      if (iif !== undefined) rule.iifname = iif;
      if (oif !== undefined) rule.oifname = oif;
      const mark = a.u32(FRA_FWMARK);
      const mask = a.u32(FRA_FWMASK);
      if (mark !== undefined) rule.fwmark = mark;
      if (mask !== undefined) rule.fwmask = mask;
      out.push(rule);
    }
    return out;
  }

  /** `ip rule del priority P [from SRC] [to DST] [iif I] [oif O] [fwmark M/K] lookup T`; missing is success. */
  deleteRule(rule: RoutingRule): void {
    const h = Buffer.alloc(12);
    const src = rule.src ? parsePrefix(rule.src, rule.family) : undefined;
    const dst = rule.dst ? parsePrefix(rule.dst, rule.family) : undefined;
    h.writeUInt8(af(rule.family), 0);
    h.writeUInt8(dst?.len ?? 0, 1);
    h.writeUInt8(src?.len ?? 0, 2);
    h.writeUInt8(rule.table < 256 ? rule.table : 0, 4);
    h.writeUInt8(rule.action, 7);
    const attrs: Buffer[] = [attrU32(FRA_PRIORITY, rule.priority), attrU32(FRA_TABLE, rule.table)];
    if (src?.addr !== undefined) attrs.push(attrIp(FRA_SRC, src.addr));
    if (dst?.addr !== undefined) attrs.push(attrIp(FRA_DST, dst.addr));
    if (rule.iifname !== undefined) attrs.push(attrString(FRA_IIFNAME, rule.iifname));
    if (rule.oifname !== undefined) attrs.push(attrString(FRA_OIFNAME, rule.oifname));
    if (rule.fwmark !== undefined) attrs.push(attrU32(FRA_FWMARK, rule.fwmark));
    if (rule.fwmask !== undefined) attrs.push(attrU32(FRA_FWMASK, rule.fwmask));
    this.sock.request(encodeMessage(RTM_DELRULE, 0, [h, ...attrs]), `RTM_DELRULE priority ${rule.priority}`, [libc.ENOENT]);
  }

  // ── nexthops ──

  /** `ip nexthop show`; [] on kernels without nexthop objects. */
  nexthops(): Nexthop[] {
    let messages: NlMsg[];
    try {
      messages = this.sock.dump(encodeMessage(RTM_GETNEXTHOP, 0, [familyHeader(AF_UNSPEC, 8)]), "RTM_GETNEXTHOP dump");
    } catch (err) {
      if (isNetlinkErrno(err, EOPNOTSUPP, EAFNOSUPPORT)) return [];
      throw err;
    }
    const out: Nexthop[] = [];
    for (const m of messages) {
      const a = new Attrs(m.payload, 8);
      const fam = fromAf(m.payload.readUInt8(0)) ?? 0;
      const nh: Nexthop = {
        id: a.u32(NHA_ID) ?? 0,
        family: fam,
        protocol: m.payload.readUInt8(2),
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

  /** `ip nexthop del id ID`; a missing nexthop is success. */
  deleteNexthop(id: number): void {
    this.sock.request(encodeMessage(RTM_DELNEXTHOP, 0, [familyHeader(AF_UNSPEC, 8), attrU32(NHA_ID, id)]), `RTM_DELNEXTHOP ${id}`, [libc.ENOENT]);
  }

  // ── neighbours ──

  /** `ip [-4|-6] neigh show [dev INDEX]` */
  neighbours(family?: 4 | 6, index?: number): Neighbour[] {
    const parts = [ndmsg(family === undefined ? AF_UNSPEC : af(family))];
    if (index !== undefined) parts.push(attrU32(NDA_IFINDEX, index));
    const out: Neighbour[] = [];
    for (const m of this.sock.dump(encodeMessage(RTM_GETNEIGH, 0, parts), "RTM_GETNEIGH dump")) {
      const fam = fromAf(m.payload.readUInt8(0));
      if (fam === undefined || (family !== undefined && fam !== family)) continue;
      const a = new Attrs(m.payload, 12);
      const address = a.ip(NDA_DST);
      if (address === undefined) continue;
      const n: Neighbour = {
        family: fam,
        index: m.payload.readInt32LE(4),
        address,
        state: m.payload.readUInt16LE(8),
        flags: m.payload.readUInt8(10),
      };
      if (index !== undefined && n.index !== index) continue;
      const ll = a.get(NDA_LLADDR);
      if (ll !== undefined && ll.length > 0) n.mac = bytesToMac(ll);
      out.push(n);
    }
    return out;
  }

  /** `ip neigh del ADDRESS dev INDEX`; a missing entry is success. */
  deleteNeighbour(n: Pick<Neighbour, "family" | "index" | "address">): void {
    this.sock.request(this.neighbourDelete(n), `RTM_DELNEIGH ${n.address} dev ${n.index}`, [libc.ENOENT]);
  }

  /**
   * `ip neigh flush all [dev INDEX]`: deletes every entry except NUD_NOARP ones, permanent
   * entries included. The deletes go out batched, not one round trip each.
   */
  flushNeighbours(index?: number): void {
    const victims = this.neighbours(undefined, index).filter((n) => (n.state & NUD_NOARP) === 0);
    if (victims.length === 0) return;
    this.sock.requestBatch(victims.map((n) => this.neighbourDelete(n)), "RTM_DELNEIGH flush", [libc.ENOENT]);
  }

  private neighbourDelete(n: Pick<Neighbour, "family" | "index" | "address">): Buffer {
    return encodeMessage(RTM_DELNEIGH, 0, [ndmsg(af(n.family), n.index), attr(NDA_DST, ipToBytes(n.address))]);
  }

  // ── tc ──

  /** `tc qdisc add dev INDEX clsact`; an existing clsact is success. */
  addQdiscClsact(index: number): void {
    const msg = encodeMessage(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, [tcmsg(index, CLSACT_HANDLE, TC_H_CLSACT), attrString(TCA_KIND, "clsact")]);
    this.sock.request(msg, `RTM_NEWQDISC clsact dev ${index}`, [libc.EEXIST]);
  }

  /** `tc qdisc del dev INDEX clsact` (removes its filters too); a missing one is success. */
  deleteQdiscClsact(index: number): void {
    // Without clsact the kernel answers ENOENT, or EINVAL "Invalid handle" once the device
    // has had an ingress queue: both mean there is nothing to delete.
    const msg = encodeMessage(RTM_DELQDISC, 0, [tcmsg(index, CLSACT_HANDLE, TC_H_CLSACT), attrString(TCA_KIND, "clsact")]);
    this.sock.request(msg, `RTM_DELQDISC clsact dev ${index}`, [libc.ENOENT, libc.ENODEV, libc.EINVAL]);
  }

  /** `tc qdisc show` */
  qdiscs(): Qdisc[] {
    return this.sock.dump(encodeMessage(RTM_GETQDISC, 0, [tcmsg(0, 0, 0)]), "RTM_GETQDISC dump").map((m) => ({
      index: m.payload.readInt32LE(4),
      kind: new Attrs(m.payload, 20).str(TCA_KIND) ?? "",
      handle: m.payload.readUInt32LE(8),
      parent: m.payload.readUInt32LE(12),
    }));
  }

  /** `tc filter add dev INDEX ingress|egress [prio P] [handle H] protocol all bpf direct-action fd FD name NAME` */
  addBpfFilter(index: number, direction: TcDirection, progFd: number, name: string, opts: { priority?: number; handle?: number } = {}): void {
    this.bpfFilter(index, direction, progFd, name, opts, NLM_F_CREATE | NLM_F_EXCL);
  }

  /**
   * `tc filter replace dev INDEX ingress|egress prio P handle H protocol all bpf da fd FD name NAME`:
   * with the same priority and handle the new program takes over atomically.
   */
  replaceBpfFilter(index: number, direction: TcDirection, progFd: number, name: string, opts: { priority?: number; handle?: number } = {}): void {
    this.bpfFilter(index, direction, progFd, name, opts, NLM_F_CREATE | NLM_F_REPLACE);
  }

  private bpfFilter(index: number, direction: TcDirection, progFd: number, name: string, opts: { priority?: number; handle?: number }, flags: number): void {
    // Fixed defaults (prio 1, handle 1) so that a later replace finds the same filter.
    const priority = opts.priority ?? 1;
    const handle = opts.handle ?? 1;
    const info = ((priority << 16) | htons(ETH_P_ALL)) >>> 0;
    const msg = encodeMessage(RTM_NEWTFILTER, flags, [
      tcmsg(index, handle, tcParent(direction), info),
      attrString(TCA_KIND, "bpf"),
      attrNested(TCA_OPTIONS, [attrU32(TCA_BPF_FD, progFd), attrString(TCA_BPF_NAME, name), attrU32(TCA_BPF_FLAGS, TCA_BPF_FLAG_ACT_DIRECT)]),
    ]);
    this.sock.request(msg, `RTM_NEWTFILTER bpf ${name} dev ${index} ${direction}`);
  }

  /** `tc filter show dev INDEX ingress|egress` (the per-priority chain heads, handle 0, left out). */
  filters(index: number, direction: TcDirection): TcFilter[] {
    let messages: NlMsg[];
    try {
      messages = this.sock.dump(encodeMessage(RTM_GETTFILTER, 0, [tcmsg(index, 0, tcParent(direction))]), `RTM_GETTFILTER dump dev ${index}`);
    } catch (err) {
      if (isNetlinkErrno(err, libc.EINVAL, libc.ENOENT, libc.ENODEV)) return []; // no clsact / device
      throw err;
    }
    const out: TcFilter[] = [];
    for (const m of messages) {
      const handle = m.payload.readUInt32LE(8);
      if (handle === 0) continue;
      const info = m.payload.readUInt32LE(16);
      const a = new Attrs(m.payload, 20);
      const f: TcFilter = { kind: a.str(TCA_KIND) ?? "", priority: info >>> 16, protocol: htons(info & 0xffff), handle };
      const chain = a.u32(TCA_CHAIN);
      if (chain !== undefined) f.chain = chain;
      const o = a.nested(TCA_OPTIONS);
      if (f.kind === "bpf" && o) {
        const bpf: NonNullable<TcFilter["bpf"]> = { directAction: ((o.u32(TCA_BPF_FLAGS) ?? 0) & TCA_BPF_FLAG_ACT_DIRECT) !== 0 };
        const name = o.str(TCA_BPF_NAME);
        if (name !== undefined) bpf.name = name;
        const id = o.u32(TCA_BPF_ID);
        if (id !== undefined) bpf.id = id;
        const tag = o.get(TCA_BPF_TAG);
        if (tag !== undefined) bpf.tag = tag.toString("hex");
        f.bpf = bpf;
      }
      out.push(f);
    }
    return out;
  }

  /** `tc filter del dev INDEX ingress|egress`: every filter of that hook; none is success. */
  deleteFilters(index: number, direction: TcDirection): void {
    // EINVAL is the kernel's "Parent Qdisc doesn't exists": no clsact, so no filters.
    this.sock.request(encodeMessage(RTM_DELTFILTER, 0, [tcmsg(index, 0, tcParent(direction))]), `RTM_DELTFILTER dev ${index} ${direction}`, [
      libc.ENOENT,
      libc.EINVAL,
      libc.ENODEV,
    ]);
  }
}

// ───────────────────────────── parsers ─────────────────────────────

function parseLink(m: NlMsg): Link {
  const p = m.payload;
  const flags = p.readUInt32LE(8);
  const a = new Attrs(p, 16);
  const link: Link = {
    index: p.readInt32LE(4),
    name: a.str(IFLA_IFNAME) ?? "",
    mtu: a.u32(IFLA_MTU) ?? 0,
    flags,
    up: (flags & IFF_UP) !== 0,
    lowerUp: (flags & IFF_LOWER_UP) !== 0,
    operstate: OPERSTATES[a.u8(IFLA_OPERSTATE) ?? 0] ?? "UNKNOWN",
  };
  const mac = a.get(IFLA_ADDRESS);
  if (mac !== undefined && mac.length === 6) link.mac = bytesToMac(mac);
  const master = a.u32(IFLA_MASTER);
  if (master !== undefined) link.master = master;
  const qdisc = a.str(IFLA_QDISC);
  if (qdisc !== undefined) link.qdisc = qdisc;
  const lower = a.u32(IFLA_LINK);
  if (lower !== undefined) link.linkIndex = lower;
  const nsid = a.get(IFLA_LINK_NETNSID);
  if (nsid !== undefined) link.linkNetnsId = nsid.readInt32LE(0);
  const info = a.nested(IFLA_LINKINFO);
  const kind = info?.str(IFLA_INFO_KIND);
  if (kind !== undefined) link.kind = kind;
  if (kind === "vxlan") {
    const d = info?.nested(IFLA_INFO_DATA);
    if (d) {
      const vx: VxlanInfo = { vni: d.u32(IFLA_VXLAN_ID) ?? 0 };
      const remote = d.ip(IFLA_VXLAN_GROUP) ?? d.ip(IFLA_VXLAN_GROUP6);
      if (remote !== undefined) vx.remote = remote;
      const local = d.ip(IFLA_VXLAN_LOCAL) ?? d.ip(IFLA_VXLAN_LOCAL6);
      if (local !== undefined) vx.local = local;
      const port = d.u16be(IFLA_VXLAN_PORT);
      if (port !== undefined) vx.port = port;
      const lnk = d.u32(IFLA_VXLAN_LINK);
      if (lnk !== undefined) vx.link = lnk;
      const learning = d.u8(IFLA_VXLAN_LEARNING);
      if (learning !== undefined) vx.learning = learning !== 0;
      link.vxlan = vx;
    }
  }
  return link;
}

function parseRoute(m: NlMsg): Route | undefined {
  const p = m.payload;
  const family = fromAf(p.readUInt8(0));
  if (family === undefined) return undefined;
  if (p.readUInt32LE(8) & RTM_F_CLONED) return undefined;
  const a = new Attrs(p, 12);
  const r: Route = {
    family,
    dst: formatPrefix(a.ip(RTA_DST), p.readUInt8(1)),
    protocol: p.readUInt8(5),
    type: p.readUInt8(7),
    scope: p.readUInt8(6),
    table: a.u32(RTA_TABLE) ?? p.readUInt8(4),
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
