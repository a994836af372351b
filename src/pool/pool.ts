// The pool: slot states, boot and reconciliation, leases, scrubbing, expiry. It holds the
// in-memory view; the store holds the durable one and is written before anything is
// acknowledged. Kernel work goes through the dataplane only.
import { randomBytes } from "node:crypto";
import { NetslotError } from "../core/errors.js";
import type { Health, Lease, LeaseRequest, LeaseService, PoolCounts, QuarantinedSlot, SlotState, TenantNetwork } from "../core/types.js";
import type { SlotDataplane } from "../dataplane/dataplane.js";
import { GATEWAY_IP, GUEST_IP, GUEST_MAC, GUEST_PREFIX_LENGTH, TAP_NAME, guestMtu, kernelIpArg } from "../dataplane/topology.js";
import { SlotNotFreeError, type LeaseStore, type StoredLease } from "../store/store.js";
import { Counter, Gauge, Histogram, Registry } from "./metrics.js";
import { OwnerWatcher } from "./owners.js";
import type { Scrubber, ScrubResult } from "./scrubber.js";
import { faultPoint } from "../core/faults.js";

export interface PoolOptions {
  size: number;
  dataplane: SlotDataplane;
  scrubber: Scrubber;
  store: LeaseStore;
  /** Called during boot with progress; the daemon renders it. */
  onProgress?: (p: BootProgress) => void;
  log?: (msg: string) => void;
}

export interface BootProgress {
  built: number;
  toBuild: number;
  adopted: number;
  total: number;
  elapsedMs: number;
  failed: number;
  /** Mean build time per slot over the first and the last 10% of this boot's builds (ms). */
  firstTenthMs?: number;
  lastTenthMs?: number;
}

interface SlotEntry {
  state: SlotState;
  reason?: string;
  since: string;
  leaseId?: string;
}

/** Slots built per event-loop turn at boot, so health requests are answered meanwhile. */
const BUILD_CHUNK = 32;
const BUILD_RETRIES = 2;

export class Pool implements LeaseService {
  private readonly slots: SlotEntry[];
  private readonly free: number[] = [];
  private readonly leases = new Map<string, StoredLease>();
  private readonly leasesByOwner = new Map<number, Set<string>>();
  private status: "booting" | "ready" = "booting";
  private built = 0;
  private expiryTimer: NodeJS.Timeout | undefined;
  private readonly pendingScrubs = new Set<number>();
  private closed = false;
  private readonly owners = new OwnerWatcher((pid) => this.ownerExited(pid));
  /** Lease ends (expiry, owner exit) the store refused; retried every second. */
  private readonly endRetries = new Map<string, "expired" | "owner_exited">();
  private retryTimer: NodeJS.Timeout | undefined;

  readonly registry = new Registry();
  private readonly leasesTotal = this.registry.add(new Counter("netslot_leases_total", "Leases granted"));
  private readonly releasesTotal = this.registry.add(new Counter("netslot_releases_total", "Leases ended, by cause"));
  private readonly scrubOutcomes = this.registry.add(new Counter("netslot_scrub_outcomes_total", "Scrub results, by outcome"));
  private readonly buildFailures = this.registry.add(new Counter("netslot_slot_build_failures_total", "Slot builds that failed"));
  private readonly buildSeconds = this.registry.add(new Histogram("netslot_slot_build_seconds", "Time to build one slot"));
  private readonly acquireSeconds = this.registry.add(new Histogram("netslot_acquire_seconds", "Time to grant a lease"));
  private readonly releaseSeconds = this.registry.add(new Histogram("netslot_release_seconds", "Time to acknowledge a release"));
  private readonly scrubSeconds = this.registry.add(new Histogram("netslot_scrub_seconds", "Time to scrub a released slot"));
  private readonly reuseSeconds = this.registry.add(new Histogram("netslot_release_to_reusable_seconds", "Release until the slot is free again"));

