// Scrub scheduling: a released slot goes to the scrub worker once at a time; the outcome
// returns it to the free list or quarantines it, written to the store first.
import { NetslotError } from "../core/errors.js";
import { faultPoint } from "../core/faults.js";
import type { AuditEvent, SlotState, TenantNetwork } from "../core/types.js";
import type { LeaseStore } from "../store/store.js";
import type { SlotTable } from "./allocation.js";
import type { SlotLayouts } from "./layouts.js";
import type { PoolMetrics } from "./pool-metrics.js";
import type { Scrubber, ScrubResult } from "./scrubber.js";
import type { Logger } from "../core/log.js";

/** What the rest of the pool may ask of scrubbing. */
export interface ScrubQueue {
  /**
   * Scrubs slot `index` (its `tenant` network, if any, is torn down too; `policy`: the
   * lease had an egress policy to empty); once per slot at a time.
   */
  schedule(index: number, tenant: TenantNetwork | undefined, releasedAt: number, policy?: boolean): void;
}

export interface ScrubSchedulerDeps {
  slots: SlotTable;
  store: Pick<LeaseStore, "setSlotState">;
  scrubber: Pick<Scrubber, "scrub">;
  metrics: Pick<PoolMetrics, "scrubOutcomes" | "scrubProofs" | "scrubSeconds" | "reuseSeconds" | "quarantineRetries" | "goldenRetakes">;
  logger: Logger;
  audit: (event: AuditEvent) => void;
  /** A scrubbed slot equals a fresh one of the current layout (or was rebuilt as one). */
  layouts?: Pick<SlotLayouts, "markCurrent">;
}

/** First automatic retry of a quarantined slot; each later one waits twice as long, up to the max. */
export const QUARANTINE_RETRY_FIRST_MS = 5_000;
export const QUARANTINE_RETRY_MAX_MS = 300_000;

export class ScrubScheduler implements ScrubQueue {
  private readonly pending = new Set<number>();
  /** Quarantined slots waiting for their automatic retry: attempts so far and the timer. */
  private readonly retries = new Map<number, { attempts: number; timer?: NodeJS.Timeout }>();
  /** Scrubs running on the worker, so that a handover can wait for them. */
  private readonly running = new Set<Promise<void>>();
  private closed = false;
  /** Handing over: scrubs asked for meanwhile wait here (the slots stay "scrubbing" in the store). */
  private deferred: Map<number, { tenant: TenantNetwork | undefined; releasedAt: number; policy: boolean }> | undefined;

  constructor(private readonly deps: ScrubSchedulerDeps) {}

  schedule(index: number, tenant: TenantNetwork | undefined, releasedAt: number, policy = false): void {
    if (this.deferred) {
      this.deferred.set(index, { tenant, releasedAt, policy });
      return;
    }
    if (this.pending.has(index)) return;
    this.pending.add(index);
    const scrub: Promise<void> = this.scrubNow(index, tenant, releasedAt, policy).finally(() => {
      this.pending.delete(index);
      this.running.delete(scrub);
    });
    this.running.add(scrub);
  }

  /** Handover: no new scrubs; resolves when the running ones have recorded their outcome. */
  async quiesce(): Promise<void> {
    this.deferred ??= new Map();
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
  }

  /** The handover failed: scrubs asked for meanwhile run now. */
  resume(): void {
    const deferred = this.deferred;
    this.deferred = undefined;
    for (const [index, d] of deferred ?? []) this.schedule(index, d.tenant, d.releasedAt, d.policy);
  }

  /** `netslot quarantine release N`: scrub and verify the slot again; it returns to the pool if clean. */
  async retryQuarantined(index: number, by?: string): Promise<SlotState> {
    const { slots } = this.deps;
    if (!slots.has(index) || slots.state(index) !== "quarantined") {
      throw new NetslotError("slot_not_quarantined", `slot ${index} is not quarantined`);
    }
    this.deps.audit({ event: "retry", slot: index, reason: slots.reasonOf(index) ?? "quarantined", ...(by !== undefined ? { by } : {}) });
    const retry = this.retries.get(index);
    if (retry?.timer) clearTimeout(retry.timer);
    if (retry) retry.timer = undefined;
    slots.markScrubbing(index);
    this.pending.add(index);
    try {
      await this.scrubNow(index, undefined, performance.now());
    } finally {
      this.pending.delete(index);
    }
    return slots.state(index);
  }

