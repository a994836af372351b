// The pool's metrics, defined once; each part of the pool is handed the few it updates.
import { Counter, Gauge, Histogram, Registry } from "./metrics.js";
import { REPORTED_STATES, type SlotTable } from "./allocation.js";

export function poolMetrics(registry: Registry, slots: SlotTable, ready: () => boolean) {
  const metrics = {
    leasesTotal: registry.add(new Counter("netslot_leases_total", "Leases granted")),
    releasesTotal: registry.add(new Counter("netslot_releases_total", "Leases ended, by cause")),
    scrubOutcomes: registry.add(new Counter("netslot_scrub_outcomes_total", "Scrub results, by outcome")),
    scrubProofs: registry.add(
      new Counter("netslot_scrub_proofs_total", "Proofs of released slots, by path (fast: only what may have changed was read; full; fast-dirty: the fast proof found a difference)"),
    ),
    voidedTotal: registry.add(new Counter("netslot_leases_voided_total", "Leases voided at start, by cause (reboot: granted before the host rebooted)")),
    buildFailures: registry.add(new Counter("netslot_slot_build_failures_total", "Slot builds that failed")),
    quarantineRetries: registry.add(new Counter("netslot_quarantine_retries_total", "Automatic retries of quarantined slots")),
    goldenRetakes: registry.add(new Counter("netslot_golden_retakes_total", "Golden fingerprints re-taken because the host changed")),
    buildSeconds: registry.add(new Histogram("netslot_slot_build_seconds", "Time to build one slot")),
    acquireSeconds: registry.add(new Histogram("netslot_acquire_seconds", "Time to grant a lease")),
    releaseSeconds: registry.add(new Histogram("netslot_release_seconds", "Time to acknowledge a release")),
    scrubSeconds: registry.add(new Histogram("netslot_scrub_seconds", "Time to scrub a released slot")),
    reuseSeconds: registry.add(new Histogram("netslot_release_to_reusable_seconds", "Release until the slot is free again")),
  };
  registry.add(
    new Gauge("netslot_pool_slots", "Slots by state", () => REPORTED_STATES.map((state) => ({ labels: { state }, value: slots.countIn(state) }))),
  );
  registry.add(
    new Gauge("netslot_quarantined_slot", "1 per quarantined slot, with the kind of cause (the log and GET /v1/pool give the full reason)", () =>
      slots.counts().quarantinedSlots.map((q) => ({ labels: { slot: String(q.index), cause: quarantineCause(q.reason ?? "") }, value: 1 })),
    ),
  );
  registry.add(new Gauge("netslot_ready", "1 once the pool is built", () => [{ labels: {}, value: ready() ? 1 : 0 }]));
  return metrics;
}

export type PoolMetrics = ReturnType<typeof poolMetrics>;

/** A short, bounded label for a quarantine reason. */
export function quarantineCause(reason: string): string {
  if (/tap0? (is still )?held|tap held/.test(reason)) return "tap_held";
  if (/process/.test(reason)) return "process";
  if (/differs from a fresh slot/.test(reason)) return "differs";
  if (/scrub failed|scrub worker/.test(reason)) return "scrub_failed";
  return "other";
}
