// Links: `ip link` (veth, vxlan, geneve, dummy; set, delete, show).
import * as libc from "../../libc.js";
import { NLM_F_CREATE, NLM_F_EXCL, attr, attrIp, attrNested, attrString, attrU16be, attrU32, attrU8, bytesToMac, encodeMessage, ipFamily, macToBytes } from "../codec.js";
import { isNetlinkErrno, type NetlinkSocket } from "../socket.js";
import { AF_INET, AF_INET6, RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK, IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_QDISC, IFLA_MASTER, IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_NET_NS_FD, IFLA_NUM_TX_QUEUES, IFLA_NUM_RX_QUEUES, IFLA_AF_SPEC, IFLA_INET_CONF, IFLA_INET6_ADDR_GEN_MODE, IPV4_DEVCONF_FORWARDING, IN6_ADDR_GEN_MODE_NONE, IFLA_EXT_MASK, IFLA_LINK_NETNSID, IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER, RTEXT_FILTER_SKIP_STATS, IFLA_VXLAN_ID, IFLA_VXLAN_GROUP, IFLA_VXLAN_LINK, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING, IFLA_VXLAN_PORT, IFLA_VXLAN_GROUP6, IFLA_VXLAN_LOCAL6, IFLA_GENEVE_ID, IFLA_GENEVE_REMOTE, IFLA_GENEVE_PORT, IFF_UP, IFF_LOWER_UP } from "./consts.js";
import { ifinfomsg, decodeIfinfomsg, type IfInfoMsg } from "./headers.js";

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
  /** This end's ifindex (ifinfomsg.ifi_index); the kernel picks one when absent. */
  index?: number;
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
  /**
   * TX and RX queues of each end; the kernel's default for a veth is one per possible
   * CPU, each with its own sysfs directory and per-queue state.
   */
  queues?: number;
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

/** `ip -d link show` */
export function links(sock: NetlinkSocket): Link[] {
  return dumpLinks(sock).map(parseLink);
}

/** Every link of the namespace, decoded (statistics left out). */
export function dumpLinks(sock: NetlinkSocket): IfInfoMsg[] {
  const msg = encodeMessage(RTM_GETLINK, 0, [ifinfomsg(), attrU32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)]);
  return sock.dump(msg, "RTM_GETLINK dump").map(decodeIfinfomsg);
}

