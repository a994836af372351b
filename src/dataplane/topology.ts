// The slot topology as data: names and addresses derived from the slot index. Pure code,
// no kernel access; docs/architecture.md draws the picture.
import { bigIntToIp6, bytesToMac, cidrsOverlap, formatCidr, formatCidr6, intToIp, ipToInt, macToBytes, parseCidr, type Cidr, type Cidr6 } from "../core/addr.js";

// The CIDR codecs live in core/addr.ts (pure, every layer uses them); re-exported for the data plane's users.
export { cidrContains, cidrsOverlap, cidrs6Overlap, formatCidr, formatCidr6, parseCidr, parseCidr6, parseCidr6Loose, type Cidr, type Cidr6 } from "../core/addr.js";

export { bytesToMac, intToIp, ipToInt, macToBytes };

export const GUEST_IP = "169.254.0.21";
export const GATEWAY_IP = "169.254.0.22";
export const GUEST_PREFIX_LENGTH = 30;
export const GUEST_MAC = "02:00:a9:fe:00:15";
/** The tap's own MAC is the gateway MAC the guest caches: fixed, so clones resume anywhere. */
export const TAP_MAC = "02:00:a9:fe:00:16";
export const TAP_NAME = "tap0";
export const SLOT_UPLINK_NAME = "eth0";
/**
 * eth0's ifindex is chosen at creation, ETH0_IFINDEX_BASE + slot index: distinct per slot
 * (kernel-picked ones repeat in every namespace) and not changeable from inside the slot,
 * so the eBPF NAT proves a frame's slot by it rather than by the MAC a tenant can set.
 * Above the few devices a fresh namespace holds (lo, tap0, vx0).
 */
export const ETH0_IFINDEX_BASE = 0x10000;
export const VXLAN_NAME = "vx0";
/** VNI every slot's VXLAN device is created with; eBPF rewrites it to the lease's VNI. */
export const DUMMY_VNI = 0;
export const VXLAN_OVERHEAD = 50;
export const METADATA_IP = "169.254.169.254";

// IPv6 (a lease whose profile has `ipv6: true`, on a daemon with --link-cidr6): like the
// IPv4 guest link, the same in every slot; the eBPF NAT maps GUEST_IP6 1:1 to the slot's
// outside IPv6 address. The gateway is tap0's link-local address: the kernel sends its
// neighbour solicitations from a link-local address, so tap0 needs one anyway, and a
// fixed one (rather than one derived when a VMM first brings the carrier up) keeps a used
// slot identical to a fresh one.
export const GUEST_IP6 = "fd00:a9fe::21";
export const GUEST_PREFIX_LENGTH6 = 64;
export const GATEWAY_IP6 = "fe80::1";
/** The guest's on-link IPv6 network (tap0's route to the guest). */
export const GUEST_NETWORK6 = "fd00:a9fe::/64";
/** Link-local next hops of the IPv6 routes across the veth pair: the host end, eth0. */
export const HOST_LINK_IP6 = "fe80::1";
export const SLOT_LINK_IP6 = "fe80::2";
/** The IPv6 metadata address of some clouds (EC2's IMDS): kept from guests like METADATA_IP. */
export const METADATA_IP6 = "fd00:ec2::254";
/** rtm_protocol on the routes netslot adds in the root namespace (unassigned in rt_protos). */
export const NETSLOT_RTPROT = 222;
/** Name of the nftables tables netslot creates inside each slot namespace. */
export const SLOT_TABLE = "netslot";

export const PREFIX_PATTERN = /^[a-z][a-z0-9]{0,7}$/;

export function assertPrefix(prefix: string): void {
  if (!PREFIX_PATTERN.test(prefix)) {
    throw new Error(`prefix "${prefix}" must be 1-8 characters of [a-z0-9], starting with a letter`);
  }
}

