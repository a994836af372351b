// The background audit: free slots proven again with the full fingerprint, one at a time,
// round robin, so that the whole pool is covered once per `periodMs`. The fast proof of a
// released slot trusts that nothing changed while the slot sat free (nobody but the host
// can reach it then); this is what checks that. A slot being audited is off the free list
// ("scrubbing" in memory; the store keeps it "free", so a crash meanwhile leaves a free
// slot). A difference sends it through the scrub (reset, rebuild or quarantine, on the
// full fingerprint) before it can be leased. Counted: netslot_audit_proofs_total,
// netslot_audit_dirty_total.
import type { PoolMetrics } from "../core/metrics.js";
import type { SlotTable } from "./allocation.js";
import type { Scrubber } from "./scrubber.js";
import type { ScrubQueue } from "./scrubs.js";
import type { Logger } from "../core/log.js";

export interface AuditorDeps {
  slots: SlotTable;
  scrubber: Pick<Scrubber, "verify">;
  scrubs: ScrubQueue;
  metrics: Pick<PoolMetrics, "auditProofs" | "auditDirty">;
  /** Time to audit every slot once (ms); 0: no audit. */
  periodMs: number;
  /** Share of the pool (0–1) always left free: the audit never takes the last free slots. */
  minFree: number;
  logger: Logger;
}

/** Never more often than this, whatever the period and pool size. */
const MIN_STEP_MS = 50;

export class Auditor {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;
  /** The next index to look at (round robin over the pool). */
  private cursor = 0;

  constructor(private readonly deps: AuditorDeps) {}

  start(): void {
    if (!this.stopped || this.deps.periodMs <= 0) return;
    this.stopped = false;
    this.schedule(this.stepMs());
  }

  /** Stops; resolves once the slot being audited (if any) is back. */
  async pause(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** Audits the next free slot now (tests); the index audited, or undefined when none was free. */
  async step(): Promise<number | undefined> {
    const { slots } = this.deps;
    const counts = slots.counts();
    if (counts.free - 1 < this.deps.minFree * counts.size) return undefined;
    const free = new Set(slots.freeIndices());
    let index: number | undefined;
    for (let i = 0; i < counts.size && index === undefined; i++) {
      const candidate = (this.cursor + i) % counts.size;
      if (free.has(candidate)) index = candidate;
    }
    if (index === undefined || !slots.takeIndex(index)) return undefined;
    this.cursor = (index + 1) % counts.size;
    slots.markScrubbing(index);
    let diff: string[];
    try {
      diff = await this.deps.scrubber.verify(index);
    } catch (err) {
      diff = [`audit failed: ${(err as Error).message}`];
    }
    this.deps.metrics.auditProofs.inc();
    if (diff.length === 0) {
      slots.markFree(index);
      return index;
    }
    this.deps.metrics.auditDirty.inc();
    this.deps.logger.warn({ slot: index }, `audit: free slot ${index} differs from a fresh slot: ${diff.slice(0, 3).join("; ")}; scrubbing it`);
    this.deps.scrubs.schedule(index, undefined, performance.now());
    return index;
  }

  private stepMs(): number {
    return Math.max(MIN_STEP_MS, this.deps.periodMs / Math.max(1, this.deps.slots.counts().size));
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.step()
        .then(() => undefined)
        .finally(() => {
          this.running = undefined;
          this.schedule(this.stepMs());
        });
    }, ms);
    this.timer.unref();
  }
}