  constructor(private readonly options: PoolOptions) {
    const now = new Date().toISOString();
    this.slots = Array.from({ length: options.size }, () => ({ state: "missing", since: now }));
    this.registry.add(
      new Gauge("netslot_pool_slots", "Slots by state", () =>
        (["free", "leased", "scrubbing", "quarantined", "missing"] as const).map((state) => ({
          labels: { state },
          value: this.slots.filter((s) => s.state === state || (state === "missing" && s.state === "building")).length,
        })),
      ),
    );
    this.registry.add(new Gauge("netslot_ready", "1 once the pool is built", () => [{ labels: {}, value: this.status === "ready" ? 1 : 0 }]));
  }

  private log(msg: string): void {
    this.options.log?.(msg);
  }

  // ── boot ──────────────────────────────────────────────────────────────────────────

  /**
   * Reconciles the kernel with the store, then builds what is missing. Intact slots are
   * adopted as they are; slots the store does not know are removed; broken ones rebuilt.
   */
  async boot(): Promise<BootProgress> {
    const start = performance.now();
    const { store, dataplane, size } = this.options;
    store.ensureSlots(size);
    const stored = new Map(store.slots().map((s) => [s.idx, s]));
    for (const lease of store.listLeases()) this.track(lease);
    const leaseBySlot = new Map([...this.leases.values()].map((l) => [l.slotIndex, l]));

    // Objects of our prefix beyond the pool (a smaller --pool-size, or leftovers).
    for (const index of dataplane.kernelSlotIndices()) {
      if (index >= size) dataplane.destroySlot(index);
    }
    for (const lease of [...this.leases.values()]) {
      if (lease.slotIndex >= size) {
        this.log(`lease ${lease.id} points at slot ${lease.slotIndex}, beyond the pool; dropping it`);
        store.deleteLease(lease.id);
        this.untrack(lease);
      }
    }

    const all = Array.from({ length: size }, (_, i) => i);
    const intact = dataplane.intactSlots(all);
    faultPoint("boot.after-reconcile");
    const toBuild: number[] = [];
    const toScrub: number[] = [];
    const now = new Date().toISOString();
    for (const index of all) {
      const lease = leaseBySlot.get(index);
      const row = stored.get(index);
      const slot = this.slots[index]!;
      slot.since = row?.since ?? now;
      if (!intact.has(index)) {
        toBuild.push(index);
        slot.state = "missing";
        if (lease) slot.leaseId = lease.id;
        continue;
      }
      if (lease) {
        slot.state = "leased";
        slot.leaseId = lease.id;
        if (lease.network) this.tryApplyTenant(index, lease.network);
      } else if (row?.state === "quarantined") {
        slot.state = "quarantined";
        slot.reason = row.reason ?? "quarantined before restart";
      } else if (row?.state === "free") {
        slot.state = "free";
        this.free.push(index);
      } else {
        // Scrubbing when we stopped, or leased with no lease row: scrub before reuse.
        toScrub.push(index);
        slot.state = "scrubbing";
      }
    }
    this.built = size - toBuild.length;
    const adopted = this.built;

    let failed = 0;
    const buildMs: number[] = [];
    const tenth = (from: "first" | "last"): number | undefined => {
      const n = Math.max(1, Math.floor(buildMs.length / 10));
      if (buildMs.length < 10) return undefined;
      const part = from === "first" ? buildMs.slice(0, n) : buildMs.slice(-n);
      return part.reduce((a, b) => a + b, 0) / part.length;
    };
    const progress = (): BootProgress => ({
      built: this.built,
      toBuild: toBuild.length,
      adopted,
      total: size,
      elapsedMs: performance.now() - start,
      failed,
      firstTenthMs: tenth("first"),
      lastTenthMs: tenth("last"),
    });
    this.options.onProgress?.(progress());
    // Two builders: this thread and the scrub worker's, on interleaved halves. The RTNL
    // lock serializes only part of a build; namespaces, nftables and sysctls run in parallel.
    const accept = (built: number[], ms: number[]) => {
      const freeNow = built.filter((index) => this.slots[index]!.leaseId === undefined);
      if (freeNow.length > 0) store.setSlotStates(freeNow, "free");
      for (const index of built) {
        const slot = this.slots[index]!;
        const lease = slot.leaseId ? this.leases.get(slot.leaseId) : undefined;
        if (lease) {
          slot.state = "leased";
          if (lease.network) this.tryApplyTenant(index, lease.network);
        } else {
          slot.state = "free";
          this.free.push(index);
        }
        slot.since = new Date().toISOString();
      }
      for (const m of ms) {
        buildMs.push(m);
        this.buildSeconds.observe(m / 1000);
      }
      this.built += built.length;
      faultPoint("boot.mid-build");
      this.options.onProgress?.(progress());
    };
    const theirs = toBuild.filter((_, i) => i % 2 === 1);
    const mine = toBuild.filter((_, i) => i % 2 === 0);
    const workerBuilds = (async () => {
      for (let i = 0; i < theirs.length && !this.closed; i += BUILD_CHUNK) {
        const chunk = theirs.slice(i, i + BUILD_CHUNK);
        for (const index of chunk) this.slots[index]!.state = "building";
        const result = await this.options.scrubber.build(chunk, BUILD_RETRIES);
        for (const f of result.failed) this.buildFailed(f.index, f.reason);
        failed += result.failed.length;
        accept(result.built, result.ms);
      }
    })();
    for (let i = 0; i < mine.length && !this.closed; i += BUILD_CHUNK) {
      const built: number[] = [];
      const ms: number[] = [];
      for (const index of mine.slice(i, i + BUILD_CHUNK)) {
        const t = performance.now();
        if (this.buildWithRetry(index)) {
          built.push(index);
          ms.push(performance.now() - t);
        } else failed++;
      }
      accept(built, ms);
      await new Promise((resolve) => setImmediate(resolve));
    }
    await workerBuilds;
    // The golden fingerprint: from a slot built just now, else from a free slot rebuilt for it.
    const fresh = toBuild.find((index) => this.slots[index]!.state === "free");
    const goldenIndex = fresh ?? this.free[0];
    if (goldenIndex !== undefined) {
      const summary = await this.options.scrubber.golden(goldenIndex, fresh === undefined);
      this.log(`golden fingerprint from slot ${goldenIndex}: ${summary}`);
    }
    for (const index of toScrub) this.scheduleScrub(index, undefined, performance.now());
    this.status = "ready";
    this.rewatchOwners();
    this.armExpiry();
    return progress();
  }

