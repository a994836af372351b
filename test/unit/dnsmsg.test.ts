// The DNS message reader of the forwarder: what it takes from hostile queries and upstream answers.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { answerAddressRecords, errorResponse, nameAllowed, parseQuery, RCODE_REFUSED } from "../../src/core/dnsmsg.js";
import { resolvConfUpstream } from "../../src/daemon/config.js";

function name(n: string): Buffer {
  return Buffer.concat([...n.split(".").map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])), Buffer.from([0])]);
}

function query(n: string, id = 0xbeef, type = 1): Buffer {
  const q = Buffer.alloc(4);
  q.writeUInt16BE(type, 0);
  q.writeUInt16BE(1, 2);
  return Buffer.concat([Buffer.from([id >> 8, id & 0xff, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), name(n), q]);
}

function rr(type: number, ttl: number, data: Buffer): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(0xc00c, 0);
  h.writeUInt16BE(type, 2);
  h.writeUInt16BE(1, 4);
  h.writeUInt32BE(ttl, 6);
  h.writeUInt16BE(data.length, 10);
  return Buffer.concat([h, data]);
}

describe("DNS messages", () => {
  it("reads the question of a query, lower-cased", () => {
    const q = parseQuery(query("Deb.Example.ORG"));
    assert.deepEqual(q, { id: 0xbeef, name: "deb.example.org", type: 1, end: q.end });
    assert.equal(q.end, query("deb.example.org").length);
  });

  it("refuses malformed queries with an error, never a crash", () => {
    const good = query("a.b");
    for (let n = 0; n < good.length; n++) assert.throws(() => parseQuery(good.subarray(0, n)));
    const loop = Buffer.from(good);
    loop.writeUInt16BE(0xc00c, 12); // a name pointing at itself
    assert.throws(() => parseQuery(loop), /loop/);
    const response = Buffer.from(good);
    response[2] = 0x81;
    assert.throws(() => parseQuery(response), /not a query/);
  });

  it("reads the A and AAAA records of an answer with their TTLs, skipping other types", () => {
    const q = query("deb.example.org");
    const head = Buffer.from(q);
    head.writeUInt16BE(0x8180, 2);
    head.writeUInt16BE(5, 6);
    const v6 = Buffer.from("20010db8000000000000000000000001", "hex");
    const msg = Buffer.concat([
      head,
      rr(5, 60, name("cdn.example.net")),
      rr(1, 30, Buffer.from([192, 0, 2, 7])),
      rr(28, 20, v6),
      rr(28, 0x80000000, Buffer.from("0000000000000000000000000a000001", "hex")),
      rr(16, 30, Buffer.from("text")),
    ]);
    assert.deepEqual(answerAddressRecords(msg), [
      { family: 4, address: "192.0.2.7", key: Buffer.from([192, 0, 2, 7]), ttl: 30 },
      { family: 6, address: "2001:db8::1", key: v6, ttl: 20 },
      { family: 6, address: "::10.0.0.1", key: Buffer.from("0000000000000000000000000a000001", "hex"), ttl: 0 },
    ]);
    assert.throws(() => answerAddressRecords(msg.subarray(0, msg.length - 20)));
    // An AAAA with a wrong length is skipped, not misread.
    const odd = Buffer.concat([head.subarray(0, 6), Buffer.from([0, 1]), head.subarray(8), rr(28, 30, Buffer.alloc(4))]);
    assert.deepEqual(answerAddressRecords(odd), []);
  });

  it("REFUSED echoes id, RD and the question", () => {
    const q = query("x.org", 0x1234);
    const r = errorResponse(q, RCODE_REFUSED, parseQuery(q).end);
    assert.equal(r.readUInt16BE(0), 0x1234);
    assert.equal(r.readUInt16BE(2), 0x8185);
    assert.equal(r.readUInt16BE(4), 1);
    assert.equal(r.length, q.length);
  });

  it("names match exactly; *.suffix matches names under it, not the suffix itself", () => {
    const p = ["deb.example.org", "*.pkg.example.org"];
    assert.ok(nameAllowed("deb.example.org", p));
    assert.ok(nameAllowed("a.pkg.example.org", p));
    assert.ok(nameAllowed("a.b.pkg.example.org", p));
    assert.ok(!nameAllowed("pkg.example.org", p));
    assert.ok(!nameAllowed("xpkg.example.org", p));
    assert.ok(!nameAllowed("deb.example.org.evil", p));
    assert.ok(!nameAllowed("a.deb.example.org", p));
  });

  it("the default upstream is the first IPv4 nameserver of resolv.conf", () => {
    assert.equal(resolvConfUpstream("# x\nsearch a\nnameserver ::1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n"), "10.0.0.2");
    assert.equal(resolvConfUpstream("search a\n"), undefined);
  });
});
