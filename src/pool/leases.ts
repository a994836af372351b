// Lease lifecycle: grant, renew, release, expiry and owner death. Holds the leases in
// memory (by id and by owner pid); the store is written before anything is acknowledged.
import { randomBytes } from "node:crypto";
import { NetslotError } from "../core/errors.js";
import { faultPoint } from "../core/faults.js";
import type { AuditEvent, LeaseRequest } from "../core/types.js";
import type { SlotDataplane } from "../dataplane/dataplane.js";
import { tenantCidrConflict } from "../dataplane/topology.js";
import { SlotNotFreeError, type EndCause, type LeaseStore, type StoredLease } from "../store/store.js";
import type { Quotas } from "../tenancy/quotas.js";
import type { SlotTable } from "./allocation.js";
import { OwnerWatcher } from "./owners.js";
import type { PoolMetrics } from "./pool-metrics.js";
import type { ScrubQueue } from "./scrubs.js";
import type { ProfileCatalog } from "../core/profiles.js";
import type { Logger } from "../core/log.js";

export type { EndCause } from "../store/store.js";

export interface LeaseLifecycleDeps {
  slots: SlotTable;
  scrubs: ScrubQueue;
  store: Pick<LeaseStore, "insertLease" | "renewLease" | "deleteLease" | "endedLease">;
  dataplane: Pick<SlotDataplane, "setTenant" | "setEgressPolicy" | "setBandwidth" | "setIpv6" | "options">;
  profiles: ProfileCatalog;
  metrics: Pick<PoolMetrics, "leasesTotal" | "releasesTotal" | "acquireSeconds" | "releaseSeconds">;
  logger: Logger;
  audit: (event: AuditEvent) => void;
  /** Per-consumer max and reservations; none: any consumer may take any free slot. */
  quotas?: Quotas;
}

