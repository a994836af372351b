// The TypeScript mirror of bpf/lib/consts.h and bpf/lib/maps.h: names, verdicts, drop
// codes and the byte layouts of the `slots` and `config` maps. Pure code, no kernel
// access; change it together with the C headers (the integration test loads the real
// object and checks the map sizes against these).
import * as os from "node:os";
import { bytesToIp6, bytesToMac, intToIp, ip6ToBytes, ipToInt, macToBytes } from "../core/addr.js";

/** Program and map names inside bpf/nat.o, also the file names under the pin directory. */
export const PROG_EGRESS = "nat_egress";
export const PROG_INGRESS = "nat_ingress";
export const MAP_SLOTS = "slots";
export const MAP_CONFIG = "config";
export const MAP_RATES = "rates";
export const MAP_UNATTRIBUTED = "unattributed";
export const MAP_POLICY_CIDRS = "policy_cidrs";
export const MAP_POLICIES = "policies";
/** bpf/lib/nat6.h: eth0 ifindex → a lease's IPv6 translation. */
export const MAP_SLOTS6 = "slots6";

/** NETSLOT_MAX_SLOTS: entries of the `slots` hash map. */
export const MAX_SLOTS = 65536;
export const DEFAULT_VXLAN_PORT = 4789;
/** The VNI field is 24 bits. */
export const MAX_VNI = 0xffffff;

/** tc direct-action verdicts the programs return (linux/pkt_cls.h). */
export const TC_ACT_OK = 0;
export const TC_ACT_SHOT = 2;

/** enum netslot_drop: why a frame was dropped, left in skb->cb[0] with TC_ACT_SHOT. */
export const DropReason = {
  none: 0,
  /** VXLAN on a slot whose lease has no tenant network (vni 0). */
  noTenantNetwork: 1,
  /** Inbound VXLAN whose VNI is not the lease's. */
  vniMismatch: 2,
  /** Outbound VXLAN whose VNI is not the dummy VNI. */
  vniNotDummy: 3,
  /** UDP to the VXLAN port without a complete VXLAN header. */
  vxlanTruncated: 4,
  /** A rewrite helper failed half-way: the frame is dropped rather than leak. */
  rewriteFailed: 5,
  /** Over the lease's bandwidth (the `rates` token bucket). */
  rate: 6,
  /** IPv4 on eth0 that no slot owns: unknown MAC, or another slot's MAC (counted in `unattributed`). */
  unattributed: 7,
  /** The guest's destination is not allowed by its lease's egress policy (bpf/lib/policy.h). */
  policy: 8,
  /** IPv6 on an eth0 whose lease has no IPv6 (no `slots6` entry). */
  ipv6Off: 9,
  /** IPv6 the translation does not carry (foreign source out, foreign destination in, extension headers). */
  ipv6Refused: 10,
} as const;
export type DropReasonName = keyof typeof DropReason;

export const SLOT_KEY_SIZE = 8;
export const SLOT_VALUE_SIZE = 12;
export const CONFIG_KEY_SIZE = 4;
export const CONFIG_VALUE_SIZE = 12;
export const RATE_KEY_SIZE = 4;
export const RATE_VALUE_SIZE = 72;
export const POLICY_CIDR_KEY_SIZE = 12;
export const POLICY_CIDR_VALUE_SIZE = 4;
export const POLICY_KEY_SIZE = 4;
export const POLICY_VALUE_SIZE = 12;
/** NETSLOT_MAX_POLICY_CIDRS: entries of the shared trie, all profiles together. */
export const MAX_POLICY_CIDRS = 262144;
/** NETSLOT_ADMITTED_MARK: the skb mark of the guest's frames to addresses DNS admitted. */
export const ADMITTED_MARK = 0x6e730001;
/** policy_cidrs values. */
export const POLICY_ALLOW = 1;
export const POLICY_DENY = 2;
/** slot_policy flags. */
export const POLICY_RESTRICTED = 1;

/** One direction of a lease's bandwidth: bytes per second (IP bytes) and the bucket size. */
export interface RateBucket {
  bytesPerSecond: number;
  burstBytes: number;
}

/** A `rates` entry as the daemon writes it; an absent direction is unlimited. */
export interface SlotRate {
  egress?: RateBucket;
  ingress?: RateBucket;
}

export const SLOT6_KEY_SIZE = 4;
export const SLOT6_VALUE_SIZE = 40;

/** A lease's IPv6 translation (struct slot6_value, bpf/lib/nat6.h). */
export interface SlotNat6 {
  outsideAddress6: string;
  guestAddress6: string;
  /** The slot's outside IPv4 address: the `rates` key, so one bandwidth covers both families. */
  outsideAddress: string;
}

