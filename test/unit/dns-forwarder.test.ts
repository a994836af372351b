// The DNS forwarder's TCP side on loopback, against the test DNS server: RFC 7766 framing,
// pipelining, and the bounds a hostile guest meets. Kernel admission is the integration
// test's (dns.test); here `admit` records what the forwarder would add.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import { DnsForwarder, TCP_LIMITS } from "../../src/daemon/dns-forwarder.js";
import type { Admission } from "../../src/dataplane/ruleset.js";
import { serve } from "../support/dns-server.js";

function query(name: string, id: number, type = 1): Buffer {
  return Buffer.concat([
    Buffer.from([id >> 8, id & 0xff, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
    ...name.split(".").map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])),
    Buffer.from([0, 0, type, 0, 1]),
  ]);
}

function framed(msg: Buffer): Buffer {
  const len = Buffer.alloc(2);
  len.writeUInt16BE(msg.length, 0);
  return Buffer.concat([len, msg]);
}

/** Reads `n` framed messages from `sock` (or fewer if it closes first). */
function readMessages(sock: net.Socket, n: number): Promise<Buffer[]> {
  return new Promise((resolve) => {
    const out: Buffer[] = [];
    let buf = Buffer.alloc(0);
    const done = () => resolve(out);
    sock.on("data", (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        out.push(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        buf = buf.subarray(2 + buf.readUInt16BE(0));
        if (out.length === n) return done();
      }
    });
    sock.on("close", done);
  });
}

function closed(sock: net.Socket): Promise<number> {
  const start = Date.now();
  return new Promise((resolve) => {
    sock.on("error", () => undefined);
    sock.on("close", () => resolve(Date.now() - start));
  });
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1", () => resolve(s));
    s.on("error", reject);
  });
}

describe("DNS forwarder over TCP", () => {
  const big = Array.from({ length: 60 }, (_, i) => `192.0.2.${i + 1}`);
  const records = { "deb.example.test": ["192.0.2.200", "2001:db8::7"], "big.example.test": big, "blocked.example.test": ["192.0.2.99"] };
  let upstream: { port: number; close(): void };
  let fwd: DnsForwarder;
  let port: number;
  const admitted: Admission[][] = [];
  const saved = { ...TCP_LIMITS };

  before(async () => {
    upstream = await serve("127.0.0.1", records, 30, 0, () => undefined);
    fwd = new DnsForwarder({
      upstream: "127.0.0.1",
      upstreamPort: upstream.port,
      slotOf: (a) => (a === "127.0.0.1" ? 0 : undefined),
      policyOf: () => ({ leaseId: "l1", domains: ["deb.example.test", "big.example.test"], allow: [] }),
      admit: (_slot, a) => admitted.push(a),
      log: () => undefined,
    });
    port = await fwd.start();
  });

  after(() => {
    Object.assign(TCP_LIMITS, saved);
    fwd?.close();
    upstream?.close();
  });

  it("answers several pipelined queries on one connection, with the guest's ids, and admits A and AAAA", async () => {
    admitted.length = 0;
    const sock = await connect(port);
    const answers = readMessages(sock, 3);
    sock.write(Buffer.concat([framed(query("deb.example.test", 0x1111)), framed(query("deb.example.test", 0x2222, 28)), framed(query("blocked.example.test", 0x3333))]));
    const got = await answers;
    sock.destroy();
    assert.equal(got.length, 3);
    const byId = new Map(got.map((m) => [m.readUInt16BE(0), m]));
    assert.equal(byId.get(0x1111)!.readUInt16BE(6), 1, "one A record");
    assert.equal(byId.get(0x2222)!.readUInt16BE(6), 1, "one AAAA record");
    assert.equal(byId.get(0x3333)![3]! & 15, 5, "a name not allowed is REFUSED");
    const keys = admitted.flat().map((a) => a.key.toString("hex"));
    assert.deepEqual(keys.sort(), ["20010db8000000000000000000000007", "c00002c8"]);
  });

  it("a query split into single bytes is still one query; an answer too big for UDP comes whole", async () => {
    admitted.length = 0;
    const sock = await connect(port);
    const answers = readMessages(sock, 1);
    const bytes = framed(query("big.example.test", 0x4444));
    for (const b of bytes) {
      sock.write(Buffer.from([b]));
      await new Promise((r) => setImmediate(r));
    }
    const [m] = await answers;
    sock.destroy();
    assert.equal(m!.readUInt16BE(6), 60);
    assert.equal(m!.length > 512, true);
    assert.equal(admitted.flat().length, 60);
  });

  it("a length prefix beyond the query bound closes the connection", async () => {
    const sock = await connect(port);
    const ms = closed(sock);
    sock.write(Buffer.from([0xff, 0xff, 0]));
    assert.ok((await ms) < 2000);
  });

  it("limits connections per slot; an idle connection and a query dribbled too slowly are closed", async () => {
    TCP_LIMITS.idleMs = 300;
    TCP_LIMITS.queryMs = 500;
    try {
      const socks = await Promise.all(Array.from({ length: TCP_LIMITS.perSlot + 2 }, () => connect(port)));
      const ends = socks.map((s) => closed(s));
      // The extra connections are closed at once; the others when idle.
      const first = await Promise.race(ends);
      assert.ok(first < 250, `an over-limit connection closed after ${first} ms`);
      const times = await Promise.all(ends);
      assert.equal(times.filter((t) => t >= 250).length, TCP_LIMITS.perSlot, `close times ${times.join(", ")}`);
      assert.equal(fwd.tcpSessions, 0);

      // Keeps sending a byte every 100 ms (never idle) but never completes the query.
      const slow = await connect(port);
      const slowEnd = closed(slow);
      const dribble = setInterval(() => slow.writable && slow.write(Buffer.from([0])), 100);
      slow.write(Buffer.from([0, 200]));
      const t = await slowEnd;
      clearInterval(dribble);
      assert.ok(t >= 400 && t < 3000, `a dribbling query was cut after ${t} ms`);
    } finally {
      Object.assign(TCP_LIMITS, saved);
    }
  });

  it("a guest that sends its queries and FIN still gets every answer", async () => {
    const sock = await connect(port);
    const answers = readMessages(sock, 2);
    sock.end(Buffer.concat([framed(query("deb.example.test", 1)), framed(query("deb.example.test", 2))]));
    assert.equal((await answers).length, 2);
  });

  it("pauses reading beyond the in-flight bound and still answers all", async () => {
    const n = TCP_LIMITS.inFlight * 3;
    const sock = await connect(port);
    const answers = readMessages(sock, n);
    sock.write(Buffer.concat(Array.from({ length: n }, (_, i) => framed(query("deb.example.test", i)))));
    const got = await answers;
    sock.destroy();
    assert.equal(got.length, n);
    assert.deepEqual(new Set(got.map((m) => m.readUInt16BE(0))), new Set(Array.from({ length: n }, (_, i) => i)));
  });
});