export class LeaseLifecycle {
  private readonly leases = new Map<string, StoredLease>();
  private readonly leasesByOwner = new Map<number, Set<string>>();
  /** The lease on each slot: the DNS forwarder asks per query. */
  private readonly bySlot = new Map<number, StoredLease>();
  /** Leases held per consumer, for quotas and GET /v1/pool. */
  private readonly byConsumer = new Map<string, number>();
  readonly leasedBy = (name: string): number => this.byConsumer.get(name) ?? 0;
  private owners = new OwnerWatcher((pid) => this.ownerExited(pid));
  /** Expiry and owner watching run once boot is done (`start`). */
  private started = false;
  private closed = false;
  private expiryTimer: NodeJS.Timeout | undefined;
  /** Lease ends (expiry, owner exit) the store refused; retried every second. */
  private readonly endRetries = new Map<string, "expired" | "owner_exited">();
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: LeaseLifecycleDeps) {}

  // ── grant, renew, release ─────────────────────────────────────────────────────────

  /** Picks a free slot and leases it; the lease is durable before this returns. */
  grant(consumer: string, request: LeaseRequest): StoredLease {
    const start = performance.now();
    const { slots, store, dataplane, scrubs } = this.deps;
    if (request.network && dataplane.options.vtepRemote === undefined) {
      throw new NetslotError("invalid_request", "this daemon has no --vtep-remote, so it cannot attach tenant networks", { field: "/network" });
    }
    const conflict = request.network && tenantCidrConflict(request.network.cidr, dataplane.options.linkCidr, dataplane.options.vtepRemote);
    if (conflict) throw new NetslotError("invalid_request", `/network/cidr ${conflict}`, { field: "/network/cidr" });
    this.deps.profiles.check(consumer, request.profile);
    // Before the owner is watched: a refusal leaves nothing to undo.
    this.deps.quotas?.admit(consumer, slots.freeCount, this.leasedBy);
    if (request.ownerPid !== undefined && !this.owners.watch(request.ownerPid)) {
      throw new NetslotError("invalid_request", `process ${request.ownerPid} does not exist`, { field: "/ownerPid" });
    }
    const now = new Date();
    let lease: StoredLease;
    let index: number;
    for (;;) {
      const next = slots.take();
      if (next === undefined) {
        this.unwatchIfUnused(request.ownerPid);
        throw new NetslotError("pool_exhausted", `all ${slots.size} slots are leased, scrubbing or quarantined`, { retryAfter: 1 });
      }
      index = next;
      lease = {
        id: newLeaseId(),
        consumer,
        slotIndex: index,
        labels: request.labels ?? {},
        ...(request.network ? { network: request.network } : {}),
        ...(request.profile !== undefined ? { profile: request.profile } : {}),
        ...(request.ownerPid !== undefined ? { ownerPid: request.ownerPid, ownerStart: this.owners.startTimeOf(request.ownerPid) } : {}),
        createdAt: now.toISOString(),
        expiresAt: request.ttlSeconds !== undefined ? new Date(now.getTime() + request.ttlSeconds * 1000).toISOString() : null,
        ...(request.ttlSeconds !== undefined ? { ttlSeconds: request.ttlSeconds } : {}),
      };
      try {
        store.insertLease(lease);
        faultPoint("acquire.after-store");
        break;
      } catch (err) {
        if (err instanceof SlotNotFreeError) {
          // Memory and store disagree: trust the store, leave this slot out and take another.
          this.deps.logger.warn({ slot: index }, `slot ${index} is free in memory but ${err.state ?? "unknown"} in the store; skipped`);
          if (err.state === "quarantined") slots.markQuarantined(index);
          else {
            slots.markScrubbing(index);
            scrubs.schedule(index, undefined, performance.now());
          }
          continue;
        }
        slots.putBack(index);
        this.unwatchIfUnused(request.ownerPid);
        throw err;
      }
    }
    if (request.network) {
      try {
        dataplane.setTenant(index, request.network);
        faultPoint("acquire.after-tenant");
      } catch (err) {
        // Undo: the lease was never acknowledged.
        store.deleteLease(lease.id);
        slots.markScrubbing(index);
        scrubs.schedule(index, request.network, performance.now());
        throw new NetslotError("internal", `could not attach the tenant network: ${(err as Error).message}`, { cause: err });
      }
    }
    const policy = this.deps.profiles.policy(request.profile);
    const bandwidth = this.deps.profiles.bandwidth(request.profile);
    const ipv6 = this.deps.profiles.ipv6(request.profile);
    if (policy || bandwidth || ipv6) {
      try {
        if (policy) dataplane.setEgressPolicy(index, policy);
        if (bandwidth) dataplane.setBandwidth(index, bandwidth);
        // One map update: every slot of a daemon with --link-cidr6 has the IPv6 plumbing.
        if (ipv6) dataplane.setIpv6(index, true);
      } catch (err) {
        // Undo: the lease was never acknowledged; the scrub empties whatever got in.
        store.deleteLease(lease.id);
        slots.markScrubbing(index);
        scrubs.schedule(index, request.network, performance.now(), this.deps.profiles.domains(request.profile) !== undefined);
        throw new NetslotError("internal", `could not apply profile ${request.profile}: ${(err as Error).message}`, { cause: err });
      }
    }
    slots.markLeased(index, lease.id, lease.createdAt);
    this.adopt(lease);
    this.deps.metrics.leasesTotal.inc();
    this.deps.audit({ event: "grant", consumer, lease: lease.id, slot: index, reason: request.network ? `vni ${request.network.vni}` : "request" });
    if (lease.expiresAt) this.armExpiry();
    this.deps.metrics.acquireSeconds.observe((performance.now() - start) / 1000);
    return lease;
  }

  renew(consumer: string, id: string, ttlSeconds?: number): StoredLease {
    const lease = this.own(consumer, id);
    const ttl = ttlSeconds ?? lease.ttlSeconds;
    if (ttl === undefined) return lease;
    const expiresAt = new Date(Date.now() + ttl * 1000).toISOString();
    this.deps.store.renewLease(id, expiresAt, ttl);
    faultPoint("renew.after-store");
    lease.expiresAt = expiresAt;
    lease.ttlSeconds = ttl;
    this.armExpiry();
    return lease;
  }

  /** `operator`: another consumer's lease is force-released (the audit log names the operator). */
  release(consumer: string, id: string, operator = false): void {
    const lease = this.own(consumer, id, operator);
    if (lease.consumer === consumer) this.end(id, "released");
    else this.end(id, "force_released", consumer);
  }

  /** Ends a lease for any reason; the slot goes to scrubbing, then back to the pool. `by`: the operator of a force-release. */
  end(id: string, cause: EndCause, by?: string): void {
    const start = performance.now();
    const lease = this.leases.get(id);
    if (!lease) return;
    this.deps.store.deleteLease(id, { cause, ...(by !== undefined ? { by } : {}) });
    faultPoint("release.after-store");
    this.drop(lease);
    this.deps.slots.markScrubbing(lease.slotIndex, true);
    this.deps.metrics.releasesTotal.inc({ cause });
    this.unwatchIfUnused(lease.ownerPid);
    this.deps.metrics.releaseSeconds.observe((performance.now() - start) / 1000);
    this.deps.audit({ event: AUDIT_EVENT_OF[cause], consumer: lease.consumer, lease: id, slot: lease.slotIndex, reason: cause, ...(by !== undefined ? { by } : {}) });
    // The eBPF policy entry is always removed; the admissions set only has elements when the profile names domains.
    this.deps.scrubs.schedule(lease.slotIndex, lease.network, start, this.deps.profiles.domains(lease.profile) !== undefined);
  }

  // ── lookups ───────────────────────────────────────────────────────────────────────

  /**
   * The consumer's lease `id` (an operator's: anyone's), or lease_not_found, also for another
   * consumer's lease; for one of its own that ended within the hour, saying when and how.
   */
  own(consumer: string, id: string, operator = false): StoredLease {
    const lease = this.leases.get(id);
    if (lease && (operator || lease.consumer === consumer)) return lease;
    if (!lease) {
      let ended;
      try {
        ended = this.deps.store.endedLease(id);
      } catch {
        ended = undefined; // the answer is lease_not_found either way
      }
      if (ended && (operator || ended.consumer === consumer)) {
        const how = ended.cause === "force_released" ? `force-released by operator "${ended.by ?? "?"}"` : ENDED_HOW[ended.cause];
        throw new NetslotError("lease_not_found", `lease ${id} ended at ${ended.endedAt}: ${how}`, {
          ended: { at: ended.endedAt, cause: ended.cause, ...(ended.by !== undefined ? { by: ended.by } : {}) },
        });
      }
    }
    throw new NetslotError("lease_not_found", `no lease ${id}`);
  }

  /** The consumer's leases; `all`: everyone's. */
  list(consumer: string, all = false): StoredLease[] {
    return [...this.leases.values()].filter((l) => all || l.consumer === consumer);
  }

  get(id: string): StoredLease | undefined {
    return this.leases.get(id);
  }

  onSlot(index: number): StoredLease | undefined {
    return this.bySlot.get(index);
  }

  all(): StoredLease[] {
    return [...this.leases.values()];
  }

  /** Lease maps kept in step: by id, and by owner pid (so release never scans all leases). */
  adopt(lease: StoredLease): void {
    this.leases.set(lease.id, lease);
    this.bySlot.set(lease.slotIndex, lease);
    this.byConsumer.set(lease.consumer, this.leasedBy(lease.consumer) + 1);
    if (lease.ownerPid === undefined) return;
    const ids = this.leasesByOwner.get(lease.ownerPid) ?? new Set<string>();
    ids.add(lease.id);
    this.leasesByOwner.set(lease.ownerPid, ids);
  }

  drop(lease: StoredLease): void {
    if (this.bySlot.get(lease.slotIndex)?.id === lease.id) this.bySlot.delete(lease.slotIndex);
    if (this.leases.delete(lease.id)) {
      const n = this.leasedBy(lease.consumer) - 1;
      if (n > 0) this.byConsumer.set(lease.consumer, n);
      else this.byConsumer.delete(lease.consumer);
    }
    if (lease.ownerPid === undefined) return;
    const ids = this.leasesByOwner.get(lease.ownerPid);
    ids?.delete(lease.id);
    if (ids?.size === 0) this.leasesByOwner.delete(lease.ownerPid);
  }

  // ── expiry and owner death ────────────────────────────────────────────────────────

  /** After boot: re-watches owners (leases whose owner is gone end) and arms expiry. */
  start(): void {
    this.started = true;
    for (const lease of this.all()) {
      if (lease.ownerPid === undefined) continue;
      if (!this.owners.watch(lease.ownerPid, lease.ownerStart)) this.ownerExited(lease.ownerPid);
    }
    this.armExpiry();
  }

  /**
   * Handover: expiry, owner watching and retries stop here. An owner that exits or a
   * lease that expires meanwhile is seen by the new daemon when it starts.
   */
  pause(): void {
    this.started = false;
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.expiryTimer = this.retryTimer = undefined;
    this.owners.close();
  }

  /** The handover failed: watch the owners again, expire what is due, retry pending ends. */
  resume(): void {
    this.owners = new OwnerWatcher((pid) => this.ownerExited(pid));
    this.start();
    for (const [id, cause] of [...this.endRetries]) this.tryEnd(id, cause);
  }

  close(): void {
    this.closed = true;
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.owners.close();
  }

  /** One timer for the earliest expiry; re-armed whenever leases change. */
  private armExpiry(): void {
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
    if (this.closed || !this.started) return;
    let earliest = Infinity;
    for (const lease of this.leases.values()) {
      if (lease.expiresAt && !this.endRetries.has(lease.id)) earliest = Math.min(earliest, Date.parse(lease.expiresAt));
    }
    if (earliest === Infinity) return;
    const delay = Math.max(0, Math.min(earliest - Date.now(), 2 ** 31 - 1));
    this.expiryTimer = setTimeout(() => this.expireDue(), delay);
    this.expiryTimer.unref();
  }

  private expireDue(): void {
    const now = Date.now();
    for (const lease of [...this.leases.values()]) {
      if (lease.expiresAt && Date.parse(lease.expiresAt) <= now && !this.endRetries.has(lease.id)) {
        faultPoint("expire.before");
        this.tryEnd(lease.id, "expired");
      }
    }
    this.armExpiry();
  }

  /**
   * Ends a lease the daemon decided to end. When the store cannot be written (disk full),
   * the end is retried every second rather than spun on or forgotten.
   */
  private tryEnd(id: string, cause: "expired" | "owner_exited"): void {
    try {
      this.end(id, cause);
      this.endRetries.delete(id);
    } catch (err) {
      if (!this.endRetries.has(id)) this.deps.logger.warn({ lease: id, cause, err }, `could not end lease ${id} (${cause}): ${(err as Error).message}; retrying`);
      this.endRetries.set(id, cause);
      if (!this.retryTimer && !this.closed) {
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          for (const [leaseId, c] of [...this.endRetries]) this.tryEnd(leaseId, c);
        }, 1000);
        this.retryTimer.unref();
      }
    }
  }

  /** Stops watching an owner that holds no lease (its last ended, or an acquire for it failed). */
  private unwatchIfUnused(pid: number | undefined): void {
    if (pid !== undefined && !this.leasesByOwner.has(pid)) this.owners.unwatch(pid);
  }

  private ownerExited(pid: number): void {
    for (const id of [...(this.leasesByOwner.get(pid) ?? [])]) this.tryEnd(id, "owner_exited");
  }
}

const AUDIT_EVENT_OF: Record<EndCause, AuditEvent["event"]> = {
  released: "release",
  expired: "expiry",
  owner_exited: "owner_exit",
  force_released: "force_release",
};

const ENDED_HOW: Record<Exclude<EndCause, "force_released">, string> = {
  released: "released by its consumer",
  expired: "expired (its TTL ran out)",
  owner_exited: "its owner process exited",
};

function newLeaseId(): string {
  return `l_${randomBytes(12).toString("base64url")}`;
}
