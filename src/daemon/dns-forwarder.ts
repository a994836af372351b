// The DNS forwarder behind `egress.allowDomains`. One UDP socket and one TCP listener, on
// the same port, for every slot: the root table redirects a guest's port 53 on its
// guest.dns (the slot's host link address) here, and the source address (the slot's outside
// address, after the eBPF NAT) names the slot. Queries for the lease's allowed names go to
// the upstream; the A and AAAA addresses of the answer are admitted into the slot's
// egress_admit / egress_admit6 sets with a kernel timeout of TTL plus a grace, so they
// expire without us and outlive a crash or a handover. Other names, and slots whose lease
// names none, get REFUSED.
// Upstream transport mirrors the guest's: a query over TCP goes upstream over TCP, one over
// UDP over UDP, and a truncated UDP answer (TC) goes back as it is (its addresses admitted):
// the guest's resolver then asks again over TCP, which it must do anyway for an answer that
// does not fit its UDP buffer; retrying upstream over TCP here would fetch an answer the
// guest could not take over UDP.
// Not covered: addresses the guest knows without asking (hard-coded, or resolved by a DNS
// over HTTPS/TLS server it can reach).
import * as dgram from "node:dgram";
import * as net from "node:net";
import { RCODE_FORMERR, RCODE_REFUSED, RCODE_SERVFAIL, answerAddressRecords, errorResponse, nameAllowed, parseQuery, type AddressRecord } from "../core/dnsmsg.js";
import type { Admission } from "../dataplane/ruleset.js";
import { cidrContains, ipToInt, parseCidr, type Cidr } from "../dataplane/topology.js";

/** Seconds an admission outlives its answer's TTL: a guest connects just after its resolver caches. */
export const GRACE_SECONDS = 10;
/** An admission lasts at most this long however large the TTL (re-asking renews it). */
export const MAX_TTL_SECONDS = 3600;
const UPSTREAM_TIMEOUT_MS = 5000;

/**
 * Bounds on DNS over TCP (RFC 7766), so that a hostile guest cannot exhaust the daemon:
 * connections per slot and in all, the size of a query (a guest's are small; a longer
 * length prefix closes the connection), queries in flight per connection (reading pauses
 * beyond, and TCP flow control pushes back on the guest), bytes of answers waiting for a
 * slow reader, and time: an idle connection, or a query not complete a while after its
 * first byte, is closed.
 */
export const TCP_LIMITS = {
  perSlot: 4,
  total: 1024,
  maxQueryBytes: 4096,
  inFlight: 8,
  maxQueuedAnswerBytes: 128 * 1024,
  idleMs: 10_000,
  queryMs: 5_000,
};

export interface SlotPolicy {
  /** The lease: admissions belong to it, and are forgotten when another one holds the slot. */
  leaseId: string;
  domains: readonly string[];
  /** The profile's own allow-list: an address inside needs no admission. */
  allow: readonly string[];
}

export interface DnsForwarderDeps {
  upstream: string;
  upstreamPort?: number;
  /** The slot whose outside address this is, if any. */
  slotOf(address: string): number | undefined;
  policyOf(slot: number): SlotPolicy | undefined;
  /** Adds (or renews) admissions in the slot's sets; the kernel removes each after its timeout. */
  admit(slot: number, admissions: Admission[]): void;
  log(msg: string): void;
  now?: () => number;
}

interface Pending {
  slot: number;
  leaseId: string;
  id: number;
  address: string;
  port: number;
  sent: number;
}

interface Admissions {
  leaseId: string;
  /** Address -> when it expires (ms). */
  until: Map<string, number>;
}

/** A guest's TCP connection and the daemon's own to the upstream that serves it. */
interface TcpSession {
  slot: number;
  guest: net.Socket;
  upstream: net.Socket | undefined;
  /** Bytes read from the guest and not yet a whole query. */
  buf: Buffer;
  /** When the first byte of the query being read arrived. */
  partialSince: number | undefined;
  /** Upstream id -> the guest's id and lease, for answers in flight (ids are this session's own). */
  inFlight: Map<number, { id: number; leaseId: string; sent: number }>;
  nextId: number;
  /** Upstream bytes not yet a whole answer. */
  upBuf: Buffer;
}

