// Frames for tests that run eBPF programs on packets (BPF_PROG_TEST_RUN): built and
// checked here, independently of the code under test.
import assert from "node:assert/strict";
import { ipToInt, macToBytes } from "../../src/dataplane/topology.js";
import { bytesToIp6, ip6ToBytes } from "../../src/core/addr.js";

export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

export function csumFold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** One's complement sum of 16-bit big-endian words (odd length padded with zero). */
export function sum16(buf: Buffer, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i);
  if (buf.length % 2) sum += buf[buf.length - 1]! << 8;
  return csumFold(sum);
}

export function checksum(buf: Buffer, initial = 0): number {
  return ~sum16(buf, initial) & 0xffff;
}

export function ip4(addr: string): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(ipToInt(addr));
  return b;
}

export function pseudoSum(src: Buffer, dst: Buffer, proto: number, length: number): number {
  const ph = Buffer.alloc(12);
  src.copy(ph, 0);
  dst.copy(ph, 4);
  ph[9] = proto;
  ph.writeUInt16BE(length, 10);
  return sum16(ph);
}

export function ether(dst: string, src: string, type = 0x0800): Buffer {
  return Buffer.concat([macToBytes(dst), macToBytes(src), Buffer.from([type >> 8, type & 255])]);
}

export interface Ipv4Opts {
  src: string;
  dst: string;
  proto: number;
  payload: Buffer;
  options?: Buffer;
  fragOff?: number;
  id?: number;
}

export function ipv4(o: Ipv4Opts): Buffer {
  const opts = o.options ?? Buffer.alloc(0);
  assert.equal(opts.length % 4, 0);
  const h = Buffer.alloc(20 + opts.length);
  h[0] = 0x40 | (h.length / 4);
  h.writeUInt16BE(h.length + o.payload.length, 2);
  h.writeUInt16BE(o.id ?? 0x1234, 4);
  h.writeUInt16BE(o.fragOff ?? 0x4000, 6);
  h[8] = 64;
  h[9] = o.proto;
  ip4(o.src).copy(h, 12);
  ip4(o.dst).copy(h, 16);
  opts.copy(h, 20);
  h.writeUInt16BE(checksum(h), 10);
  return Buffer.concat([h, o.payload]);
}

export function tcp(src: string, dst: string, sport: number, dport: number, data: Buffer): Buffer {
  const t = Buffer.alloc(20 + data.length);
  t.writeUInt16BE(sport, 0);
  t.writeUInt16BE(dport, 2);
  t.writeUInt32BE(0x01020304, 4);
  t[12] = 5 << 4;
  t[13] = 0x18; // PSH|ACK
  t.writeUInt16BE(65535, 14);
  data.copy(t, 20);
  t.writeUInt16BE(checksum(t, pseudoSum(ip4(src), ip4(dst), IPPROTO_TCP, t.length)), 16);
  return t;
}

export function udp(src: string, dst: string, sport: number, dport: number, data: Buffer, withCsum = true): Buffer {
  const u = Buffer.alloc(8 + data.length);
  u.writeUInt16BE(sport, 0);
  u.writeUInt16BE(dport, 2);
  u.writeUInt16BE(u.length, 4);
  data.copy(u, 8);
  if (withCsum) {
    const c = checksum(u, pseudoSum(ip4(src), ip4(dst), IPPROTO_UDP, u.length));
    u.writeUInt16BE(c === 0 ? 0xffff : c, 6);
  }
  return u;
}

export function icmp(type: number, code: number, rest: Buffer, body: Buffer): Buffer {
  const m = Buffer.concat([Buffer.from([type, code, 0, 0]), rest, body]);
  m.writeUInt16BE(checksum(m), 2);
  return m;
}

export function vxlan(vni: number, inner: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h[0] = 0x08;
  h.writeUInt32BE(((vni << 8) | 0) >>> 0, 4);
  return Buffer.concat([h, inner]);
}

export interface Parsed {
  ihl: number;
  src: string;
  dst: string;
  proto: number;
  l4: Buffer;
  ip: Buffer;
}

