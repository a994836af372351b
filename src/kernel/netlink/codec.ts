// Netlink wire format: nlmsghdr, attributes (rtattr and nlattr share one layout), the
// error/ack message with extended ack TLVs. Pure code over Buffers, no kernel access.
// Host byte order is little-endian on every platform netslot runs on (x86-64, arm64).

export const NLMSG_HDRLEN = 16;
export const NLA_HDRLEN = 4;

export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLMSG_OVERRUN = 4;

export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_ECHO = 0x8;
export const NLM_F_DUMP_INTR = 0x10;
export const NLM_F_DUMP_FILTERED = 0x20;
// Modifiers of GET requests.
export const NLM_F_ROOT = 0x100;
export const NLM_F_MATCH = 0x200;
export const NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH;
// Modifiers of NEW requests.
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
export const NLM_F_APPEND = 0x800;
// Flags of NLMSG_ERROR acks.
export const NLM_F_CAPPED = 0x100;
export const NLM_F_ACK_TLVS = 0x200;

export const NLA_F_NESTED = 0x8000;
export const NLA_F_NET_BYTEORDER = 0x4000;
export const NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xffff;

export const NLMSGERR_ATTR_MSG = 1;
export const NLMSGERR_ATTR_OFFS = 2;
export const NLMSGERR_ATTR_COOKIE = 3;

export function align4(n: number): number {
  return (n + 3) & ~3;
}

// ───────────────────────────── messages ─────────────────────────────

export interface NlMsg {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  /** Everything after the 16-byte header (family header plus attributes). */
  payload: Buffer;
}

/** One message: header plus `parts` (a family header and encoded attributes), concatenated. */
export function encodeMessage(type: number, flags: number, parts: Buffer[], seq = 0, pid = 0): Buffer {
  let len = NLMSG_HDRLEN;
  for (const p of parts) len += align4(p.length);
  const buf = Buffer.alloc(len);
  buf.writeUInt32LE(len, 0);
  buf.writeUInt16LE(type, 4);
  buf.writeUInt16LE(flags, 6);
  buf.writeUInt32LE(seq >>> 0, 8);
  buf.writeUInt32LE(pid >>> 0, 12);
  let off = NLMSG_HDRLEN;
  for (const p of parts) {
    p.copy(buf, off);
    off += align4(p.length);
  }
  return buf;
}

/** Rewrites the flags and sequence number of an encoded message in place. */
export function stampMessage(msg: Buffer, flags: number, seq: number): void {
  msg.writeUInt16LE(flags, 6);
  msg.writeUInt32LE(seq >>> 0, 8);
}

export function decodeHeader(buf: Buffer, off = 0): { len: number; type: number; flags: number; seq: number; pid: number } {
  return {
    len: buf.readUInt32LE(off),
    type: buf.readUInt16LE(off + 4),
    flags: buf.readUInt16LE(off + 6),
    seq: buf.readUInt32LE(off + 8),
    pid: buf.readUInt32LE(off + 12),
  };
}

/**
 * Splits a receive buffer (one datagram) into messages. Payloads are views into `buf`:
 * copy the buffer first if it is reused.
 */
export function parseMessages(buf: Buffer): NlMsg[] {
  const out: NlMsg[] = [];
  let off = 0;
  while (off + NLMSG_HDRLEN <= buf.length) {
    const h = decodeHeader(buf, off);
    if (h.len < NLMSG_HDRLEN || off + h.len > buf.length) {
      throw new Error(`malformed netlink message: length ${h.len} at offset ${off} of ${buf.length}`);
    }
    out.push({ type: h.type, flags: h.flags, seq: h.seq, pid: h.pid, payload: buf.subarray(off + NLMSG_HDRLEN, off + h.len) });
    off += align4(h.len);
  }
  return out;
}

// ───────────────────────────── attributes ─────────────────────────────

export function attr(type: number, value: Buffer): Buffer {
  const len = NLA_HDRLEN + value.length;
  const buf = Buffer.alloc(align4(len));
  buf.writeUInt16LE(len, 0);
  buf.writeUInt16LE(type, 2);
  value.copy(buf, NLA_HDRLEN);
  return buf;
}

export function attrFlag(type: number): Buffer {
  return attr(type, Buffer.alloc(0));
}

export function attrU8(type: number, value: number): Buffer {
  const b = Buffer.alloc(1);
  b.writeUInt8(value);
  return attr(type, b);
}

export function attrU16(type: number, value: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(value);
  return attr(type, b);
}

/** A 16-bit value in network byte order (ports). */
export function attrU16be(type: number, value: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(value);
  return attr(type, b);
}

export function attrU32(type: number, value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0);
  return attr(type, b);
}

export function attrU32be(type: number, value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value >>> 0);
  return attr(type, b);
}