/** __u32 ifindex, host order: the `slots6` key. */
export function encodeSlot6Key(ifindex: number): Buffer {
  const key = Buffer.alloc(SLOT6_KEY_SIZE);
  writeHostU32(key, ifindex, 0);
  return key;
}

/** struct slot6_value { __u8 outside[16]; __u8 guest[16]; __be32 outside4; __u32 pad; } */
export function encodeSlot6Value(v: SlotNat6): Buffer {
  const value = Buffer.alloc(SLOT6_VALUE_SIZE);
  ip6ToBytes(v.outsideAddress6).copy(value, 0);
  ip6ToBytes(v.guestAddress6).copy(value, 16);
  value.writeUInt32BE(ipToInt(v.outsideAddress), 32);
  return value;
}

export function decodeSlot6Value(value: Buffer): SlotNat6 {
  return { outsideAddress6: bytesToIp6(value.subarray(0, 16)), guestAddress6: bytesToIp6(value.subarray(16, 32)), outsideAddress: intToIp(value.readUInt32BE(32)) };
}

/** What the programs need to know about one slot. */
export interface SlotNat {
  outsideAddress: string;
  /** The lease's tenant VNI; 0 when the lease has no tenant network (VXLAN is dropped). */
  vni: number;
  /**
   * eth0's ifindex inside the slot (slot_value.ifindex): the programs pass only frames seen
   * on that device, so a MAC a tenant copies from another slot is worth nothing.
   */
  ifindex: number;
}

export interface SlotNatEntry extends SlotNat {
  /** eth0's MAC inside the slot, lower case "02:6e:…". */
  mac: string;
}

/** The `config` map's single entry. */
export interface NatConfig {
  guestAddress: string;
  vxlanPort: number;
  dummyVni: number;
}

// __u32/__u16 fields are host order; __be32 addresses network order.
const littleEndian = os.endianness() === "LE";

function writeHostU32(buf: Buffer, value: number, offset: number): void {
  if (littleEndian) buf.writeUInt32LE(value, offset);
  else buf.writeUInt32BE(value, offset);
}

function readHostU32(buf: Buffer, offset: number): number {
  return littleEndian ? buf.readUInt32LE(offset) : buf.readUInt32BE(offset);
}

function writeHostU16(buf: Buffer, value: number, offset: number): void {
  if (littleEndian) buf.writeUInt16LE(value, offset);
  else buf.writeUInt16BE(value, offset);
}

function readHostU16(buf: Buffer, offset: number): number {
  return littleEndian ? buf.readUInt16LE(offset) : buf.readUInt16BE(offset);
}

/** __be32 outside address: the `rates` key. */
export function encodeRateKey(outsideAddress: string): Buffer {
  const key = Buffer.alloc(RATE_KEY_SIZE);
  key.writeUInt32BE(ipToInt(outsideAddress), 0);
  return key;
}

/**
 * struct rate_value { bpf_spin_lock lock; __u32 pad; rate_bucket egress, ingress; } with
 * rate_bucket { __u64 rate, burst, tokens, last_ns; }: a full bucket, never refilled yet.
 */
export function encodeRateValue(rate: SlotRate): Buffer {
  const value = Buffer.alloc(RATE_VALUE_SIZE);
  const put = (b: RateBucket | undefined, offset: number) => {
    if (!b) return;
    for (const [name, v] of [["rate", b.bytesPerSecond], ["burst", b.burstBytes]] as const) {
      if (!Number.isSafeInteger(v) || v < 1) throw new Error(`bandwidth ${name} must be a positive whole number of bytes, not ${v}`);
    }
    const w = (v: number, at: number) => (littleEndian ? value.writeBigUInt64LE(BigInt(v), at) : value.writeBigUInt64BE(BigInt(v), at));
    w(b.bytesPerSecond, offset);
    w(b.burstBytes, offset + 8);
    w(b.burstBytes, offset + 16);
  };
  put(rate.egress, 8);
  put(rate.ingress, 40);
  return value;
}

/** The configured part of a `rates` entry (rate and burst; the live tokens are not configuration). */
export function decodeRateValue(value: Buffer): SlotRate {
  const r = (at: number) => Number(littleEndian ? value.readBigUInt64LE(at) : value.readBigUInt64BE(at));
  const get = (offset: number): RateBucket | undefined => (r(offset) === 0 ? undefined : { bytesPerSecond: r(offset), burstBytes: r(offset + 8) });
  const egress = get(8);
  const ingress = get(40);
  return { ...(egress ? { egress } : {}), ...(ingress ? { ingress } : {}) };
}

export function assertVni(vni: number): void {
  if (!Number.isInteger(vni) || vni < 0 || vni > MAX_VNI) throw new Error(`VNI out of range 0-${MAX_VNI}: ${vni}`);
}