export class DnsForwarder {
  private guests = this.guestSocket();
  private readonly upstream = dgram.createSocket("udp4");
  // Half-open: a guest may send its queries and FIN, and still get the answers.
  private readonly tcp = net.createServer({ allowHalfOpen: true });
  private readonly sessions = new Set<TcpSession>();
  private readonly sessionsPerSlot = new Map<number, number>();
  private readonly pending = new Map<number, Pending>();
  private readonly admissions = new Map<number, Admissions>();
  private nextId = Math.floor(Math.random() * 0x10000);
  private sweeper: NodeJS.Timeout | undefined;
  private readonly now: () => number;
  readonly stats = { queries: 0, refused: 0, forwarded: 0, admitted: 0, tcpConnections: 0, tcpRejected: 0 };

  constructor(private readonly deps: DnsForwarderDeps) {
    this.now = deps.now ?? (() => Date.now());
  }

  /**
   * Binds the guests' UDP socket and TCP listener on one port (an ephemeral one unless
   * given: the root table's one redirect rule names it for both) and the upstream socket;
   * returns the port.
   */
  async start(port = 0): Promise<number> {
    this.upstream.on("message", (msg) => this.onAnswer(msg));
    this.upstream.on("error", (err) => this.deps.log(`dns upstream: ${err.message}`));
    this.tcp.on("connection", (sock) => this.onConnection(sock));
    this.tcp.maxConnections = TCP_LIMITS.total;
    for (let attempt = 0; ; attempt++) {
      await new Promise<void>((resolve, reject) => {
        this.guests.once("error", reject);
        this.guests.bind(port, "0.0.0.0", () => {
          this.guests.off("error", reject);
          resolve();
        });
      });
      const bound = this.guests.address().port;
      try {
        await new Promise<void>((resolve, reject) => {
          this.tcp.once("error", reject);
          this.tcp.listen({ port: bound, host: "0.0.0.0", backlog: 128 }, () => {
            this.tcp.off("error", reject);
            resolve();
          });
        });
        break;
      } catch (err) {
        // The ephemeral UDP port is taken for TCP: try another (a given port must be free for both).
        if (port !== 0 || attempt >= 20 || (err as NodeJS.ErrnoException).code !== "EADDRINUSE") throw err;
        await new Promise<void>((resolve) => this.guests.close(() => resolve()));
        this.guests = this.guestSocket();
      }
    }
    this.tcp.on("error", (err) => this.deps.log(`dns tcp: ${err.message}`));
    await new Promise<void>((resolve) => this.upstream.bind(0, resolve));
    this.sweeper = setInterval(() => this.sweep(), 1000);
    this.sweeper.unref();
    return this.guests.address().port;
  }

  private guestSocket(): dgram.Socket {
    const sock = dgram.createSocket("udp4");
    sock.on("message", (msg, rinfo) => this.onQuery(msg, rinfo));
    // A bad datagram or an ICMP error must never take the daemon down.
    sock.on("error", (err) => this.deps.log(`dns: ${err.message}`));
    return sock;
  }

  close(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.guests.close();
    this.upstream.close();
    this.tcp.close();
    for (const s of this.sessions) this.endSession(s);
  }

  /** Open TCP sessions, for tests and metrics. */
  get tcpSessions(): number {
    return this.sessions.size;
  }

  /**
   * What to do with a guest's query from `address`: nothing (not a slot), an immediate
   * answer (FORMERR, REFUSED), or forward it upstream for this slot and lease.
   */
  private classify(msg: Buffer, slot: number): { reply: Buffer } | { forward: { leaseId: string; id: number } } {
    this.stats.queries++;
    const policy = this.deps.policyOf(slot);
    let q;
    try {
      q = parseQuery(msg);
    } catch {
      return { reply: errorResponse(msg, RCODE_FORMERR) };
    }
    if (!policy || !nameAllowed(q.name, policy.domains)) {
      this.stats.refused++;
      return { reply: errorResponse(msg, RCODE_REFUSED, q.end) };
    }
    this.stats.forwarded++;
    return { forward: { leaseId: policy.leaseId, id: q.id } };
  }

