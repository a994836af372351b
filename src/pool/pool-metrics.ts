// The pool's side of the metrics (declared in core/metrics.ts): what the scraped gauges read.
import type { PoolMetrics } from "../core/metrics.js";
import { REPORTED_STATES, type SlotTable } from "./allocation.js";

export type { PoolMetrics };

/** Points the pool's scraped gauges at the slot table. */
export function feedPoolGauges(metrics: PoolMetrics, slots: SlotTable, ready: () => boolean): void {
  metrics.slots.readFrom(() => REPORTED_STATES.map((state) => ({ labels: { state }, value: slots.countIn(state) })));
  metrics.quarantined.readFrom(() =>
    slots.counts().quarantinedSlots.map((q) => ({ labels: { slot: String(q.index), cause: quarantineCause(q.reason ?? "") }, value: 1 })),
  );
  metrics.ready.readFrom(() => [{ labels: {}, value: ready() ? 1 : 0 }]);
}

/** A short, bounded label for a quarantine reason. */
export function quarantineCause(reason: string): string {
  if (/tap0? (is still )?held|tap held/.test(reason)) return "tap_held";
  if (/process/.test(reason)) return "process";
  if (/differs from a fresh slot/.test(reason)) return "differs";
  if (/scrub failed|scrub worker/.test(reason)) return "scrub_failed";
  return "other";
}
