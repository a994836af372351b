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
import { GATEWAY_IP, GUEST_IP, GUEST_MAC, GUEST_PREFIX_LENGTH, TAP_NAME, guestMtu, kernelIpArg } from "../dataplane/topology.js";
import type { LeaseStore, StoredLease } from "../store/store.js";
import { SlotTable } from "./allocation.js";
import { PoolBoot, type BootProgress } from "./boot.js";
import { LeaseLifecycle, type EndCause } from "./leases.js";
import { Registry } from "./metrics.js";
import { poolMetrics } from "./pool-metrics.js";
import type { Scrubber } from "./scrubber.js";
import { ScrubScheduler } from "./scrubs.js";
import type { Quotas } from "../tenancy/quotas.js";
import { ProfileCatalog } from "../core/profiles.js";

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
  log?: (msg: string) => void;
  /** The kernel's boot id: leases granted under another one are voided at boot. */
  bootId?: string;
}

export class Pool implements LeaseService {
  private status: "booting" | "ready" = "booting";
  private closed = false;
  /** The operator's drain switch, kept in the store (read at boot). */
  private draining = false;
  private readonly audit: (event: AuditEvent) => void;
  private readonly slots: SlotTable;
  private readonly scrubs: ScrubScheduler;
  private readonly leases: LeaseLifecycle;
  private readonly booter: PoolBoot;

  readonly registry = new Registry();

  constructor(private readonly options: PoolOptions) {
    const log = (msg: string) => this.options.log?.(msg);
    const audit = (this.audit = options.audit ?? (() => undefined));
    const { dataplane, scrubber, store } = options;
    const slots = (this.slots = new SlotTable(options.size));
    const metrics = poolMetrics(this.registry, slots, () => this.status === "ready");
    const scrubs = (this.scrubs = new ScrubScheduler({ slots, store, scrubber, metrics, log, audit }));
    const profiles = options.profiles ?? new ProfileCatalog();
    const leases = (this.leases = new LeaseLifecycle({
      slots,
      scrubs,
      store,
      dataplane,
      metrics,
      profiles,
      log,
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
      log,
      closed: () => this.closed,
      ...(options.bootId !== undefined ? { bootId: options.bootId } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
  }

  /** Builds the pool (see PoolBoot.run); leases are served from when it resolves. */
  async boot(): Promise<BootProgress> {
    this.draining = this.options.store.draining();
    const progress = await this.booter.run();
    this.status = "ready";
    this.leases.start();
    return progress;
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
    return { ...this.slots.counts(), draining: this.draining, consumers: this.options.quotas?.usage(this.leases.leasedBy) ?? [] };
  }

  async acquire(consumer: string, request: LeaseRequest): Promise<Lease> {
    if (this.status !== "ready") throw new NetslotError("booting", "the pool is still being built", { retryAfter: 1 });
    if (this.draining) throw new NetslotError("draining", "an operator is draining this daemon: no new leases until `netslot undrain`", { retryAfter: 30 });
    return this.toLease(this.leases.grant(consumer, request));
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
    return { draining: on };
  }

  metrics(): string {
    return this.registry.render();
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
  }

  /** Leases still held, for the owner watcher. */
  heldLeases(): StoredLease[] {
    return this.leases.all();
  }

  close(): void {
    this.closed = true;
    this.leases.close();
    this.scrubs.close();
    void this.options.scrubber.close();
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
      ...(l.profile !== undefined ? { profile: l.profile } : {}),
      ...(l.ownerPid !== undefined ? { ownerPid: l.ownerPid } : {}),
      createdAt: l.createdAt,
      expiresAt: l.expiresAt,
    };
  }
}