  /** The upstream's answer for the guest (its id back), after admitting its addresses; undefined when the lease is gone or the answer unreadable. */
  private answered(slot: number, leaseId: string, guestId: number, msg: Buffer): Buffer | undefined {
    const policy = this.deps.policyOf(slot);
    // The lease ended while the upstream answered: nothing to admit, nobody to answer.
    if (!policy || policy.leaseId !== leaseId) return undefined;
    let records;
    try {
      records = answerAddressRecords(msg);
    } catch (err) {
      this.deps.log(`dns: unreadable answer from ${this.deps.upstream}: ${(err as Error).message}`);
      return undefined;
    }
    this.admit(slot, policy, records);
    const out = Buffer.from(msg);
    out.writeUInt16BE(guestId, 0);
    return out;
  }

  private onQuery(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const slot = this.deps.slotOf(rinfo.address);
    if (slot === undefined) return; // not a slot: the root table lets only slots in
    const c = this.classify(msg, slot);
    if ("reply" in c) return this.reply(c.reply, rinfo);
    const id = this.allocateId();
    this.pending.set(id, { slot, leaseId: c.forward.leaseId, id: c.forward.id, address: rinfo.address, port: rinfo.port, sent: this.now() });
    const out = Buffer.from(msg);
    out.writeUInt16BE(id, 0);
    this.upstream.send(out, this.deps.upstreamPort ?? 53, this.deps.upstream);
  }

  private onAnswer(msg: Buffer): void {
    if (msg.length < 12) return;
    const p = this.pending.get(msg.readUInt16BE(0));
    if (!p) return;
    this.pending.delete(msg.readUInt16BE(0));
    const out = this.answered(p.slot, p.leaseId, p.id, msg);
    if (out) this.reply(out, p);
  }

  // ───────────── DNS over TCP (RFC 7766: 2-byte length, several queries per connection) ─────────────

  private onConnection(guest: net.Socket): void {
    const slot = guest.remoteAddress === undefined ? undefined : this.deps.slotOf(guest.remoteAddress.replace(/^::ffff:/, ""));
    const count = slot === undefined ? 0 : (this.sessionsPerSlot.get(slot) ?? 0);
    if (slot === undefined || count >= TCP_LIMITS.perSlot) {
      this.stats.tcpRejected++;
      guest.destroy();
      return;
    }
    this.stats.tcpConnections++;
    this.sessionsPerSlot.set(slot, count + 1);
    const s: TcpSession = { slot, guest, upstream: undefined, buf: Buffer.alloc(0), partialSince: undefined, inFlight: new Map(), nextId: 0, upBuf: Buffer.alloc(0) };
    this.sessions.add(s);
    guest.setNoDelay(true);
    guest.setTimeout(TCP_LIMITS.idleMs, () => this.endSession(s));
    guest.on("data", (chunk) => this.onGuestData(s, chunk));
    guest.on("error", () => this.endSession(s));
    guest.on("close", () => this.endSession(s));
    guest.on("end", () => {
      // The guest sent all its queries: answer those in flight, then close.
      if (s.inFlight.size === 0) this.endSession(s);
    });
  }

  private onGuestData(s: TcpSession, chunk: Buffer): void {
    s.buf = s.buf.length === 0 ? chunk : Buffer.concat([s.buf, chunk]);
    while (s.buf.length >= 2) {
      const len = s.buf.readUInt16BE(0);
      if (len > TCP_LIMITS.maxQueryBytes) return this.endSession(s);
      if (s.buf.length < 2 + len) break;
      const msg = Buffer.from(s.buf.subarray(2, 2 + len));
      s.buf = s.buf.subarray(2 + len);
      this.onTcpQuery(s, msg);
      if (s.guest.destroyed) return;
    }
    s.partialSince = s.buf.length === 0 ? undefined : (s.partialSince ?? this.now());
  }