/** struct slot_key { __u8 mac[6]; __u16 pad; } */
export function encodeSlotKey(mac: string): Buffer {
  const key = Buffer.alloc(SLOT_KEY_SIZE);
  macToBytes(mac).copy(key, 0);
  return key;
}

export function decodeSlotKey(key: Buffer): string {
  return bytesToMac(key);
}

/** struct slot_value { __be32 outside_addr; __u32 vni; __u32 ifindex; } */
export function encodeSlotValue(slot: SlotNat): Buffer {
  assertVni(slot.vni);
  const value = Buffer.alloc(SLOT_VALUE_SIZE);
  value.writeUInt32BE(ipToInt(slot.outsideAddress), 0);
  writeHostU32(value, slot.vni, 4);
  writeHostU32(value, slot.ifindex, 8);
  return value;
}

export function decodeSlotValue(value: Buffer): SlotNat {
  return { outsideAddress: intToIp(value.readUInt32BE(0)), vni: readHostU32(value, 4), ifindex: readHostU32(value, 8) };
}

/** struct nat_config { __be32 guest_addr; __u16 vxlan_port; __u16 pad; __u32 dummy_vni; } */
export function encodeConfig(cfg: NatConfig): Buffer {
  if (!Number.isInteger(cfg.vxlanPort) || cfg.vxlanPort < 1 || cfg.vxlanPort > 65535) {
    throw new Error(`VXLAN port out of range: ${cfg.vxlanPort}`);
  }
  assertVni(cfg.dummyVni);
  const value = Buffer.alloc(CONFIG_VALUE_SIZE);
  value.writeUInt32BE(ipToInt(cfg.guestAddress), 0);
  writeHostU16(value, cfg.vxlanPort, 4);
  writeHostU32(value, cfg.dummyVni, 8);
  return value;
}

export function decodeConfig(value: Buffer): NatConfig {
  return {
    guestAddress: intToIp(value.readUInt32BE(0)),
    vxlanPort: readHostU16(value, 4),
    dummyVni: readHostU32(value, 8),
  };
}

/** One entry of the shared `policy_cidrs` trie: a profile's CIDR and its verdict. */
export interface PolicyCidr {
  profile: number;
  /** The CIDR's first address as an unsigned 32-bit integer. */
  base: number;
  prefixLength: number;
  deny: boolean;
}

/** A slot's `policies` entry: which profile's CIDRs judge its guest, and how. */
export interface SlotPolicy {
  profile: number;
  /** The slot's host link address (guest.dns): always reachable. */
  hostAddress: string;
  /** Only allowed (or DNS-admitted) destinations; else everything but denied ones. */
  restricted: boolean;
}

/** struct policy_cidr_key { __u32 prefixlen; __u32 profile (network order); __be32 addr; } */
export function encodePolicyCidrKey(c: Pick<PolicyCidr, "profile" | "base" | "prefixLength">): Buffer {
  const key = Buffer.alloc(POLICY_CIDR_KEY_SIZE);
  writeHostU32(key, 32 + c.prefixLength, 0);
  key.writeUInt32BE(c.profile >>> 0, 4);
  key.writeUInt32BE(c.base >>> 0, 8);
  return key;
}

export function decodePolicyCidrKey(key: Buffer): Pick<PolicyCidr, "profile" | "base" | "prefixLength"> {
  return { prefixLength: readHostU32(key, 0) - 32, profile: key.readUInt32BE(4), base: key.readUInt32BE(8) };
}

export function encodePolicyCidrValue(deny: boolean): Buffer {
  const value = Buffer.alloc(POLICY_CIDR_VALUE_SIZE);
  writeHostU32(value, deny ? POLICY_DENY : POLICY_ALLOW, 0);
  return value;
}

export function decodePolicyCidrValue(value: Buffer): boolean {
  return readHostU32(value, 0) === POLICY_DENY;
}

/** struct slot_policy { __u32 profile; __be32 host_addr; __u32 flags; } */
export function encodeSlotPolicy(p: SlotPolicy): Buffer {
  const value = Buffer.alloc(POLICY_VALUE_SIZE);
  writeHostU32(value, p.profile >>> 0, 0);
  value.writeUInt32BE(ipToInt(p.hostAddress), 4);
  writeHostU32(value, p.restricted ? POLICY_RESTRICTED : 0, 8);
  return value;
}

export function decodeSlotPolicy(value: Buffer): SlotPolicy {
  return {
    profile: readHostU32(value, 0),
    hostAddress: intToIp(value.readUInt32BE(4)),
    restricted: (readHostU32(value, 8) & POLICY_RESTRICTED) !== 0,
  };
}