  private buildWithRetry(index: number): boolean {
    const slot = this.slots[index]!;
    slot.state = "building";
    for (let attempt = 0; attempt <= BUILD_RETRIES; attempt++) {
      try {
        this.options.dataplane.destroySlot(index);
        this.options.dataplane.buildSlot(index);
        return true;
      } catch (err) {
        if (attempt === BUILD_RETRIES) this.buildFailed(index, (err as Error).message);
      }
    }
    return false;
  }

  /** A slot that could not be built after retries stays missing; boot goes on without it. */
  private buildFailed(index: number, reason: string): void {
    const slot = this.slots[index]!;
    this.buildFailures.inc();
    slot.state = "missing";
    slot.reason = `build failed: ${reason}`;
    this.log(`slot ${index}: ${slot.reason}`);
  }

  private tryApplyTenant(index: number, network: TenantNetwork): void {
    try {
      this.options.dataplane.setTenant(index, network);
    } catch (err) {
      this.log(`slot ${index}: could not restore tenant network: ${(err as Error).message}`);
    }
  }

  // ── LeaseService ──────────────────────────────────────────────────────────────────

  health(): Omit<Health, "version"> {
    return { status: this.status, pool: { ...this.pool(), built: this.built } };
  }

  pool(): PoolCounts {
    const counts: PoolCounts = { size: this.slots.length, free: 0, leased: 0, scrubbing: 0, quarantined: 0, missing: 0, quarantinedSlots: [] };
    this.slots.forEach((slot, index) => {
      switch (slot.state) {
        case "free":
          counts.free++;
          break;
        case "leased":
          counts.leased++;
          break;
        case "scrubbing":
          counts.scrubbing++;
          break;
        case "quarantined":
          counts.quarantined++;
          counts.quarantinedSlots.push({ index, reason: slot.reason ?? "", since: slot.since } satisfies QuarantinedSlot);
          break;
        default:
          counts.missing++;
      }
    });
    return counts;
  }

