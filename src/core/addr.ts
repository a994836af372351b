// Address codecs shared by every layer: pure, no kernel access.
import { isIPv6 } from "node:net";

export function ipToInt(ip: string): number {
  const parts = ip.split(".");
  if (parts.length !== 4) throw new Error(`not an IPv4 address: ${ip}`);
  let value = 0;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part)) throw new Error(`not an IPv4 address: ${ip}`);
    const octet = Number(part);
    if (octet > 255) throw new Error(`not an IPv4 address: ${ip}`);
    value = value * 256 + octet;
  }
  return value >>> 0;
}

export function intToIp(value: number): string {
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join(".");
}

export function macToBytes(mac: string): Buffer {
  const parts = mac.split(":");
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) throw new Error(`not a MAC address: ${mac}`);
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

export function bytesToMac(bytes: Uint8Array): string {
  return Array.from(bytes.subarray(0, 6), (b) => b.toString(16).padStart(2, "0")).join(":");
}

/** An IPv6 address as a 128-bit integer (any textual form node:net accepts, no zone). */
export function ip6ToBigInt(ip: string): bigint {
  if (!isIPv6(ip) || ip.includes("%")) throw new Error(`not an IPv6 address: ${ip}`);
  let text = ip;
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hex groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const n = ipToInt(v4[1]!);
    text = `${text.slice(0, -v4[1]!.length)}${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const [head, tail] = text.includes("::") ? text.split("::") : [text, undefined];
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill("0"), ...right];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

/** The canonical (RFC 5952) text of a 128-bit integer. */
export function bigIntToIp6(value: bigint): string {
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((value >> BigInt(i * 16)) & 0xffffn));
  // The longest run of two or more zero groups becomes "::" (the first on a tie).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(":");
  if (best < 0) return hex(groups);
  return `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLen))}`;
}

/** The 16 bytes of an IPv6 address, network order. */
export function ip6ToBytes(ip: string): Buffer {
  const v = ip6ToBigInt(ip);
  const out = Buffer.alloc(16);
  out.writeBigUInt64BE(v >> 64n, 0);
  out.writeBigUInt64BE(v & 0xffffffffffffffffn, 8);
  return out;
}

export function bytesToIp6(bytes: Uint8Array): string {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, 16);
  return bigIntToIp6((b.readBigUInt64BE(0) << 64n) | b.readBigUInt64BE(8));
}

export interface Cidr {
  /** Network address as an unsigned 32-bit integer. */
  base: number;
  prefixLength: number;
  size: number;
}

/** Parses "a.b.c.d/n"; the address must be the network address (no host bits set). */
export function parseCidr(text: string): Cidr {
  const match = /^([0-9.]+)\/(\d{1,2})$/.exec(text);
  if (!match) throw new Error(`not an IPv4 CIDR: ${text}`);
  const prefixLength = Number(match[2]);
  if (prefixLength > 32) throw new Error(`prefix length over 32: ${text}`);
  const base = ipToInt(match[1]!);
  const size = 2 ** (32 - prefixLength);
  if (base % size !== 0) throw new Error(`host bits set in ${text}`);
  return { base, prefixLength, size };
}

export function formatCidr(cidr: Cidr): string {
  return `${intToIp(cidr.base)}/${cidr.prefixLength}`;
}

export function cidrContains(cidr: Cidr, ip: number): boolean {
  return ip >= cidr.base && ip < cidr.base + cidr.size;
}

export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  return a.base < b.base + b.size && b.base < a.base + a.size;
}

/** An IPv6 network: --link-cidr6, where the slots' outside IPv6 addresses live. */
export interface Cidr6 {
  base: bigint;
  prefixLength: number;
  size: bigint;
}

/** Parses "x:y::/n"; the address must be the network address (no host bits set). */
export function parseCidr6(text: string): Cidr6 {
  const match = /^([0-9A-Fa-f:.]+)\/(\d{1,3})$/.exec(text);
  if (!match) throw new Error(`not an IPv6 CIDR: ${text}`);
  const prefixLength = Number(match[2]);
  if (prefixLength > 128) throw new Error(`prefix length over 128: ${text}`);
  const base = ip6ToBigInt(match[1]!);
  const size = 1n << BigInt(128 - prefixLength);
  if (base % size !== 0n) throw new Error(`host bits set in ${text}`);
  return { base, prefixLength, size };
}

export function cidrs6Overlap(a: Cidr6, b: Cidr6): boolean {
  return a.base < b.base + b.size && b.base < a.base + a.size;
}

/** "x::/n" or "x::" (host bits allowed) as a network. */
export function parseCidr6Loose(text: string): Cidr6 {
  const [ip, len] = text.split("/");
  const prefixLength = len === undefined ? 128 : Number(len);
  const size = 1n << BigInt(128 - prefixLength);
  const addr = ip6ToBigInt(ip!);
  return { base: addr - (addr % size), prefixLength, size };
}

export function formatCidr6(cidr: Cidr6): string {
  return `${bigIntToIp6(cidr.base)}/${cidr.prefixLength}`;
}