/** A NUL-terminated string (NLA_STRING / NLA_NUL_STRING both accept it). */
export function attrString(type: number, value: string): Buffer {
  return attr(type, Buffer.from(`${value}\0`, "utf8"));
}

export function attrBytes(type: number, value: Buffer | Uint8Array): Buffer {
  return attr(type, Buffer.from(value));
}

export function attrIpv4(type: number, ip: string): Buffer {
  return attr(type, ipv4ToBytes(ip));
}

/** An IPv4 or IPv6 address, by its textual form. */
export function attrIp(type: number, ip: string): Buffer {
  return attr(type, ipToBytes(ip));
}

/** A nested attribute; NLA_F_NESTED is set as iproute2 and libmnl do. */
export function attrNested(type: number, children: Buffer[], nestedFlag = true): Buffer {
  return attr(nestedFlag ? type | NLA_F_NESTED : type, Buffer.concat(children));
}

export interface NlAttr {
  /** Type without NLA_F_NESTED / NLA_F_NET_BYTEORDER. */
  type: number;
  value: Buffer;
}

/** Parses a run of attributes; values are views into `buf`. Trailing garbage shorter than a header is ignored. */
export function parseAttrs(buf: Buffer, offset = 0): NlAttr[] {
  const out: NlAttr[] = [];
  let off = offset;
  while (off + NLA_HDRLEN <= buf.length) {
    const len = buf.readUInt16LE(off);
    const type = buf.readUInt16LE(off + 2) & NLA_TYPE_MASK;
    if (len < NLA_HDRLEN || off + len > buf.length) {
      throw new Error(`malformed netlink attribute: length ${len} at offset ${off} of ${buf.length}`);
    }
    out.push({ type, value: buf.subarray(off + NLA_HDRLEN, off + len) });
    off += align4(len);
  }
  return out;
}

/** Attributes by type; the first occurrence wins, `all()` returns every occurrence. */
export class Attrs {
  readonly list: NlAttr[];
  private readonly byType = new Map<number, Buffer>();

  constructor(buf: Buffer, offset = 0) {
    this.list = parseAttrs(buf, offset);
    for (const a of this.list) if (!this.byType.has(a.type)) this.byType.set(a.type, a.value);
  }

  has(type: number): boolean {
    return this.byType.has(type);
  }
  get(type: number): Buffer | undefined {
    return this.byType.get(type);
  }
  all(type: number): Buffer[] {
    return this.list.filter((a) => a.type === type).map((a) => a.value);
  }
  nested(type: number): Attrs | undefined {
    const v = this.byType.get(type);
    return v === undefined ? undefined : new Attrs(v);
  }
  u8(type: number): number | undefined {
    const v = this.byType.get(type);
    return v && v.length >= 1 ? v.readUInt8(0) : undefined;
  }
  u16(type: number): number | undefined {
    const v = this.byType.get(type);
    return v && v.length >= 2 ? v.readUInt16LE(0) : undefined;
  }
  u16be(type: number): number | undefined {
    const v = this.byType.get(type);
    return v && v.length >= 2 ? v.readUInt16BE(0) : undefined;
  }
  u32(type: number): number | undefined {
    const v = this.byType.get(type);
    return v && v.length >= 4 ? v.readUInt32LE(0) : undefined;
  }
  u32be(type: number): number | undefined {
    const v = this.byType.get(type);
    return v && v.length >= 4 ? v.readUInt32BE(0) : undefined;
  }
  str(type: number): string | undefined {
    const v = this.byType.get(type);
    return v === undefined ? undefined : readCString(v);
  }
  ip(type: number): string | undefined {
    const v = this.byType.get(type);
    return v === undefined ? undefined : bytesToIp(v);
  }
  mac(type: number): string | undefined {
    const v = this.byType.get(type);
    return v === undefined ? undefined : bytesToMac(v);
  }
}

export function readCString(buf: Buffer): string {
  const nul = buf.indexOf(0);
  return buf.toString("utf8", 0, nul < 0 ? buf.length : nul);
}

// ───────────────────────────── errors and acks ─────────────────────────────

export interface NlError {
  /** Positive errno; 0 for a plain ack. */
  errno: number;
  /** NLMSGERR_ATTR_MSG, the kernel's human-readable reason, when extended acks are on. */
  message?: string;
  /** NLMSGERR_ATTR_OFFS: byte offset of the offending attribute in the request. */
  offset?: number;
  /** Header fields of the request this answers. */
  requestType: number;
  requestSeq: number;
}

