// Background migration of free slots to the current layout (layouts.ts): one slot at a
// time, rebuilt on the scrub worker's thread, at most `rate` slots a second, and only
// while more than `minFree` of the pool stays free for requests. A slot being migrated is
// off the free list ("building"); the store keeps it "free", so a crash meanwhile leaves
// a slot the next start adopts, or rebuilds when it is not whole, and migrates again.
import type { SlotTable } from "./allocation.js";
import type { SlotLayouts } from "./layouts.js";
import type { Scrubber } from "./scrubber.js";
import type { Logger } from "../core/log.js";

export interface MigratorDeps {
  slots: SlotTable;
  layouts: SlotLayouts;
  scrubber: Pick<Scrubber, "build">;
  /** Slots per second. */
  rate: number;
  /** Share of the pool (0–1) always left free. */
  minFree: number;
  logger: Logger;
}

/** Idle check interval when nothing is stale or the pool is too busy to give up a slot. */
const IDLE_MS = 1000;

export class Migrator {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;
  private migrated = 0;
  private startedAt = 0;

  constructor(private readonly deps: MigratorDeps) {}

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.schedule(0);
  }

  /** Stops taking slots; resolves once the slot being rebuilt (if any) is back. */
  async pause(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.step().finally(() => (this.running = undefined));
    }, ms);
    this.timer.unref();
  }

  private async step(): Promise<void> {
    const { slots, layouts, minFree, rate } = this.deps;
    const counts = slots.counts();
    const index = counts.free - 1 >= minFree * counts.size ? slots.freeIndices().find((i) => layouts.isStale(i)) : undefined;
    if (index === undefined || !slots.takeIndex(index)) {
      if (this.migrated > 0 && !slots.freeIndices().some((i) => layouts.isStale(i))) {
        const seconds = (performance.now() - this.startedAt) / 1000;
        this.deps.logger.info(`layout migration: ${this.migrated} free slots migrated to ${layouts.current} in ${seconds.toFixed(1)} s`);
        this.migrated = 0;
      }
      this.schedule(IDLE_MS);
      return;
    }
    if (this.migrated === 0) this.startedAt = performance.now();
    const started = performance.now();
    slots.markBuilding(index);
    try {
      const result = await this.deps.scrubber.build([index], 1);
      if (result.built.includes(index)) {
        layouts.markCurrent([index]);
        slots.markFree(index);
        this.migrated++;
      } else {
        const reason = result.failed[0]?.reason ?? "unknown";
        slots.markMissing(index, undefined, `layout migration failed: ${reason}`);
        this.deps.logger.warn({ slot: index }, `slot ${index}: layout migration failed: ${reason}`);
      }
    } catch (err) {
      slots.markMissing(index, undefined, `layout migration failed: ${(err as Error).message}`);
      this.deps.logger.warn({ slot: index, err }, `slot ${index}: layout migration failed: ${(err as Error).message}`);
    }
    this.schedule(Math.max(0, 1000 / rate - (performance.now() - started)));
  }
}
