import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  Attrs,
  NLA_F_NESTED,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  NLM_F_MULTI,
  NLM_F_REQUEST,
  align4,
  attr,
  attrIpv4,
  attrNested,
  attrString,
  attrU16,
  attrU16be,
  attrU32,
  attrU32be,
  attrU8,
  bytesToIpv6,
  bytesToMac,
  decodeDone,
  decodeError,
  decodeHeader,
  encodeMessage,
  ipv4ToBytes,
  ipv6ToBytes,
  macToBytes,
  parseAttrs,
  parseMessages,
  stampMessage,
} from "../../src/kernel/netlink/codec.js";

/** An NLMSG_ERROR as the kernel builds it, with optional extack TLVs. */
function errorMessage(opts: { errno: number; seq: number; request: Buffer; capped: boolean; msg?: string; offs?: number }): Buffer {
  const body: Buffer[] = [];
  const err = Buffer.alloc(4);
  err.writeInt32LE(-opts.errno);
  body.push(err);
  body.push(opts.capped ? opts.request.subarray(0, 16) : opts.request);
  const tlvs: Buffer[] = [];
  if (opts.msg !== undefined) tlvs.push(attrString(1, opts.msg));
  if (opts.offs !== undefined) tlvs.push(attrU32(2, opts.offs));
  let flags = opts.capped ? NLM_F_CAPPED : 0;
  if (tlvs.length) flags |= NLM_F_ACK_TLVS;
  return encodeMessage(NLMSG_ERROR, flags, [Buffer.concat(body), ...tlvs], opts.seq, 0);
}

describe("netlink codec: messages", () => {
  it("encodes an nlmsghdr with length, type, flags, seq, pid and padded parts", () => {
    const m = encodeMessage(16, NLM_F_REQUEST, [Buffer.from([1, 2, 3]), Buffer.from([4])], 7, 9);
    assert.equal(m.length, 16 + 4 + 4);
    assert.deepEqual(decodeHeader(m), { len: 24, type: 16, flags: NLM_F_REQUEST, seq: 7, pid: 9 });
    assert.deepEqual([...m.subarray(16)], [1, 2, 3, 0, 4, 0, 0, 0]);
  });

  it("stamps flags and sequence in place", () => {
    const m = encodeMessage(18, 0, []);
    stampMessage(m, 0x305, 0xfffffffe);
    const h = decodeHeader(m);
    assert.equal(h.flags, 0x305);
    assert.equal(h.seq, 0xfffffffe);
  });

  it("parses several messages of one datagram, including unaligned lengths", () => {
    const a = encodeMessage(16, NLM_F_MULTI, [Buffer.from([1, 2, 3, 4, 5])], 1);
    // The header length counts the unpadded payload as the kernel does; the next starts aligned.
    a.writeUInt32LE(16 + 5, 0);
    const b = encodeMessage(NLMSG_DONE, NLM_F_MULTI, [Buffer.alloc(4)], 1);
    const msgs = parseMessages(Buffer.concat([a, b]));
    assert.equal(msgs.length, 2);
    assert.equal(msgs[0]!.type, 16);
    assert.deepEqual([...msgs[0]!.payload], [1, 2, 3, 4, 5]);
    assert.equal(msgs[1]!.type, NLMSG_DONE);
    assert.equal(msgs[1]!.flags, NLM_F_MULTI);
  });

  it("rejects a message whose length runs past the buffer", () => {
    const m = encodeMessage(16, 0, [Buffer.alloc(8)]);
    m.writeUInt32LE(100, 0);
    assert.throws(() => parseMessages(m), /malformed/);
    m.writeUInt32LE(8, 0);
    assert.throws(() => parseMessages(m), /malformed/);
  });
});

describe("netlink codec: attributes", () => {
  it("aligns to 4 bytes", () => {
    assert.deepEqual([0, 1, 3, 4, 5, 8].map(align4), [0, 4, 4, 4, 8, 8]);
  });

  it("encodes scalars in host order and u32be/u16be in network order", () => {
    assert.deepEqual([...attrU8(1, 0xab)], [5, 0, 1, 0, 0xab, 0, 0, 0]);
    assert.deepEqual([...attrU16(2, 0x1234)], [6, 0, 2, 0, 0x34, 0x12, 0, 0]);
    assert.deepEqual([...attrU16be(2, 4789)], [6, 0, 2, 0, 0x12, 0xb5, 0, 0]);
    assert.deepEqual([...attrU32(3, 0x01020304)], [8, 0, 3, 0, 4, 3, 2, 1]);
    assert.deepEqual([...attrU32be(3, 0x01020304)], [8, 0, 3, 0, 1, 2, 3, 4]);
    assert.deepEqual([...attrIpv4(1, "10.200.0.1")], [8, 0, 1, 0, 10, 200, 0, 1]);
  });

  it("NUL-terminates strings and pads them", () => {
    const a = attrString(3, "veth0");
    assert.equal(a.readUInt16LE(0), 4 + 6);
    assert.equal(a.length, 12);
    assert.equal(new Attrs(a).str(3), "veth0");
  });

  it("round-trips nested attributes and masks NLA_F_NESTED on decode", () => {
    const nested = attrNested(18, [attrString(1, "vxlan"), attrNested(2, [attrU32(1, 0), attrU16be(15, 4789), attrU8(7, 0)])]);
    assert.equal(nested.readUInt16LE(2), 18 | NLA_F_NESTED);
    const top = new Attrs(Buffer.concat([attrString(3, "vx0"), nested]));
    assert.equal(top.str(3), "vx0");
    const info = top.nested(18)!;
    assert.equal(info.str(1), "vxlan");
    const data = info.nested(2)!;
    assert.equal(data.u32(1), 0);
    assert.equal(data.u16be(15), 4789);
    assert.equal(data.u8(7), 0);
    assert.equal(data.u32(99), undefined);
  });

  it("keeps repeated attributes; get returns the first", () => {
    const a = new Attrs(Buffer.concat([attrU32(5, 1), attrU32(5, 2), attr(6, Buffer.alloc(0))]));
    assert.equal(a.u32(5), 1);
    assert.deepEqual(a.all(5).map((b) => b.readUInt32LE(0)), [1, 2]);
    assert.equal(a.has(6), true);
    assert.equal(a.get(6)!.length, 0);
  });

  it("parses attributes after a family header offset and rejects overlong ones", () => {
    const buf = Buffer.concat([Buffer.alloc(16, 0xff), attrU32(4, 1500)]);
    assert.equal(new Attrs(buf, 16).u32(4), 1500);
    const bad = attrU32(4, 1);
    bad.writeUInt16LE(40, 0);
    assert.throws(() => parseAttrs(bad), /malformed/);
  });
});