  /** Outcomes that arrive after this are dropped: the next start scrubs those slots again. */
  close(): void {
    this.closed = true;
    for (const r of this.retries.values()) if (r.timer) clearTimeout(r.timer);
  }

  /** Runs the scrub on the worker and records the outcome: free, rebuilt, or quarantined. */
  private async scrubNow(index: number, tenant: TenantNetwork | undefined, releasedAt: number, policy = false): Promise<void> {
    const { slots, store, metrics } = this.deps;
    let result: Pick<ScrubResult, "outcome" | "reason" | "ms" | "diff" | "goldenRetaken" | "proof">;
    try {
      result = await this.deps.scrubber.scrub(index, tenant, policy);
    } catch (err) {
      result = { outcome: "quarantined", reason: `scrub failed: ${(err as Error).message}`, ms: 0 };
    }
    if (this.closed) return;
    metrics.scrubSeconds.observe(result.ms / 1000);
    if (result.proof) metrics.scrubProofs.inc({ path: result.proof });
    try {
      if (result.outcome === "quarantined") {
        this.quarantine(index, result.reason ?? "scrub failed");
      } else {
        store.setSlotState(index, "free");
        faultPoint("scrub.after-store");
        this.deps.layouts?.markCurrent([index]);
        slots.markFree(index);
        metrics.scrubOutcomes.inc({ outcome: result.outcome });
        if (result.outcome === "rebuilt") this.deps.logger.info({ slot: index }, `slot ${index} rebuilt: ${(result.diff ?? []).slice(0, 3).join("; ") || "no golden fingerprint yet"}`);
        if (result.goldenRetaken) {
          metrics.goldenRetakes.inc();
          this.deps.logger.warn(
            { slot: index },
            `the host changed since the golden fingerprint was taken (two fresh builds of slot ${index} agree: ${result.goldenRetaken.slice(0, 3).join("; ")}); golden fingerprint re-taken`,
          );
        }
        const retry = this.retries.get(index);
        if (retry?.timer) clearTimeout(retry.timer);
        this.retries.delete(index);
        metrics.reuseSeconds.observe((performance.now() - releasedAt) / 1000);
      }
    } catch (err) {
      // The store could not record the outcome: the slot stays out of the pool and the
      // whole scrub is tried again in a second (a restart would scrub it too).
      this.deps.logger.warn({ slot: index, err }, `slot ${index}: could not record scrub outcome: ${(err as Error).message}; retrying`);
      setTimeout(() => this.schedule(index, tenant, releasedAt, policy), 1000).unref();
    }
    slots.touch(index);
  }

  private quarantine(index: number, reason: string): void {
    this.deps.store.setSlotState(index, "quarantined", reason);
    this.deps.slots.markQuarantined(index, reason);
    this.deps.metrics.scrubOutcomes.inc({ outcome: "quarantined" });
    this.deps.audit({ event: "quarantine", slot: index, reason });
    this.scheduleRetry(index, reason);
  }

  /**
   * A quarantined slot is scrubbed again on its own, with backoff: most causes (a process
   * that exits, a VMM that lets go of the tap, a host change) pass without an operator.
   */
  private scheduleRetry(index: number, reason: string): void {
    if (this.closed) return;
    const retry = this.retries.get(index) ?? { attempts: 0 };
    const delay = Math.min(QUARANTINE_RETRY_FIRST_MS * 2 ** retry.attempts, QUARANTINE_RETRY_MAX_MS);
    retry.attempts++;
    this.deps.logger.warn({ slot: index }, `slot ${index} quarantined: ${reason}; automatic retry ${retry.attempts} in ${delay / 1000} s`);
    retry.timer = setTimeout(() => {
      retry.timer = undefined;
      if (this.closed || this.deps.slots.state(index) !== "quarantined") return;
      this.deps.metrics.quarantineRetries.inc();
      void this.retryQuarantined(index, "automatic retry").catch(() => undefined);
    }, delay);
    retry.timer.unref();
    this.retries.set(index, retry);
  }
}
