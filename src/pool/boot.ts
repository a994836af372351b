// Boot: reconciles the kernel with the store, adopts intact slots, builds what is missing
// (on two threads) and takes the golden fingerprint.
import { faultPoint } from "../core/faults.js";
import type { TenantNetwork } from "../core/types.js";
import type { SlotDataplane } from "../dataplane/dataplane.js";
import type { LeaseStore } from "../store/store.js";
import type { SlotTable } from "./allocation.js";
import type { LeaseLifecycle } from "./leases.js";
import type { PoolMetrics } from "./pool-metrics.js";
import type { Scrubber } from "./scrubber.js";
import type { ScrubQueue } from "./scrubs.js";
import type { ProfileCatalog } from "../core/profiles.js";
import type { StoredLease } from "../store/store.js";
import type { Logger } from "../core/log.js";

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

export interface BootDeps {
  slots: SlotTable;
  leases: Pick<LeaseLifecycle, "adopt" | "drop" | "get" | "all">;
  scrubs: ScrubQueue;
  store: Pick<LeaseStore, "ensureSlots" | "slots" | "listLeases" | "deleteLease" | "setSlotStates" | "bootId" | "setBootId">;
  dataplane: Pick<SlotDataplane, "kernelSlotIndices" | "intactSlots" | "destroySlot" | "buildSlot" | "setTenant" | "setEgressPolicy" | "setBandwidth" | "setIpv6">;
  profiles: Pick<ProfileCatalog, "policy" | "bandwidth" | "ipv6">;
  scrubber: Pick<Scrubber, "build" | "golden">;
  metrics: Pick<PoolMetrics, "buildSeconds" | "buildFailures" | "voidedTotal">;
  /** The kernel's boot id: leases granted under another one name VMs that no longer exist. */
  bootId?: string;
  /** Called during boot with progress; the daemon renders it. */
  onProgress?: (p: BootProgress) => void;
  logger: Logger;
  /** True once the pool is closed: building stops between chunks. */
  closed: () => boolean;
}

/** Slots built per event-loop turn at boot, so health requests are answered meanwhile. */
const BUILD_CHUNK = 32;
const BUILD_RETRIES = 2;

interface Reconciled {
  toBuild: number[];
  toScrub: number[];
}

export class PoolBoot {
  /** Slots in the kernel so far (adopted or built), for health during boot. */
  built = 0;
  /** The first build failure of this boot, for the daemon's one-line refusal. */
  firstFailure: string | undefined;
  /** The golden fingerprint's slot and layout id; `rebuilt` when that slot was rebuilt for it. */
  golden: { index: number; layout: string; rebuilt: boolean } | undefined;
  /** Slots this boot built (or tried to): they have the current layout. */
  builtNow: number[] = [];

  constructor(private readonly deps: BootDeps) {}

