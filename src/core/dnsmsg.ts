// The few parts of a DNS message the forwarder reads (RFC 1035 §4): the question, and the
// A and AAAA records of an answer with their TTLs. Hand-written: the forwarder relays the upstream's
// bytes untouched (only the 16-bit id changes) and needs no zone or resolver logic, which is
// what the npm DNS packages bring (dns-packet decodes and re-encodes every record; none is
// installed here and the brief keeps dependencies minimal). Every read is bounds-checked:
// queries come from hostile guests.

import { SocketAddress } from "node:net";

export const TYPE_A = 1;
export const TYPE_AAAA = 28;
export const RCODE_FORMERR = 1;
export const RCODE_SERVFAIL = 2;
export const RCODE_REFUSED = 5;
const HEADER = 12;

export interface DnsQuestion {
  id: number;
  /** Lower case, no trailing dot. */
  name: string;
  type: number;
  /** Offset just past the (first) question. */
  end: number;
}

export interface AddressRecord {
  family: 4 | 6;
  /** Canonical text (node:net's, as nft prints it). */
  address: string;
  /** The address bytes, network order: an nft set key. */
  key: Buffer;
  ttl: number;
}

export class DnsFormatError extends Error {
  override name = "DnsFormatError";
}

/** Reads a (possibly compressed) name at `offset`; returns it and the offset after it in place. */
function readName(msg: Buffer, offset: number): { name: string; end: number } {
  const labels: string[] = [];
  let pos = offset;
  let end = -1;
  for (let jumps = 0; ; ) {
    if (pos >= msg.length) throw new DnsFormatError("name runs past the message");
    const len = msg[pos]!;
    if (len === 0) {
      if (end < 0) end = pos + 1;
      break;
    }
    if ((len & 0xc0) === 0xc0) {
      if (pos + 1 >= msg.length) throw new DnsFormatError("truncated name pointer");
      if (++jumps > 32) throw new DnsFormatError("name pointer loop");
      if (end < 0) end = pos + 2;
      pos = ((len & 0x3f) << 8) | msg[pos + 1]!;
      continue;
    }
    if ((len & 0xc0) !== 0) throw new DnsFormatError("unknown label type");
    if (pos + 1 + len > msg.length) throw new DnsFormatError("label runs past the message");
    labels.push(msg.toString("latin1", pos + 1, pos + 1 + len).toLowerCase());
    pos += 1 + len;
  }
  const name = labels.join(".");
  if (name.length > 253) throw new DnsFormatError("name longer than 253 characters");
  return { name, end };
}

/** The first question of a query (QR=0, opcode QUERY, exactly one question). */
export function parseQuery(msg: Buffer): DnsQuestion {
  if (msg.length < HEADER) throw new DnsFormatError("shorter than a DNS header");
  const flags = msg.readUInt16BE(2);
  if (flags & 0x8000) throw new DnsFormatError("not a query");
  if (((flags >> 11) & 0xf) !== 0) throw new DnsFormatError("opcode is not QUERY");
  if (msg.readUInt16BE(4) !== 1) throw new DnsFormatError("not exactly one question");
  const { name, end } = readName(msg, HEADER);
  if (end + 4 > msg.length) throw new DnsFormatError("truncated question");
  return { id: msg.readUInt16BE(0), name, type: msg.readUInt16BE(end), end: end + 4 };
}

/** The A and AAAA records in the answer section of a response (CNAME chains included: they answer the question). */
export function answerAddressRecords(msg: Buffer): AddressRecord[] {
  if (msg.length < HEADER) throw new DnsFormatError("shorter than a DNS header");
  const qd = msg.readUInt16BE(4);
  const an = msg.readUInt16BE(6);
  let pos = HEADER;
  for (let i = 0; i < qd; i++) pos = readName(msg, pos).end + 4;
  const out: AddressRecord[] = [];
  for (let i = 0; i < an; i++) {
    pos = readName(msg, pos).end;
    if (pos + 10 > msg.length) throw new DnsFormatError("truncated record");
    const type = msg.readUInt16BE(pos);
    const cls = msg.readUInt16BE(pos + 2);
    const ttl = msg.readUInt32BE(pos + 4);
    const rdlength = msg.readUInt16BE(pos + 8);
    pos += 10;
    if (pos + rdlength > msg.length) throw new DnsFormatError("truncated record data");
    // RFC 2181 §8: a TTL with the top bit set counts as zero.
    const seconds = ttl > 0x7fffffff ? 0 : ttl;
    if (type === TYPE_A && cls === 1 && rdlength === 4) {
      const key = Buffer.from(msg.subarray(pos, pos + 4));
      out.push({ family: 4, address: `${key[0]}.${key[1]}.${key[2]}.${key[3]}`, key, ttl: seconds });
    } else if (type === TYPE_AAAA && cls === 1 && rdlength === 16) {
      const key = Buffer.from(msg.subarray(pos, pos + 16));
      const hex = key.toString("hex").replace(/(.{4})(?!$)/g, "$1:");
      out.push({ family: 6, address: new SocketAddress({ address: hex, family: "ipv6" }).address, key, ttl: seconds });
    }
    pos += rdlength;
  }
  return out;
}

/** An error response to `query` (its header and first question, the given rcode, no records). */
export function errorResponse(query: Buffer, rcode: number, questionEnd?: number): Buffer {
  const head = Buffer.from(query.subarray(0, questionEnd ?? HEADER));
  if (head.length < HEADER) return head;
  const rd = head.readUInt16BE(2) & 0x0100;
  head.writeUInt16BE(0x8000 | rd | 0x0080 | (rcode & 0xf), 2); // QR, RD copied, RA
  head.writeUInt16BE(questionEnd === undefined ? 0 : 1, 4);
  head.writeUInt16BE(0, 6);
  head.writeUInt16BE(0, 8);
  head.writeUInt16BE(0, 10);
  return head;
}

/** Whether `name` is one of `patterns`: a name exactly, or `*.suffix` for any name under suffix (not suffix itself). */
export function nameAllowed(name: string, patterns: readonly string[]): boolean {
  for (const p of patterns) {
    if (p.startsWith("*.") ? name.endsWith(p.slice(1)) : name === p) return true;
  }
  return false;
}

const LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** A domain pattern of the config file in canonical form (lower case, no trailing dot), or an error message. */
export function canonicalDomain(text: string): string | Error {
  const t = text.toLowerCase().replace(/\.$/, "");
  const labels = t.startsWith("*.") ? t.slice(2).split(".") : t.split(".");
  if (t.length > 253 || labels.length < 1 || !labels.every((l) => LABEL.test(l))) {
    return new Error(`${JSON.stringify(text)} is not a domain name or *.suffix`);
  }
  return t;
}