/**
 * Why a tenant network's CIDR cannot be routed into vx0 in a slot, or undefined when it
 * can: its route would take over (or shadow part of) what the slot itself routes, the
 * default route, the guest link, the link CIDR (eth0 and the host side), the metadata
 * address (which the firewall keeps from the guest), or the VTEP the tunnel runs to.
 */
export function tenantCidrConflict(cidrText: string, linkCidr: Cidr, vtepRemote?: string): string | undefined {
  const cidr = parseCidr(cidrText);
  if (cidr.prefixLength === 0) return `${cidrText} is the default route, which stays the slot's own (via eth0)`;
  const reserved: Array<[string, Cidr]> = [
    ["the guest link", parseCidr(`${intToIp((ipToInt(GUEST_IP) & ~3) >>> 0)}/${GUEST_PREFIX_LENGTH}`)],
    [`the link CIDR ${formatCidr(linkCidr)}`, linkCidr],
    [`the metadata address ${METADATA_IP}`, parseCidr(`${METADATA_IP}/32`)],
    ...(vtepRemote !== undefined ? ([[`the VTEP ${vtepRemote}`, parseCidr(`${vtepRemote}/32`)]] as Array<[string, Cidr]>) : []),
  ];
  for (const [what, range] of reserved) {
    if (cidrsOverlap(cidr, range)) return `${cidrText} overlaps ${what}`;
  }
  return undefined;
}

/** Slots an IPv6 link CIDR can hold: every address but the network's own (the subnet-router anycast). */
export function maxSlots6(cidr: Cidr6): number {
  const n = cidr.size - 1n;
  return n > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(n);
}

/** Slot `index`'s outside IPv6 address: base + 1 + index (as the IPv4 one, one address per slot). */
export function outsideAddress6(cidr: Cidr6, index: number): string {
  if (!Number.isInteger(index) || index < 0 || index >= maxSlots6(cidr)) {
    throw new Error(`slot index ${index} does not fit in ${formatCidr6(cidr)}`);
  }
  return bigIntToIp6(cidr.base + 1n + BigInt(index));
}

/** Slots a link CIDR can hold: a /31 link network each in the lower half, an outside /32 in the upper. */
export function maxSlots(linkCidr: Cidr): number {
  return Math.floor(linkCidr.size / 4);
}

export interface SlotAddressing {
  index: number;
  /** Namespace name, also the host-side veth name. */
  name: string;
  netnsPath: string;
  hostVeth: string;
  hostAddress: string;
  slotAddress: string;
  /** The /31 link network, "a.b.c.d/31". */
  linkNetwork: string;
  outsideAddress: string;
  /** eth0's MAC inside the slot; the eBPF NAT map is keyed by it. */
  slotMac: string;
  /** eth0's ifindex inside the slot (ETH0_IFINDEX_BASE + index); the NAT entry is bound to it. */
  slotIfindex: number;
  /** vx0's MAC: fixed per slot so that a change to it shows in the fingerprint. */
  vxlanMac: string;
}

/** Where a daemon's eBPF programs and maps are pinned. */
export function bpfPinDir(prefix: string): string {
  return `/sys/fs/bpf/netslot/${prefix}`;
}

export function slotName(prefix: string, index: number): string {
  return `${prefix}-${index}`;
}

export function slotAddressing(prefix: string, linkCidr: Cidr, index: number): SlotAddressing {
  if (!Number.isInteger(index) || index < 0 || index >= maxSlots(linkCidr)) {
    throw new Error(`slot index ${index} does not fit in ${formatCidr(linkCidr)}`);
  }
  const name = slotName(prefix, index);
  const link = linkCidr.base + 2 * index;
  return {
    index,
    name,
    netnsPath: `/run/netns/${name}`,
    hostVeth: name,
    hostAddress: intToIp(link),
    slotAddress: intToIp(link + 1),
    linkNetwork: `${intToIp(link)}/31`,
    outsideAddress: intToIp(linkCidr.base + linkCidr.size / 2 + index),
    slotMac: slotMacFor(index),
    slotIfindex: ETH0_IFINDEX_BASE + index,
    vxlanMac: slotMacFor(index, 0x76),
  };
}

