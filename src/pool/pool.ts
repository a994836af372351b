// The pool: the LeaseService the API serves, assembled from parts with narrow interfaces:
//   allocation.ts  slot states and the free list (no I/O)
//   leases.ts      lease lifecycle: grant, renew, release, expiry, owner death
//   scrubs.ts      scrub scheduling: the worker, outcomes, quarantine
//   boot.ts        reconciliation with the store and the kernel, building, golden fingerprint
// It holds the in-memory view; the store holds the durable one and is written before
// anything is acknowledged. Kernel work goes through the dataplane only.
import { NetslotError } from "../core/errors.js";
import type { AuditEvent, Health, Lease, LeaseRequest, LeaseService, PoolCounts, SlotState } from "../core/types.js";
import type { SlotDataplane } from "../dataplane/dataplane.js";
import { GATEWAY_IP, GATEWAY_IP6, GUEST_IP, GUEST_IP6, GUEST_MAC, GUEST_PREFIX_LENGTH, GUEST_PREFIX_LENGTH6, TAP_NAME, guestMtu, guestNetworkConfig6, kernelIpArg } from "../dataplane/topology.js";
import type { LeaseStore, StoredLease } from "../store/store.js";
import { SlotTable } from "./allocation.js";
import { PoolBoot, type BootProgress } from "./boot.js";
import { LeaseLifecycle, type EndCause } from "./leases.js";
import { feedPoolGauges } from "./pool-metrics.js";
import { createMetrics, type PoolMetrics } from "../core/metrics.js";
import type { Scrubber } from "./scrubber.js";
import { ScrubScheduler } from "./scrubs.js";
import { isNotNow, WaitQueue } from "./waiters.js";
import type { Quotas } from "../tenancy/quotas.js";
import { ProfileCatalog } from "../core/profiles.js";
import { SlotLayouts } from "./layouts.js";
import { Migrator } from "./migration.js";
import { silentLogger, type Logger } from "../core/log.js";
import { Auditor } from "./audit.js";

export type { BootProgress } from "./boot.js";

export interface PoolOptions {
  size: number;
  dataplane: SlotDataplane;
  scrubber: Scrubber;
  store: LeaseStore;
  /** Network profiles a lease may name; none when absent. */
  profiles?: ProfileCatalog;
  /** Per-consumer max and reservations; none: any consumer may take any free slot. */
  quotas?: Quotas;
  /** One call per grant, end, quarantine, retry and drain switch (the daemon logs them). */
  audit?: (event: AuditEvent) => void;
  /** Called during boot with progress; the daemon renders it. */
  onProgress?: (p: BootProgress) => void;
  /** Lines about slots and leases; silent when not given. */
  logger?: Logger;
  /** The kernel's boot id: leases granted under another one are voided at boot. */
  bootId?: string;
  /** Background layout migration: slots per second, and the share of the pool (0–1) it leaves free. */
  migration?: { rate: number; minFree: number };
  /** Background audit of free slots: the whole pool once per `periodMs` (0: none); `minFree` as for migration. */
  freeAudit?: { periodMs: number; minFree: number };
  /** The daemon's metrics (core/metrics.ts); a registry of its own when absent. */
  metrics?: PoolMetrics;
}

/** The background audit covers the whole pool once an hour unless configured otherwise. */
export const DEFAULT_AUDIT_PERIOD_MS = 3_600_000;

const DRAINING = (): NetslotError =>
  new NetslotError("draining", "an operator is draining this daemon: no new leases until `netslot undrain`", { retryAfter: 30 });

export class Pool implements LeaseService {
  private status: "booting" | "ready" = "booting";
  private closed = false;
  /** The operator's drain switch, kept in the store (read at boot). */
  private draining = false;
  private readonly audit: (event: AuditEvent) => void;
  /** Requests waiting for a slot (waitSeconds), by consumer priority. */
  private readonly waiting: WaitQueue<StoredLease>;
  private readonly slots: SlotTable;
  private readonly scrubs: ScrubScheduler;
  private readonly leases: LeaseLifecycle;
  private readonly profiles: ProfileCatalog;
  private readonly booter: PoolBoot;
  private readonly layouts: SlotLayouts;
  private readonly migrator: Migrator;
  private readonly auditor: Auditor;