  async acquire(consumer: string, request: LeaseRequest): Promise<Lease> {
    const start = performance.now();
    if (this.status !== "ready") throw new NetslotError("booting", "the pool is still being built", { retryAfter: 1 });
    if (request.network && this.options.dataplane.options.vtepRemote === undefined) {
      throw new NetslotError("invalid_request", "this daemon has no --vtep-remote, so it cannot attach tenant networks", { field: "/network" });
    }
    if (request.ownerPid !== undefined && !this.owners.watch(request.ownerPid)) {
      throw new NetslotError("invalid_request", `process ${request.ownerPid} does not exist`, { field: "/ownerPid" });
    }
    const now = new Date();
    let lease: StoredLease;
    let index: number;
    for (;;) {
      const next = this.free.shift();
      if (next === undefined) {
        this.unwatchIfUnused(request.ownerPid);
        throw new NetslotError("pool_exhausted", `all ${this.slots.length} slots are leased, scrubbing or quarantined`, { retryAfter: 1 });
      }
      index = next;
      lease = {
        id: newLeaseId(),
        consumer,
        slotIndex: index,
        labels: request.labels ?? {},
        ...(request.network ? { network: request.network } : {}),
        ...(request.ownerPid !== undefined ? { ownerPid: request.ownerPid, ownerStart: this.owners.startTimeOf(request.ownerPid) } : {}),
        createdAt: now.toISOString(),
        expiresAt: request.ttlSeconds !== undefined ? new Date(now.getTime() + request.ttlSeconds * 1000).toISOString() : null,
        ...(request.ttlSeconds !== undefined ? { ttlSeconds: request.ttlSeconds } : {}),
      };
      try {
        this.options.store.insertLease(lease);
        faultPoint("acquire.after-store");
        break;
      } catch (err) {
        if (err instanceof SlotNotFreeError) {
          // Memory and store disagree: trust the store, leave this slot out and take another.
          this.log(`slot ${index} is free in memory but ${err.state ?? "unknown"} in the store; skipped`);
          if (err.state === "quarantined") this.slots[index]!.state = "quarantined";
          else {
            this.slots[index]!.state = "scrubbing";
            this.scheduleScrub(index, undefined, performance.now());
          }
          continue;
        }
        this.free.unshift(index);
        this.unwatchIfUnused(request.ownerPid);
        throw err;
      }
    }
    if (request.network) {
      try {
        this.options.dataplane.setTenant(index, request.network);
        faultPoint("acquire.after-tenant");
      } catch (err) {
        // Undo: the lease was never acknowledged.
        this.options.store.deleteLease(lease.id);
        this.slots[index]!.state = "scrubbing";
        this.scheduleScrub(index, request.network, performance.now());
        throw new NetslotError("internal", `could not attach the tenant network: ${(err as Error).message}`, { cause: err });
      }
    }
    const slot = this.slots[index]!;
    slot.state = "leased";
    slot.leaseId = lease.id;
    slot.since = lease.createdAt;
    this.track(lease);
    this.leasesTotal.inc();
    if (lease.expiresAt) this.armExpiry();
    this.acquireSeconds.observe((performance.now() - start) / 1000);
    return this.toLease(lease);
  }

  list(consumer: string): Lease[] {
    return [...this.leases.values()].filter((l) => l.consumer === consumer).map((l) => this.toLease(l));
  }

