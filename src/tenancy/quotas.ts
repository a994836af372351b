// Admission: whether a consumer may take one more slot now. `max` caps what a consumer
// holds; `reserved` slots are kept for their consumer, so another consumer is refused
// when only slots reserved for others remain free. Called by the pool just before it takes
// a free slot, with counts it keeps in step; O(consumers with a reservation) per call.
import { NetslotError } from "../core/errors.js";
import type { ConsumerUsage } from "../core/types.js";
import type { ConsumerDirectory } from "./consumers.js";

export class Quotas {
  private readonly reserving: { name: string; reserved: number }[];

  constructor(private readonly directory: ConsumerDirectory) {
    this.reserving = directory.consumers.filter((c) => c.reserved > 0).map((c) => ({ name: c.name, reserved: c.reserved }));
  }

  /** Slots that must stay free for consumers other than `consumer` (their unused reservations). */
  heldForOthers(consumer: string, leasedBy: (name: string) => number): number {
    let held = 0;
    for (const r of this.reserving) if (r.name !== consumer) held += Math.max(0, r.reserved - leasedBy(r.name));
    return held;
  }

  /** Throws quota_exceeded or pool_exhausted when `consumer` may not take one of `free` slots now. */
  admit(consumer: string, free: number, leasedBy: (name: string) => number): void {
    const c = this.directory.get(consumer);
    const leased = leasedBy(consumer);
    if (c?.max != null && leased >= c.max) {
      throw new NetslotError("quota_exceeded", `consumer "${consumer}" holds ${leased} leases, its maximum (quota.max)`, { retryAfter: 1 });
    }
    if (free === 0) return; // the pool answers pool_exhausted itself
    const held = this.heldForOthers(consumer, leasedBy);
    if (free <= held) {
      throw new NetslotError("pool_exhausted", `the ${free} free slots are reserved for other consumers`, { retryAfter: 1 });
    }
  }

  /** The consumer's priority among waiting requests (0 when not configured). */
  priorityOf(consumer: string): number {
    return this.directory.get(consumer)?.priority ?? 0;
  }

  /** Per-consumer use for GET /v1/pool, in config order. */
  usage(leasedBy: (name: string) => number): ConsumerUsage[] {
    return this.directory.consumers.map((c) => ({ name: c.name, leased: leasedBy(c.name), reserved: c.reserved, max: c.max }));
  }
}
