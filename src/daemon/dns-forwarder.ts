// The DNS forwarder behind `egress.allowDomains`. One UDP socket for every slot: the root
// table redirects a guest's query to its guest.dns (the slot's host link address) port 53
// here, and the source address (the slot's outside address, after the eBPF NAT) names the
// slot. Queries for the lease's allowed names go to the upstream; the A and AAAA addresses
// of the answer are admitted into the slot's egress_admit / egress_admit6 sets with a
// kernel timeout of TTL plus a grace, so they expire without us and outlive a crash or a
// handover. Other names, and slots whose lease names none, get REFUSED.
// Not covered: addresses the guest knows without asking (hard-coded, or resolved by a DNS
// over HTTPS/TLS server it can reach), DNS over TCP.
import * as dgram from "node:dgram";
import { RCODE_FORMERR, RCODE_REFUSED, answerAddressRecords, errorResponse, nameAllowed, parseQuery, type AddressRecord } from "../core/dnsmsg.js";
import type { Admission } from "../dataplane/ruleset.js";
import { cidrContains, ipToInt, parseCidr, type Cidr } from "../dataplane/topology.js";

/** Seconds an admission outlives its answer's TTL: a guest connects just after its resolver caches. */
export const GRACE_SECONDS = 10;
/** An admission lasts at most this long however large the TTL (re-asking renews it). */
export const MAX_TTL_SECONDS = 3600;
const UPSTREAM_TIMEOUT_MS = 5000;

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

export class DnsForwarder {
  private readonly guests = dgram.createSocket("udp4");
  private readonly upstream = dgram.createSocket("udp4");
  private readonly pending = new Map<number, Pending>();
  private readonly admissions = new Map<number, Admissions>();
  private nextId = Math.floor(Math.random() * 0x10000);
  private sweeper: NodeJS.Timeout | undefined;
  private readonly now: () => number;
  readonly stats = { queries: 0, refused: 0, forwarded: 0, admitted: 0 };

  constructor(private readonly deps: DnsForwarderDeps) {
    this.now = deps.now ?? (() => Date.now());
  }

  /** Binds the guests' socket (an ephemeral port unless given) and the upstream one; returns the port. */
  async start(port = 0): Promise<number> {
    this.guests.on("message", (msg, rinfo) => this.onQuery(msg, rinfo));
    this.upstream.on("message", (msg) => this.onAnswer(msg));
    // A bad datagram or an ICMP error must never take the daemon down.
    this.guests.on("error", (err) => this.deps.log(`dns: ${err.message}`));
    this.upstream.on("error", (err) => this.deps.log(`dns upstream: ${err.message}`));
    await new Promise<void>((resolve, reject) => {
      this.guests.once("error", reject);
      this.guests.bind(port, "0.0.0.0", () => resolve());
    });
    await new Promise<void>((resolve) => this.upstream.bind(0, resolve));
    this.sweeper = setInterval(() => this.sweep(), 1000);
    this.sweeper.unref();
    return this.guests.address().port;
  }

  close(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.guests.close();
    this.upstream.close();
  }

  private onQuery(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    this.stats.queries++;
    const slot = this.deps.slotOf(rinfo.address);
    if (slot === undefined) return; // not a slot: the root table lets only slots in
    const policy = this.deps.policyOf(slot);
    let q;
    try {
      q = parseQuery(msg);
    } catch {
      return this.reply(errorResponse(msg, RCODE_FORMERR), rinfo);
    }
    if (!policy || !nameAllowed(q.name, policy.domains)) {
      this.stats.refused++;
      return this.reply(errorResponse(msg, RCODE_REFUSED, q.end), rinfo);
    }
    const id = this.allocateId();
    this.pending.set(id, { slot, leaseId: policy.leaseId, id: q.id, address: rinfo.address, port: rinfo.port, sent: this.now() });
    const out = Buffer.from(msg);
    out.writeUInt16BE(id, 0);
    this.stats.forwarded++;
    this.upstream.send(out, this.deps.upstreamPort ?? 53, this.deps.upstream);
  }

  private onAnswer(msg: Buffer): void {
    if (msg.length < 12) return;
    const p = this.pending.get(msg.readUInt16BE(0));
    if (!p) return;
    this.pending.delete(msg.readUInt16BE(0));
    const policy = this.deps.policyOf(p.slot);
    // The lease ended while the upstream answered: nothing to admit, nobody to answer.
    if (!policy || policy.leaseId !== p.leaseId) return;
    let records;
    try {
      records = answerAddressRecords(msg);
    } catch (err) {
      this.deps.log(`dns: unreadable answer from ${this.deps.upstream}: ${(err as Error).message}`);
      return;
    }
    this.admit(p.slot, policy, records);
    const out = Buffer.from(msg);
    out.writeUInt16BE(p.id, 0);
    this.reply(out, p);
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