  /**
   * Reconciles the kernel with the store, then builds what is missing. Intact slots are
   * adopted as they are; slots the store does not know are removed; broken ones rebuilt.
   * Slots that were mid-scrub are scheduled for a scrub at the end.
   */
  async run(): Promise<BootProgress> {
    const start = performance.now();
    const { toBuild, toScrub } = this.reconcile();
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
      total: this.deps.slots.size,
      elapsedMs: performance.now() - start,
      failed,
      firstTenthMs: tenth("first"),
      lastTenthMs: tenth("last"),
    });
    this.deps.onProgress?.(progress());
    await this.buildAll(toBuild, (built, ms, failures) => {
      buildMs.push(...ms);
      failed += failures;
      this.built += built;
      faultPoint("boot.mid-build");
      this.deps.onProgress?.(progress());
    });
    this.builtNow = toBuild;
    await this.takeGolden(toBuild);
    for (const index of toScrub) this.deps.scrubs.schedule(index, undefined, performance.now());
    return progress();
  }

  /**
   * After a host reboot every lease names a VM that died with the host: they are voided
   * (their slots scrubbed like released ones), counted and logged, before anything else.
   */
  private voidLeasesOfAnotherBoot(): void {
    const { store, bootId } = this.deps;
    if (bootId === undefined) return;
    const previous = store.bootId();
    if (previous !== undefined && previous !== bootId) {
      const leases = store.listLeases();
      for (const lease of leases) store.deleteLease(lease.id);
      if (leases.length > 0) this.deps.metrics.voidedTotal.inc({ cause: "reboot" }, leases.length);
      this.deps.logger.warn({ previousBootId: previous, bootId, voided: leases.length }, `the host rebooted since the last start (boot id ${previous} → ${bootId}): ${leases.length} leases of the previous boot voided`);
    }
    if (previous !== bootId) store.setBootId(bootId);
  }

  /** Decides each slot's fate from the store's rows and what the kernel holds. */
  private reconcile(): Reconciled {
    const { store, dataplane, slots, leases } = this.deps;
    const size = slots.size;
    store.ensureSlots(size);
    this.voidLeasesOfAnotherBoot();
    const stored = new Map(store.slots().map((s) => [s.idx, s]));
    for (const lease of store.listLeases()) leases.adopt(lease);
    const leaseBySlot = new Map(leases.all().map((l) => [l.slotIndex, l]));

    // Objects of our prefix beyond the pool (a smaller --pool-size, or leftovers).
    for (const index of dataplane.kernelSlotIndices()) {
      if (index >= size) dataplane.destroySlot(index);
    }
    for (const lease of leases.all()) {
      if (lease.slotIndex >= size) {
        this.deps.logger.warn({ lease: lease.id, slot: lease.slotIndex }, `lease ${lease.id} points at slot ${lease.slotIndex}, beyond the pool; dropping it`);
        store.deleteLease(lease.id);
        leases.drop(lease);
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
      slots.restore(index, row?.since ?? now);
      if (!intact.has(index)) {
        toBuild.push(index);
        slots.markMissing(index, lease?.id);
        continue;
      }
      if (lease) {
        slots.markLeased(index, lease.id);
        if (lease.network) this.tryApplyTenant(index, lease.network);
        // Additions are idempotent: a crash between the store write and the policy is covered.
        this.tryApplyPolicy(index, lease);
      } else if (row?.state === "quarantined") {
        slots.markQuarantined(index, row.reason ?? "quarantined before restart");
      } else if (row?.state === "free") {
        slots.markFree(index);
      } else {
        // Scrubbing when we stopped, or leased with no lease row: scrub before reuse.
        toScrub.push(index);
        slots.markScrubbing(index);
      }
    }
    this.built = size - toBuild.length;
    return { toBuild, toScrub };
  }

  /**
   * Two builders: this thread and the scrub worker's, on interleaved halves. The RTNL
   * lock serializes only part of a build; namespaces, nftables and sysctls run in parallel.
   */
  private async buildAll(toBuild: number[], report: (built: number, ms: number[], failed: number) => void): Promise<void> {
    const { slots, store, leases, scrubber } = this.deps;
    const accept = (built: number[], ms: number[], failed: number) => {
      const freeNow = built.filter((index) => slots.leaseOf(index) === undefined);
      if (freeNow.length > 0) store.setSlotStates(freeNow, "free");
      for (const index of built) {
        const leaseId = slots.leaseOf(index);
        const lease = leaseId ? leases.get(leaseId) : undefined;
        if (lease) {
          slots.markLeased(index, lease.id);
          if (lease.network) this.tryApplyTenant(index, lease.network);
          this.tryApplyPolicy(index, lease);
        } else {
          slots.markFree(index);
        }
        slots.touch(index);
      }
      for (const m of ms) this.deps.metrics.buildSeconds.observe(m / 1000);
      report(built.length, ms, failed);
    };
    const theirs = toBuild.filter((_, i) => i % 2 === 1);
    const mine = toBuild.filter((_, i) => i % 2 === 0);
    const workerBuilds = (async () => {
      for (let i = 0; i < theirs.length && !this.deps.closed(); i += BUILD_CHUNK) {
        const chunk = theirs.slice(i, i + BUILD_CHUNK);
        for (const index of chunk) slots.markBuilding(index);
        const result = await scrubber.build(chunk, BUILD_RETRIES);
        for (const f of result.failed) this.buildFailed(f.index, f.reason);
        accept(result.built, result.ms, result.failed.length);
      }
    })();
    for (let i = 0; i < mine.length && !this.deps.closed(); i += BUILD_CHUNK) {
      const built: number[] = [];
      const ms: number[] = [];
      let failed = 0;
      for (const index of mine.slice(i, i + BUILD_CHUNK)) {
        const t = performance.now();
        if (this.buildWithRetry(index)) {
          built.push(index);
          ms.push(performance.now() - t);
        } else failed++;
      }
      accept(built, ms, failed);
      await new Promise((resolve) => setImmediate(resolve));
    }
    await workerBuilds;
  }

  /** The golden fingerprint: from a slot built just now, else from a free slot rebuilt for it. */
  private async takeGolden(toBuild: number[]): Promise<void> {
    const fresh = toBuild.find((index) => this.deps.slots.state(index) === "free");
    const goldenIndex = fresh ?? this.deps.slots.peekFree();
    if (goldenIndex !== undefined) {
      const golden = await this.deps.scrubber.golden(goldenIndex, fresh === undefined);
      this.deps.logger.info({ slot: goldenIndex, layout: golden.layout }, `golden fingerprint from slot ${goldenIndex}: ${golden.summary}; layout ${golden.layout}`);
      this.golden = { index: goldenIndex, layout: golden.layout, rebuilt: fresh === undefined && !golden.summary.endsWith("(saved)") };
    }
  }

  private buildWithRetry(index: number): boolean {
    this.deps.slots.markBuilding(index);
    for (let attempt = 0; attempt <= BUILD_RETRIES; attempt++) {
      try {
        this.deps.dataplane.destroySlot(index);
        this.deps.dataplane.buildSlot(index);
        return true;
      } catch (err) {
        if (attempt === BUILD_RETRIES) this.buildFailed(index, (err as Error).message);
      }
    }
    return false;
  }

  /** A slot that could not be built after retries stays missing; boot goes on without it. */
  private buildFailed(index: number, reason: string): void {
    this.deps.metrics.buildFailures.inc();
    this.firstFailure ??= `slot ${index}: ${reason}`;
    this.deps.slots.markMissing(index, undefined, `build failed: ${reason}`);
    this.deps.logger.warn({ slot: index }, `slot ${index}: ${this.deps.slots.reasonOf(index)}`);
  }

  private tryApplyTenant(index: number, network: TenantNetwork): void {
    try {
      this.deps.dataplane.setTenant(index, network);
    } catch (err) {
      this.deps.logger.error({ slot: index, err }, `slot ${index}: could not restore tenant network: ${(err as Error).message}`);
    }
  }

  /** A rebuilt or adopted slot of a lease gets its profile's policy (as defined now). */
  private tryApplyPolicy(index: number, lease: StoredLease): void {
    const policy = this.deps.profiles.policy(lease.profile);
    const bandwidth = this.deps.profiles.bandwidth(lease.profile);
    try {
      if (policy) this.deps.dataplane.setEgressPolicy(index, policy);
      // A new bucket: a restart hands the lease a full burst, nothing more.
      if (bandwidth) this.deps.dataplane.setBandwidth(index, bandwidth);
      if (this.deps.profiles.ipv6(lease.profile)) this.deps.dataplane.setIpv6(index, true);
    } catch (err) {
      this.deps.logger.error({ slot: index, lease: lease.id, err }, `slot ${index}: could not restore the egress policy of profile ${lease.profile}: ${(err as Error).message}`);
    }
  }
}