export function parse(frame: Buffer): Parsed {
  const ip = frame.subarray(14);
  const ihl = (ip[0]! & 15) * 4;
  const total = ip.readUInt16BE(2);
  const addr = (off: number) => Array.from(ip.subarray(off, off + 4)).join(".");
  return { ihl, src: addr(12), dst: addr(16), proto: ip[9]!, ip: ip.subarray(0, total), l4: ip.subarray(ihl, total) };
}

export function assertIpCsum(ipHeader: Buffer, what: string): void {
  assert.equal(sum16(ipHeader), 0xffff, `${what}: IPv4 header checksum does not verify`);
}

export function assertL4Csum(p: Parsed): void {
  const src = p.ip.subarray(12, 16);
  const dst = p.ip.subarray(16, 20);
  if (p.proto === IPPROTO_ICMP) {
    assert.equal(sum16(p.l4), 0xffff, "ICMP checksum does not verify");
    return;
  }
  if (p.proto === IPPROTO_UDP && p.l4.readUInt16BE(6) === 0) return; // no checksum
  assert.equal(sum16(p.l4, pseudoSum(src, dst, p.proto, p.l4.length)), 0xffff, `L4 (${p.proto}) checksum does not verify`);
}

// ---- IPv6 (bpf/lib/nat6.h) ----

export const IPPROTO_ICMPV6 = 58;

function ip6Bytes(addr: string): Buffer {
  return ip6ToBytes(addr);
}

/** The IPv6 pseudo-header sum (RFC 8200 8.1): addresses, upper-layer length, next header. */
export function pseudoSum6(src: string, dst: string, proto: number, length: number): number {
  const ph = Buffer.alloc(40);
  ip6Bytes(src).copy(ph, 0);
  ip6Bytes(dst).copy(ph, 16);
  ph.writeUInt32BE(length, 32);
  ph[39] = proto;
  return sum16(ph);
}

/**
 * An IPv6 packet whose upper-layer payload (TCP/UDP/ICMPv6, checksum field at `csumAt`) gets
 * a valid checksum; `nextHeader` other than `proto` puts that extension header's bytes first.
 */
export function ipv6(o: { src: string; dst: string; proto: number; payload: Buffer; csumAt?: number; hopLimit?: number; ext?: { nextHeader: number; bytes: Buffer } }): Buffer {
  const payload = Buffer.from(o.payload);
  if (o.csumAt !== undefined) {
    payload.writeUInt16BE(0, o.csumAt);
    let c = checksum(payload, pseudoSum6(o.src, o.dst, o.proto, payload.length));
    if (o.proto === IPPROTO_UDP && c === 0) c = 0xffff;
    payload.writeUInt16BE(c, o.csumAt);
  }
  const body = o.ext ? Buffer.concat([o.ext.bytes, payload]) : payload;
  const h = Buffer.alloc(40);
  h.writeUInt32BE(0x60000000, 0);
  h.writeUInt16BE(body.length, 4);
  h[6] = o.ext ? o.ext.nextHeader : o.proto;
  h[7] = o.hopLimit ?? 64;
  ip6Bytes(o.src).copy(h, 8);
  ip6Bytes(o.dst).copy(h, 24);
  return Buffer.concat([h, body]);
}

export interface Parsed6 {
  src: string;
  dst: string;
  nextHeader: number;
  payload: Buffer;
}

export function parse6(frame: Buffer): Parsed6 {
  assert.equal(frame.readUInt16BE(12), 0x86dd, "not an IPv6 frame");
  const ip = frame.subarray(14);
  const len = ip.readUInt16BE(4);
  return { src: bytesToIp6(ip.subarray(8, 24)), dst: bytesToIp6(ip.subarray(24, 40)), nextHeader: ip[6]!, payload: ip.subarray(40, 40 + len) };
}

/** The upper-layer checksum of an IPv6 frame (no extension headers) verifies. */
export function assertL4Csum6(p: Parsed6): void {
  assert.equal(sum16(p.payload, pseudoSum6(p.src, p.dst, p.nextHeader, p.payload.length)), 0xffff, `IPv6 ${p.nextHeader} checksum`);
}