/** `ip -d link show dev NAME`; undefined when there is no such device. */
export function linkByName(sock: NetlinkSocket, name: string): Link | undefined {
  const msg = encodeMessage(RTM_GETLINK, 0, [ifinfomsg(), attrString(IFLA_IFNAME, name), attrU32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)]);
  try {
    const replies = sock.query(msg, `RTM_GETLINK ${name}`);
    return replies.length > 0 ? parseLink(decodeIfinfomsg(replies[0]!)) : undefined;
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
export function createVeth(sock: NetlinkSocket, spec: VethSpec): void {
  const local: VethEnd = { name: spec.name, mac: spec.mac, mtu: spec.mtu, up: spec.up ?? false, queues: spec.queues };
  const remote: VethEnd = { name: spec.peerName, mac: spec.peerMac, mtu: spec.peerMtu ?? spec.mtu, up: spec.peerUp ?? false, netnsFd: spec.peerNetnsFd, queues: spec.queues };
  const swap = remote.up && remote.netnsFd !== undefined;
  const primary = swap ? remote : local;
  const secondary = swap ? local : remote;
  const operation = `RTM_NEWLINK veth ${spec.name} peer ${spec.peerName}`;
  const peerIndex = swap ? (spec.index ?? 0) : 0;
  const peerInfo = attr(VETH_INFO_PEER, Buffer.concat([ifinfomsg(peerIndex), ...vethEndAttrs(secondary)]));
  const up = primary.up ? IFF_UP : 0;
  const linkinfo = attrNested(IFLA_LINKINFO, [attrString(IFLA_INFO_KIND, "veth"), attrNested(IFLA_INFO_DATA, [peerInfo])]);
  sock.request(encodeMessage(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, [ifinfomsg(swap ? 0 : (spec.index ?? 0), up, up), ...vethEndAttrs(primary), linkinfo]), operation);
  if (!secondary.up) return;
  // The secondary end is in this namespace whenever it has to come up here.
  try {
    sock.request(encodeMessage(RTM_SETLINK, 0, [ifinfomsg(0, IFF_UP, IFF_UP), attrString(IFLA_IFNAME, secondary.name)]), `RTM_SETLINK ${secondary.name} up`);
  } catch (err) {
    deleteLinkByName(sock, local.name);
    throw err;
  }
}

function deleteLinkByName(sock: NetlinkSocket, name: string): void {
  sock.request(encodeMessage(RTM_DELLINK, 0, [ifinfomsg(), attrString(IFLA_IFNAME, name)]), `RTM_DELLINK ${name}`, [libc.ENODEV]);
}

/**
 * `ip link add NAME [mtu M] [up] type vxlan id VNI remote R [local L] dstport PORT
 * [dev LINK] [no]learning`
 */
export function createVxlan(sock: NetlinkSocket, spec: VxlanSpec): void {
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
  sock.request(encodeMessage(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, [ifinfomsg(0, up, up), ...attrs]), `RTM_NEWLINK vxlan ${spec.name}`);
}

/**
 * `ip link add NAME [mtu M] [up] type geneve id VNI remote R dstport PORT`. Needs
 * CONFIG_GENEVE; without it the kernel answers EOPNOTSUPP ("Unknown device type").
 */
export function createGeneve(sock: NetlinkSocket, spec: { name: string; vni: number; remote: string; port?: number; mtu?: number; up?: boolean }): void {
  const data: Buffer[] = [attrU32(IFLA_GENEVE_ID, spec.vni), attrIp(IFLA_GENEVE_REMOTE, spec.remote), attrU16be(IFLA_GENEVE_PORT, spec.port ?? 6081)];
  const attrs: Buffer[] = [attrString(IFLA_IFNAME, spec.name)];
  if (spec.mtu !== undefined) attrs.push(attrU32(IFLA_MTU, spec.mtu));
  attrs.push(attrNested(IFLA_LINKINFO, [attrString(IFLA_INFO_KIND, "geneve"), attrNested(IFLA_INFO_DATA, data)]));
  const up = spec.up ? IFF_UP : 0;
  sock.request(encodeMessage(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, [ifinfomsg(0, up, up), ...attrs]), `RTM_NEWLINK geneve ${spec.name}`);
}

/** `ip link add NAME type dummy` (needs CONFIG_DUMMY). */
export function createDummy(sock: NetlinkSocket, spec: { name: string; up?: boolean }): void {
  const up = spec.up ? IFF_UP : 0;
  const attrs = [attrString(IFLA_IFNAME, spec.name), attrNested(IFLA_LINKINFO, [attrString(IFLA_INFO_KIND, "dummy")])];
  sock.request(encodeMessage(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, [ifinfomsg(0, up, up), ...attrs]), `RTM_NEWLINK dummy ${spec.name}`);
}

/** `ip link set dev INDEX [up|down] [mtu M] [address MAC]`, in one request. */
export function setLink(sock: NetlinkSocket, index: number, change: LinkChange): void {
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
    sock.request(encodeMessage(RTM_NEWLINK, 0, [ifinfomsg(index), attrNested(IFLA_AF_SPEC, af)]), `RTM_NEWLINK set ${index} af`);
  }
  if (attrs.length === 0 && mask === 0) return;
  sock.request(encodeMessage(RTM_NEWLINK, 0, [ifinfomsg(index, flags, mask), ...attrs]), `RTM_NEWLINK set ${index}`);
}

/** `ip link delete dev INDEX`; a missing device is success. */
export function deleteLink(sock: NetlinkSocket, index: number): void {
  sock.request(encodeMessage(RTM_DELLINK, 0, [ifinfomsg(index)]), `RTM_DELLINK ${index}`, [libc.ENODEV]);
}

interface VethEnd {
  name: string;
  mac: string | undefined;
  mtu: number | undefined;
  up: boolean;
  netnsFd?: number | undefined;
  queues?: number | undefined;
}

function vethEndAttrs(end: VethEnd): Buffer[] {
  const attrs: Buffer[] = [attrString(IFLA_IFNAME, end.name)];
  if (end.mac) attrs.push(attr(IFLA_ADDRESS, macToBytes(end.mac)));
  if (end.mtu !== undefined) attrs.push(attrU32(IFLA_MTU, end.mtu));
  if (end.queues !== undefined) attrs.push(attrU32(IFLA_NUM_TX_QUEUES, end.queues), attrU32(IFLA_NUM_RX_QUEUES, end.queues));
  if (end.netnsFd !== undefined) attrs.push(attrU32(IFLA_NET_NS_FD, end.netnsFd));
  return attrs;
}

function parseLink(m: IfInfoMsg): Link {
  const { flags, attrs: a } = m;
  const link: Link = {
    index: m.index,
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
