// The pool's metrics, defined once; each part of the pool is handed the few it updates.
import { Counter, Gauge, Histogram, Registry } from "./metrics.js";
import { REPORTED_STATES, type SlotTable } from "./allocation.js";

export function poolMetrics(registry: Registry, slots: SlotTable, ready: () => boolean) {
  const metrics = {
    leasesTotal: registry.add(new Counter("netslot_leases_total", "Leases granted")),
    releasesTotal: registry.add(new Counter("netslot_releases_total", "Leases ended, by cause")),
    scrubOutcomes: registry.add(new Counter("netslot_scrub_outcomes_total", "Scrub results, by outcome")),
    voidedTotal: registry.add(new Counter("netslot_leases_voided_total", "Leases voided at start, by cause (reboot: granted before the host rebooted)")),
    buildFailures: registry.add(new Counter("netslot_slot_build_failures_total", "Slot builds that failed")),
    buildSeconds: registry.add(new Histogram("netslot_slot_build_seconds", "Time to build one slot")),
    acquireSeconds: registry.add(new Histogram("netslot_acquire_seconds", "Time to grant a lease")),
    releaseSeconds: registry.add(new Histogram("netslot_release_seconds", "Time to acknowledge a release")),
    scrubSeconds: registry.add(new Histogram("netslot_scrub_seconds", "Time to scrub a released slot")),
    reuseSeconds: registry.add(new Histogram("netslot_release_to_reusable_seconds", "Release until the slot is free again")),
  };
  registry.add(
    new Gauge("netslot_pool_slots", "Slots by state", () => REPORTED_STATES.map((state) => ({ labels: { state }, value: slots.countIn(state) }))),
  );
  registry.add(new Gauge("netslot_ready", "1 once the pool is built", () => [{ labels: {}, value: ready() ? 1 : 0 }]));
  return metrics;
}

export type PoolMetrics = ReturnType<typeof poolMetrics>;