/** Decodes the payload of an NLMSG_ERROR message (`flags` are that message's flags). */
export function decodeError(payload: Buffer, flags: number): NlError {
  if (payload.length < 4 + NLMSG_HDRLEN) throw new Error(`short NLMSG_ERROR payload (${payload.length} bytes)`);
  const errno = -payload.readInt32LE(0) || 0;
  const req = decodeHeader(payload, 4);
  const out: NlError = { errno, requestType: req.type, requestSeq: req.seq };
  if (flags & NLM_F_ACK_TLVS) {
    // Without NLM_F_CAPPED the whole request is echoed before the TLVs.
    const tlvOffset = 4 + (flags & NLM_F_CAPPED ? NLMSG_HDRLEN : align4(req.len));
    if (tlvOffset <= payload.length) addExtack(out, payload, tlvOffset);
  }
  return out;
}

/** Decodes the payload of NLMSG_DONE: an int status, then extended ack TLVs if flagged. */
export function decodeDone(payload: Buffer, flags: number): { errno: number; message?: string } {
  const errno = payload.length >= 4 ? -payload.readInt32LE(0) || 0 : 0;
  const out: { errno: number; message?: string; offset?: number } = { errno };
  if (flags & NLM_F_ACK_TLVS && payload.length > 4) addExtack(out, payload, 4);
  return { errno: out.errno, ...(out.message !== undefined ? { message: out.message } : {}) };
}

function addExtack(out: { message?: string; offset?: number }, payload: Buffer, offset: number): void {
  const tlvs = new Attrs(payload, offset);
  const msg = tlvs.str(NLMSGERR_ATTR_MSG);
  if (msg !== undefined && msg !== "") out.message = msg;
  const offs = tlvs.u32(NLMSGERR_ATTR_OFFS);
  if (offs !== undefined) out.offset = offs;
}

// ───────────────────────────── addresses ─────────────────────────────

export function ipv4ToBytes(ip: string): Buffer {
  const parts = ip.split(".");
  if (parts.length !== 4) throw new Error(`not an IPv4 address: ${ip}`);
  const b = Buffer.alloc(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) throw new Error(`not an IPv4 address: ${ip}`);
    b[i] = Number(p);
  }
  return b;
}

export function bytesToIpv4(b: Buffer): string {
  return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
}

export function ipv6ToBytes(ip: string): Buffer {
  const bad = (): Error => new Error(`not an IPv6 address: ${ip}`);
  let text = ip;
  const words: number[] = [];
  // A trailing dotted quad (::ffff:1.2.3.4) stands for the last two words.
  const dotted = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  let tail: number[] = [];
  if (dotted) {
    const v4 = ipv4ToBytes(dotted[2]!);
    tail = [v4.readUInt16BE(0), v4.readUInt16BE(2)];
    text = dotted[1]!.endsWith("::") ? dotted[1]! : dotted[1]!.slice(0, -1);
  }
  const halves = text.split("::");
  if (halves.length > 2) throw bad();
  const parse = (s: string): number[] =>
    s === ""
      ? []
      : s.split(":").map((w) => {
          if (!/^[0-9a-fA-F]{1,4}$/.test(w)) throw bad();
          return parseInt(w, 16);
        });
  const head = parse(halves[0]!);
  if (halves.length === 2) {
    const rest = [...parse(halves[1]!), ...tail];
    const zeros = 8 - head.length - rest.length;
    if (zeros < 1) throw bad();
    words.push(...head, ...new Array<number>(zeros).fill(0), ...rest);
  } else {
    words.push(...head, ...tail);
  }
  if (words.length !== 8) throw bad();
  const b = Buffer.alloc(16);
  words.forEach((w, i) => b.writeUInt16BE(w, i * 2));
  return b;
}

/** RFC 5952 text: lower case, longest run (≥2) of zero words as "::". */
export function bytesToIpv6(b: Buffer): string {
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push(b.readUInt16BE(i * 2));
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (ws: number[]): string => ws.map((w) => w.toString(16)).join(":");
  if (bestStart < 0) return hex(words);
  return `${hex(words.slice(0, bestStart))}::${hex(words.slice(bestStart + bestLen))}`;
}

export function ipFamily(ip: string): 4 | 6 {
  return ip.includes(":") ? 6 : 4;
}

export function ipToBytes(ip: string): Buffer {
  return ipFamily(ip) === 6 ? ipv6ToBytes(ip) : ipv4ToBytes(ip);
}

export function bytesToIp(b: Buffer): string {
  if (b.length === 4) return bytesToIpv4(b);
  if (b.length === 16) return bytesToIpv6(b);
  throw new Error(`not an IP address: ${b.length} bytes`);
}

export function macToBytes(mac: string): Buffer {
  const parts = mac.split(":");
  if (parts.length !== 6 || !parts.every((p) => /^[0-9a-fA-F]{2}$/.test(p))) throw new Error(`not a MAC address: ${mac}`);
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

export function bytesToMac(b: Buffer): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join(":");
}