  get(consumer: string, id: string): Lease {
    return this.toLease(this.ownLease(consumer, id));
  }

  async renew(consumer: string, id: string, ttlSeconds?: number): Promise<Lease> {
    const lease = this.ownLease(consumer, id);
    const ttl = ttlSeconds ?? lease.ttlSeconds;
    if (ttl === undefined) return this.toLease(lease);
    const expiresAt = new Date(Date.now() + ttl * 1000).toISOString();
    this.options.store.renewLease(id, expiresAt, ttl);
    faultPoint("renew.after-store");
    lease.expiresAt = expiresAt;
    lease.ttlSeconds = ttl;
    this.armExpiry();
    return this.toLease(lease);
  }

  async release(consumer: string, id: string): Promise<void> {
    this.ownLease(consumer, id);
    this.end(id, "released");
  }

  /** Ends a lease for any reason; the slot goes to scrubbing, then back to the pool. */
  end(id: string, cause: "released" | "expired" | "owner_exited"): void {
    const start = performance.now();
    const lease = this.leases.get(id);
    if (!lease) return;
    this.options.store.deleteLease(id);
    faultPoint("release.after-store");
    this.untrack(lease);
    const slot = this.slots[lease.slotIndex]!;
    slot.state = "scrubbing";
    slot.leaseId = undefined;
    slot.since = new Date().toISOString();
    this.releasesTotal.inc({ cause });
    this.unwatchIfUnused(lease.ownerPid);
    this.releaseSeconds.observe((performance.now() - start) / 1000);
    this.scheduleScrub(lease.slotIndex, lease.network, start);
  }

  metrics(): string {
    return this.registry.render();
  }

  private ownLease(consumer: string, id: string): StoredLease {
    const lease = this.leases.get(id);
    if (!lease || lease.consumer !== consumer) throw new NetslotError("lease_not_found", `no lease ${id}`);
    return lease;
  }

  private toLease(l: StoredLease): Lease {
    const a = this.options.dataplane.addressing(l.slotIndex);
    return {
      id: l.id,
      consumer: l.consumer,
      slot: { index: l.slotIndex, netns: a.netnsPath, tap: TAP_NAME, outsideAddress: a.outsideAddress },
      guest: {
        ip: GUEST_IP,
        prefixLength: GUEST_PREFIX_LENGTH,
        gateway: GATEWAY_IP,
        mac: GUEST_MAC,
        mtu: guestMtu(this.options.dataplane.uplinkMtu, l.network !== undefined),
        kernelIpArg: kernelIpArg(),
      },
      labels: l.labels,
      ...(l.network ? { network: l.network } : {}),
      ...(l.ownerPid !== undefined ? { ownerPid: l.ownerPid } : {}),
      createdAt: l.createdAt,
      expiresAt: l.expiresAt,
    };
  }

  // ── scrubbing ─────────────────────────────────────────────────────────────────────

  private scheduleScrub(index: number, tenant: TenantNetwork | undefined, releasedAt: number): void {
    if (this.pendingScrubs.has(index)) return;
    this.pendingScrubs.add(index);
    void this.scrubNow(index, tenant, releasedAt).finally(() => this.pendingScrubs.delete(index));
  }