  private onTcpQuery(s: TcpSession, msg: Buffer): void {
    const c = this.classify(msg, s.slot);
    if ("reply" in c) return this.tcpReply(s, c.reply);
    const id = s.nextId;
    s.nextId = (s.nextId + 1) & 0xffff;
    s.inFlight.set(id, { id: c.forward.id, leaseId: c.forward.leaseId, sent: this.now() });
    // Pipelining is bounded: stop reading; the guest's TCP window closes behind it.
    if (s.inFlight.size >= TCP_LIMITS.inFlight) s.guest.pause();
    const out = Buffer.alloc(2 + msg.length);
    out.writeUInt16BE(msg.length, 0);
    msg.copy(out, 2);
    out.writeUInt16BE(id, 2);
    this.upstreamOf(s).write(out);
  }

  /** The session's own connection to the upstream, opened on its first forwarded query. */
  private upstreamOf(s: TcpSession): net.Socket {
    if (s.upstream) return s.upstream;
    const up = net.connect({ host: this.deps.upstream, port: this.deps.upstreamPort ?? 53 });
    up.setNoDelay(true);
    up.on("data", (chunk) => this.onUpstreamData(s, chunk));
    up.on("error", (err) => {
      this.deps.log(`dns tcp upstream: ${err.message}`);
      this.failInFlight(s);
    });
    up.on("close", () => {
      if (s.upstream === up) s.upstream = undefined;
      this.failInFlight(s);
    });
    s.upstream = up;
    return up;
  }

  private onUpstreamData(s: TcpSession, chunk: Buffer): void {
    s.upBuf = s.upBuf.length === 0 ? chunk : Buffer.concat([s.upBuf, chunk]);
    while (s.upBuf.length >= 2 && s.upBuf.length >= 2 + s.upBuf.readUInt16BE(0)) {
      const msg = s.upBuf.subarray(2, 2 + s.upBuf.readUInt16BE(0));
      s.upBuf = s.upBuf.subarray(2 + msg.length);
      if (msg.length < 12) continue;
      const p = s.inFlight.get(msg.readUInt16BE(0));
      if (!p) continue;
      s.inFlight.delete(msg.readUInt16BE(0));
      const out = this.answered(s.slot, p.leaseId, p.id, msg);
      if (out) this.tcpReply(s, out);
      this.afterAnswer(s);
    }
  }

  /** The upstream connection failed: every query in flight gets SERVFAIL (the guest may retry). */
  private failInFlight(s: TcpSession): void {
    for (const [, p] of s.inFlight) {
      const fail = Buffer.alloc(12);
      fail.writeUInt16BE(p.id, 0);
      fail.writeUInt16BE(0x8180 | RCODE_SERVFAIL, 2);
      this.tcpReply(s, fail);
    }
    s.inFlight.clear();
    s.upBuf = Buffer.alloc(0);
    this.afterAnswer(s);
  }

  private afterAnswer(s: TcpSession): void {
    if (s.guest.destroyed) return;
    if (s.inFlight.size < TCP_LIMITS.inFlight && s.guest.isPaused()) s.guest.resume();
    if (s.inFlight.size === 0 && s.guest.readableEnded) this.endSession(s);
  }

  private tcpReply(s: TcpSession, msg: Buffer): void {
    if (s.guest.destroyed) return;
    // A guest that does not read its answers gets no more: it would hold our memory.
    if (s.guest.writableLength + msg.length > TCP_LIMITS.maxQueuedAnswerBytes) return this.endSession(s);
    const len = Buffer.alloc(2);
    len.writeUInt16BE(msg.length, 0);
    s.guest.write(Buffer.concat([len, msg]));
  }

  private endSession(s: TcpSession): void {
    if (!this.sessions.delete(s)) return;
    const n = (this.sessionsPerSlot.get(s.slot) ?? 1) - 1;
    if (n > 0) this.sessionsPerSlot.set(s.slot, n);
    else this.sessionsPerSlot.delete(s.slot);
    s.inFlight.clear();
    s.guest.destroy();
    s.upstream?.destroy();
  }