/** The upper half of the link CIDR, where outside addresses live. */
export function outsideRange(linkCidr: Cidr): string {
  return `${intToIp(linkCidr.base + linkCidr.size / 2)}/${linkCidr.prefixLength + 1}`;
}

/** The lower half, where the /31 link networks live. */
export function linkRange(linkCidr: Cidr): string {
  return `${intToIp(linkCidr.base)}/${linkCidr.prefixLength + 1}`;
}

export function slotMacFor(index: number, kind = 0x6e): string {
  const hex = (n: number) => n.toString(16).padStart(2, "0");
  return `02:${hex(kind)}:00:${hex((index >>> 16) & 255)}:${hex((index >>> 8) & 255)}:${hex(index & 255)}`;
}

/** Parses a slot name back to its index, or undefined when it is not one of this prefix's. */
export function parseSlotName(prefix: string, name: string): number | undefined {
  if (!name.startsWith(`${prefix}-`)) return undefined;
  const rest = name.slice(prefix.length + 1);
  if (!/^(0|[1-9]\d{0,5})$/.test(rest)) return undefined;
  return Number(rest);
}

/** The guest's MTU: tap0's, and through a tenant tunnel no more than the uplink's less VXLAN's overhead. */
export function guestMtu(uplinkMtu: number, withTunnel: boolean, tapMtu = uplinkMtu): number {
  return withTunnel ? Math.min(tapMtu, uplinkMtu - VXLAN_OVERHEAD) : tapMtu;
}

/**
 * A UDP frame from the gateway to the guest (port 9, discard), for the fingerprint's
 * check that tap0 delivers what is addressed to the guest.
 */
export function tapProbeFrame(): Buffer {
  const payload = Buffer.from("netslot tap probe");
  const ip = Buffer.alloc(20);
  ip.writeUInt8(0x45, 0);
  ip.writeUInt16BE(20 + 8 + payload.length, 2);
  ip.writeUInt8(64, 8);
  ip.writeUInt8(17, 9);
  ip.writeUInt32BE(ipToInt(GATEWAY_IP), 12);
  ip.writeUInt32BE(ipToInt(GUEST_IP), 16);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += ip.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  ip.writeUInt16BE(~sum & 0xffff, 10);
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(9, 0);
  udp.writeUInt16BE(9, 2);
  udp.writeUInt16BE(8 + payload.length, 4);
  const eth = Buffer.concat([Buffer.from(macToBytes(GUEST_MAC)), Buffer.from(macToBytes(TAP_MAC)), Buffer.from([0x08, 0x00])]);
  return Buffer.concat([eth, ip, udp, payload]);
}

/** The `ip=` kernel argument: ip=<client>::<gw>:<netmask>::<device>:off */
export function kernelIpArg(): string {
  return `ip=${GUEST_IP}::${GATEWAY_IP}:255.255.255.252::eth0:off`;
}

/**
 * cloud-init network config (version 2) for a guest with IPv6: both families on the
 * interface with the guest's MAC (a network config replaces the whole configuration).
 * The IPv6 default route is on-link via tap0's link-local address.
 */
export function guestNetworkConfig6(): string {
  return [
    "version: 2",
    "ethernets:",
    "  eth0:",
    "    match:",
    `      macaddress: "${GUEST_MAC}"`,
    "    addresses:",
    `      - ${GUEST_IP}/${GUEST_PREFIX_LENGTH}`,
    `      - "${GUEST_IP6}/${GUEST_PREFIX_LENGTH6}"`,
    "    routes:",
    `      - { to: 0.0.0.0/0, via: ${GATEWAY_IP} }`,
    `      - { to: "::/0", via: "${GATEWAY_IP6}", on-link: true }`,
    "",
  ].join("\n");
}