  /** Runs the scrub on the worker and records the outcome: free, rebuilt, or quarantined. */
  private async scrubNow(index: number, tenant: TenantNetwork | undefined, releasedAt: number): Promise<void> {
    const slot = this.slots[index]!;
    let result: Pick<ScrubResult, "outcome" | "reason" | "ms">;
    try {
      result = await this.options.scrubber.scrub(index, tenant);
    } catch (err) {
      result = { outcome: "quarantined", reason: `scrub failed: ${(err as Error).message}`, ms: 0 };
    }
    if (this.closed) return;
    this.scrubSeconds.observe(result.ms / 1000);
    try {
      if (result.outcome === "quarantined") {
        this.quarantine(index, result.reason ?? "scrub failed");
      } else {
        this.options.store.setSlotState(index, "free");
        faultPoint("scrub.after-store");
        slot.state = "free";
        slot.reason = undefined;
        this.free.push(index);
        this.scrubOutcomes.inc({ outcome: result.outcome });
        this.reuseSeconds.observe((performance.now() - releasedAt) / 1000);
      }
    } catch (err) {
      // The store could not record the outcome: the slot stays out of the pool and the
      // whole scrub is tried again in a second (a restart would scrub it too).
      this.log(`slot ${index}: could not record scrub outcome: ${(err as Error).message}; retrying`);
      setTimeout(() => this.scheduleScrub(index, tenant, releasedAt), 1000).unref();
    }
    slot.since = new Date().toISOString();
  }

  private quarantine(index: number, reason: string): void {
    const slot = this.slots[index]!;
    this.options.store.setSlotState(index, "quarantined", reason);
    slot.state = "quarantined";
    slot.reason = reason;
    this.scrubOutcomes.inc({ outcome: "quarantined" });
    this.log(`slot ${index} quarantined: ${reason}`);
  }

  /** `netslot quarantine release N`: scrub and verify the slot again; it returns to the pool if clean. */
  async retryQuarantined(index: number): Promise<SlotState> {
    const slot = this.slots[index];
    if (!slot || slot.state !== "quarantined") {
      throw new NetslotError("slot_not_quarantined", `slot ${index} is not quarantined`);
    }
    slot.state = "scrubbing";
    this.pendingScrubs.add(index);
    try {
      await this.scrubNow(index, undefined, performance.now());
    } finally {
      this.pendingScrubs.delete(index);
    }
    return slot.state;
  }

  // ── expiry ────────────────────────────────────────────────────────────────────────

  /** One timer for the earliest expiry; re-armed whenever leases change. */
  private armExpiry(): void {
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
    if (this.closed || this.status !== "ready") return;
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
      if (!this.endRetries.has(id)) this.log(`could not end lease ${id} (${cause}): ${(err as Error).message}; retrying`);
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

  /** Lease maps kept in step: by id, and by owner pid (so release never scans all leases). */
  private track(lease: StoredLease): void {
    this.leases.set(lease.id, lease);
    if (lease.ownerPid === undefined) return;
    const ids = this.leasesByOwner.get(lease.ownerPid) ?? new Set<string>();
    ids.add(lease.id);
    this.leasesByOwner.set(lease.ownerPid, ids);
  }

  private untrack(lease: StoredLease): void {
    this.leases.delete(lease.id);
    if (lease.ownerPid === undefined) return;
    const ids = this.leasesByOwner.get(lease.ownerPid);
    ids?.delete(lease.id);
    if (ids?.size === 0) this.leasesByOwner.delete(lease.ownerPid);
  }

  /** Stops watching an owner that holds no lease (its last ended, or an acquire for it failed). */
  private unwatchIfUnused(pid: number | undefined): void {
    if (pid !== undefined && !this.leasesByOwner.has(pid)) this.owners.unwatch(pid);
  }

  private ownerExited(pid: number): void {
    for (const id of [...(this.leasesByOwner.get(pid) ?? [])]) this.tryEnd(id, "owner_exited");
  }

  /** Re-watches owners after a restart; leases whose owner is gone (or was replaced) end. */
  private rewatchOwners(): void {
    for (const lease of [...this.leases.values()]) {
      if (lease.ownerPid === undefined) continue;
      if (!this.owners.watch(lease.ownerPid, lease.ownerStart)) this.ownerExited(lease.ownerPid);
    }
  }

  /** Leases still held, for the owner watcher. */
  heldLeases(): StoredLease[] {
    return [...this.leases.values()];
  }

  close(): void {
    this.closed = true;
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.owners.close();
    void this.options.scrubber.close();
  }
}

function newLeaseId(): string {
  return `l_${randomBytes(12).toString("base64url")}`;
}