  /**
   * Admits before the guest sees the answer, so its first packet to the address passes. The
   * kernel removes each admission when its timeout runs out (the sets' `timeout` flag): no
   * timer here, and admissions outlive this process (crash, handover). `until` only keeps
   * a later answer with a shorter TTL from cutting an admission short; a new daemon starts
   * without it, so there the latest answer's TTL holds.
   */
  private admit(slot: number, policy: SlotPolicy, records: readonly AddressRecord[]): void {
    let adm = this.admissions.get(slot);
    if (adm && adm.leaseId !== policy.leaseId) {
      // A new lease on the slot: the scrub emptied the sets already.
      this.admissions.delete(slot);
      adm = undefined;
    }
    const allow: Cidr[] = policy.allow.map((c) => parseCidr(c));
    const now = this.now();
    const fresh = new Map<string, Admission>();
    for (const r of records) {
      if (r.family === 4 && allow.some((c) => cidrContains(c, ipToInt(r.address)))) continue;
      const timeoutMs = (Math.min(r.ttl, MAX_TTL_SECONDS) + GRACE_SECONDS) * 1000;
      adm ??= { leaseId: policy.leaseId, until: new Map() };
      const had = adm.until.get(r.address);
      if (had !== undefined && had >= now + timeoutMs) continue;
      adm.until.set(r.address, now + timeoutMs);
      fresh.set(r.address, { key: r.key, timeoutMs: Math.max(timeoutMs, fresh.get(r.address)?.timeoutMs ?? 0) });
    }
    if (adm) this.admissions.set(slot, adm);
    if (fresh.size === 0) return;
    try {
      this.deps.admit(slot, [...fresh.values()]);
      this.stats.admitted += fresh.size;
    } catch (err) {
      for (const a of fresh.keys()) adm!.until.delete(a);
      this.deps.log(`dns: slot ${slot}: could not admit ${[...fresh.keys()].join(", ")}: ${(err as Error).message}`);
    }
  }

  /** Forgets a slot's admissions (its lease ended; the scrub empties the sets). */
  forget(slot: number): void {
    this.admissions.delete(slot);
  }

  /** Addresses this process admitted on a slot and believes unexpired, for tests and metrics. */
  admitted(slot: number): string[] {
    const now = this.now();
    return [...(this.admissions.get(slot)?.until ?? [])].filter(([, until]) => until > now).map(([a]) => a);
  }

  /** Times out unanswered queries and forgets expired admissions (the kernel removed them). */
  sweep(): void {
    const now = this.now();
    for (const [id, p] of this.pending) if (now - p.sent > UPSTREAM_TIMEOUT_MS) this.pending.delete(id);
    for (const s of this.sessions) {
      // A query dribbled in byte by byte, or an upstream that does not answer, ends the session.
      const stale = [...s.inFlight.values()].some((p) => now - p.sent > UPSTREAM_TIMEOUT_MS);
      if (stale || (s.partialSince !== undefined && now - s.partialSince > TCP_LIMITS.queryMs)) this.endSession(s);
    }
    for (const [slot, adm] of this.admissions) {
      const policy = this.deps.policyOf(slot);
      if (!policy || policy.leaseId !== adm.leaseId) {
        this.admissions.delete(slot);
        continue;
      }
      for (const [a, until] of adm.until) if (until <= now) adm.until.delete(a);
      if (adm.until.size === 0) this.admissions.delete(slot);
    }
  }

  private allocateId(): number {
    for (let i = 0; i < 0x10000; i++) {
      this.nextId = (this.nextId + 1) & 0xffff;
      if (!this.pending.has(this.nextId)) return this.nextId;
    }
    // 65,536 queries in flight: the oldest is dropped.
    const oldest = this.pending.keys().next().value!;
    this.pending.delete(oldest);
    return oldest;
  }

  private reply(msg: Buffer, to: { address: string; port: number }): void {
    this.guests.send(msg, to.port, to.address);
  }
}