describe("netlink codec: errors, acks, done", () => {
  const request = encodeMessage(16, NLM_F_REQUEST, [Buffer.alloc(16), attrString(3, "x")], 42);

  it("decodes a plain ack", () => {
    const [m] = parseMessages(errorMessage({ errno: 0, seq: 42, request, capped: true }));
    const e = decodeError(m!.payload, m!.flags);
    assert.equal(e.errno, 0);
    assert.equal(e.requestSeq, 42);
    assert.equal(e.requestType, 16);
    assert.equal(e.message, undefined);
  });

  it("decodes errno and extack text after a capped request", () => {
    const [m] = parseMessages(errorMessage({ errno: 17, seq: 42, request, capped: true, msg: "File exists here", offs: 36 }));
    const e = decodeError(m!.payload, m!.flags);
    assert.equal(e.errno, 17);
    assert.equal(e.message, "File exists here");
    assert.equal(e.offset, 36);
  });

  it("skips the echoed request when the ack is not capped", () => {
    const [m] = parseMessages(errorMessage({ errno: 22, seq: 42, request, capped: false, msg: "Invalid handle" }));
    const e = decodeError(m!.payload, m!.flags);
    assert.equal(e.errno, 22);
    assert.equal(e.message, "Invalid handle");
  });

  it("decodes NLMSG_DONE with and without a status and extack", () => {
    assert.deepEqual(decodeDone(Buffer.alloc(4), NLM_F_MULTI), { errno: 0 });
    assert.deepEqual(decodeDone(Buffer.alloc(0), 0), { errno: 0 });
    const status = Buffer.alloc(4);
    status.writeInt32LE(-2);
    assert.deepEqual(decodeDone(Buffer.concat([status, attrString(1, "ipv4: FIB table does not exist")]), NLM_F_ACK_TLVS), {
      errno: 2,
      message: "ipv4: FIB table does not exist",
    });
  });

  it("parses a multi-part dump datagram ending in DONE", () => {
    const parts = [1, 2, 3].map((i) => encodeMessage(16, NLM_F_MULTI, [Buffer.alloc(16), attrU32(4, i)], 5));
    parts.push(encodeMessage(NLMSG_DONE, NLM_F_MULTI, [Buffer.alloc(4)], 5));
    const msgs = parseMessages(Buffer.concat(parts));
    assert.deepEqual(msgs.map((m) => m.type), [16, 16, 16, NLMSG_DONE]);
    assert.deepEqual(msgs.slice(0, 3).map((m) => new Attrs(m.payload, 16).u32(4)), [1, 2, 3]);
  });
});

describe("netlink codec: addresses", () => {
  it("converts IPv4 and rejects junk", () => {
    assert.deepEqual([...ipv4ToBytes("192.168.1.255")], [192, 168, 1, 255]);
    assert.throws(() => ipv4ToBytes("1.2.3"));
    assert.throws(() => ipv4ToBytes("1.2.3.256"));
  });

  it("converts IPv6 both ways in RFC 5952 form", () => {
    for (const [text, canon] of [
      ["::", "::"],
      ["::1", "::1"],
      ["fe80::1", "fe80::1"],
      ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
      ["2001:DB8::", "2001:db8::"],
      ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"],
      ["1:0:3:4:5:6:7:8", "1:0:3:4:5:6:7:8"],
      ["::ffff:10.0.0.1", "::ffff:a00:1"],
    ] as const) {
      assert.equal(bytesToIpv6(ipv6ToBytes(text)), canon, text);
    }
    assert.throws(() => ipv6ToBytes("1::2::3"));
    assert.throws(() => ipv6ToBytes("1:2:3"));
    assert.throws(() => ipv6ToBytes("g::1"));
  });

  it("converts MAC addresses", () => {
    assert.equal(bytesToMac(macToBytes("02:6E:00:00:0a:ff")), "02:6e:00:00:0a:ff");
    assert.throws(() => macToBytes("02:6e:00:00:0a"));
  });
});