  constructor(private readonly options: PoolOptions) {
    const logger = options.logger ?? silentLogger;
    const audit = (this.audit = options.audit ?? (() => undefined));
    const { dataplane, scrubber, store } = options;
    const slots = (this.slots = new SlotTable(options.size));
    const waiting = (this.waiting = new WaitQueue<StoredLease>(() => slots.freeCount > 0));
    slots.onFreed = () => waiting.wake();
    const layouts = (this.layouts = new SlotLayouts(options.size, store));
    this.migrator = new Migrator({ slots, layouts, scrubber, rate: options.migration?.rate ?? 20, minFree: options.migration?.minFree ?? 0.25, logger });
    const metrics = options.metrics ?? createMetrics().pool;
    feedPoolGauges(metrics, slots, () => this.status === "ready");
    const scrubs = (this.scrubs = new ScrubScheduler({ slots, store, scrubber, metrics, logger, audit, layouts }));
    this.auditor = new Auditor({
      slots,
      scrubber,
      scrubs,
      metrics,
      periodMs: options.freeAudit?.periodMs ?? DEFAULT_AUDIT_PERIOD_MS,
      minFree: options.freeAudit?.minFree ?? 0.25,
      logger,
    });
    const profiles = (this.profiles = options.profiles ?? new ProfileCatalog());
    const leases = (this.leases = new LeaseLifecycle({
      slots,
      scrubs,
      store,
      dataplane,
      metrics,
      profiles,
      logger,
      audit,
      ...(options.quotas ? { quotas: options.quotas } : {}),
    }));
    this.booter = new PoolBoot({
      slots,
      leases,
      scrubs,
      store,
      dataplane,
      scrubber,
      metrics,
      profiles,
      logger,
      closed: () => this.closed,
      ...(options.bootId !== undefined ? { bootId: options.bootId } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
  }

  /** Builds the pool (see PoolBoot.run); leases are served from when it resolves. */
  async boot(): Promise<BootProgress> {
    this.draining = this.options.store.draining();
    this.layouts.load();
    const progress = await this.booter.run();
    this.recordLayouts();
    this.status = "ready";
    this.leases.start();
    this.migrator.start();
    this.auditor.start();
    return progress;
  }

  /**
   * After boot: the golden fingerprint names the current layout; slots built now (and one
   * rebuilt for the golden fingerprint) have it. Slots with no record (a store from before
   * layouts) are taken as current: the scrub still compares each released one with the
   * golden fingerprint.
   */
  private recordLayouts(): void {
    const golden = this.booter.golden;
    if (!golden) return;
    this.layouts.setCurrent(golden.layout, { guestMtu: this.options.dataplane.tapMtu });
    const built = this.booter.builtNow.filter((i) => this.slots.state(i) === "free" || this.slots.state(i) === "leased");
    this.layouts.markCurrent([...built, ...(golden.rebuilt ? [golden.index] : []), ...this.layouts.unrecorded()]);
    const stale = this.layouts.summary().filter((l) => !l.current && l.slots > 0);
    if (stale.length > 0) {
      (this.options.logger ?? silentLogger).info(
        `slot layout ${golden.layout} is current; ${stale.map((l) => `${l.slots} slots of layout ${l.id}`).join(", ")} migrate (free ones in the background, leased ones after release)`,
      );
    }
  }

  /** The first build failure of this boot, for the daemon's one-line refusal. */
  firstBuildFailure(): string | undefined {
    return this.booter.firstFailure;
  }

  // ── LeaseService ──────────────────────────────────────────────────────────────────

  health(): Omit<Health, "version"> {
    const { size, free, leased, scrubbing, quarantined, missing } = this.slots.counts();
    return { status: this.status, draining: this.draining, pool: { size, free, leased, scrubbing, quarantined, missing, built: this.booter.built } };
  }

  pool(): PoolCounts {
    return {
      ...this.slots.counts(),
      draining: this.draining,
      consumers: this.options.quotas?.usage(this.leases.leasedBy) ?? [],
      layouts: this.layouts.summary(),
    };
  }

  async acquire(consumer: string, request: LeaseRequest): Promise<Lease> {
    if (this.status !== "ready") throw new NetslotError("booting", "the pool is still being built", { retryAfter: 1 });
    if (this.draining) throw DRAINING();
    const { waitSeconds, ...grant } = request;
    try {
      return this.toLease(this.leases.grant(consumer, grant));
    } catch (err) {
      // No slot for this consumer now: wait for one if asked to, served by priority.
      if (!waitSeconds || !isNotNow(err)) throw err;
      const priority = this.options.quotas?.priorityOf(consumer) ?? 0;
      return this.toLease(await this.waiting.wait(priority, waitSeconds, err, () => this.leases.grant(consumer, grant)));
    }
  }

  list(consumer: string, opts: { all?: boolean } = {}): Lease[] {
    return this.leases.list(consumer, opts.all === true).map((l) => this.toLease(l));
  }

  get(consumer: string, id: string, opts: { operator?: boolean } = {}): Lease {
    return this.toLease(this.leases.own(consumer, id, opts.operator === true));
  }

  async renew(consumer: string, id: string, ttlSeconds?: number): Promise<Lease> {
    return this.toLease(this.leases.renew(consumer, id, ttlSeconds));
  }

  async release(consumer: string, id: string, opts: { operator?: boolean } = {}): Promise<void> {
    this.leases.release(consumer, id, opts.operator === true);
  }

  /** Ends a lease for any reason; the slot goes to scrubbing, then back to the pool. */
  end(id: string, cause: EndCause, by?: string): void {
    this.leases.end(id, cause, by);
  }

  /** The operator's drain switch: while on, acquire answers 503 draining; leases run on. Kept in the store. */
  setDraining(on: boolean, by?: string): { draining: boolean } {
    this.options.store.setDraining(on);
    if (this.draining !== on) this.audit({ event: on ? "drain" : "undrain", ...(by !== undefined ? { by } : {}) });
    this.draining = on;
    if (on) this.waiting.rejectAll(DRAINING());
    return { draining: on };
  }

  /** `netslot quarantine release N`: scrub and verify the slot again; it returns to the pool if clean. */
  retryQuarantined(index: number, by?: string): Promise<SlotState> {
    return this.scrubs.retryQuarantined(index, by);
  }

  // ── handover ──────────────────────────────────────────────────────────────────────

  /**
   * Before a new daemon loads the store: stops everything that changes the pool on its
   * own (expiry, owner exits, retries, scrubs) and waits for running scrubs. The API is
   * already holding requests, so after this nothing here writes the store or a slot.
   */
  async quiesce(): Promise<void> {
    this.leases.pause();
    await this.migrator.pause();
    await this.auditor.pause();
    await this.scrubs.quiesce();
  }

  /**
   * The new daemon failed to take over: back to work. It may have got as far as changing
   * slots (a golden rebuild, say), so free slots that are no longer whole are rebuilt.
   */
  resume(): void {
    const { dataplane } = this.options;
    const free = this.slots.freeIndices();
    const intact = dataplane.intactSlots(free);
    for (const index of free) {
      if (intact.has(index) || !this.slots.takeIndex(index)) continue;
      try {
        dataplane.destroySlot(index);
        dataplane.buildSlot(index);
        this.slots.markFree(index);
      } catch (err) {
        this.slots.markMissing(index, undefined, `rebuild after a failed handover: ${(err as Error).message}`);
      }
    }
    this.scrubs.resume();
    this.leases.resume();
    this.migrator.start();
    this.auditor.start();
  }

  /** The lease on slot `index`, if any (the DNS forwarder's lookup). */
  leaseOnSlot(index: number): StoredLease | undefined {
    return this.leases.onSlot(index);
  }

  /** Leases still held, for the owner watcher. */
  heldLeases(): StoredLease[] {
    return this.leases.all();
  }

  close(): void {
    this.closed = true;
    this.waiting.rejectAll(new NetslotError("booting", "the daemon is stopping", { retryAfter: 1 }));
    void this.migrator.pause();
    void this.auditor.pause();
    this.leases.close();
    this.scrubs.close();
    void this.options.scrubber.close();
  }

  private toLease(l: StoredLease): Lease {
    const a = this.options.dataplane.addressing(l.slotIndex);
    const outside6 = this.profiles.ipv6(l.profile) ? this.options.dataplane.outsideAddress6(l.slotIndex) : undefined;
    return {
      id: l.id,
      consumer: l.consumer,
      slot: { index: l.slotIndex, netns: a.netnsPath, tap: TAP_NAME, outsideAddress: a.outsideAddress, ...(outside6 !== undefined ? { outsideAddress6: outside6 } : {}) },
      guest: {
        ip: GUEST_IP,
        prefixLength: GUEST_PREFIX_LENGTH,
        gateway: GATEWAY_IP,
        mac: GUEST_MAC,
        // The slot's own layout says its tap0 MTU: a slot leased before a --guest-mtu change keeps its MTU.
        mtu: guestMtu(this.options.dataplane.uplinkMtu, l.network !== undefined, this.layouts.specOf(l.slotIndex)?.guestMtu ?? this.options.dataplane.tapMtu),
        kernelIpArg: kernelIpArg(),
        // The slot's host link address: the root table sends its port 53 to the DNS forwarder.
        ...(this.profiles.domains(l.profile) !== undefined ? { dns: a.hostAddress } : {}),
        ...(outside6 !== undefined ? { ipv6: { ip: GUEST_IP6, prefixLength: GUEST_PREFIX_LENGTH6, gateway: GATEWAY_IP6, networkConfig: guestNetworkConfig6() } } : {}),
      },
      labels: l.labels,
      ...(l.network ? { network: l.network } : {}),
      ...(l.profile !== undefined ? { profile: l.profile } : {}),
      ...(l.ownerPid !== undefined ? { ownerPid: l.ownerPid } : {}),
      createdAt: l.createdAt,
      expiresAt: l.expiresAt,
    };
  }
}
