// Allocation: every slot's state in memory and the free list the next lease is picked
// from. No I/O: the store and the kernel are the callers' business.
import type { PoolCounts, QuarantinedSlot, SlotState } from "../core/types.js";

interface SlotEntry {
  state: SlotState;
  reason?: string;
  since: string;
  leaseId?: string;
}

export type SlotCounts = Omit<PoolCounts, "draining" | "consumers">;

/** States as the metrics report them ("building" counts as missing). */
export const REPORTED_STATES = ["free", "leased", "scrubbing", "quarantined", "missing"] as const;

export class SlotTable {
  private readonly slots: SlotEntry[];
  /** Free slots, oldest first: the next lease takes the head. */
  private readonly free: number[] = [];
  /** Called when a slot returns to the free list or a lease ends (waiting requests may go on). */
  onFreed: (() => void) | undefined;

  constructor(size: number) {
    const now = new Date().toISOString();
    this.slots = Array.from({ length: size }, () => ({ state: "missing", since: now }));
  }

  get size(): number {
    return this.slots.length;
  }

  has(index: number): boolean {
    return Number.isInteger(index) && index >= 0 && index < this.slots.length;
  }

  state(index: number): SlotState {
    return this.entry(index).state;
  }

  leaseOf(index: number): string | undefined {
    return this.entry(index).leaseId;
  }

  // ── picking ───────────────────────────────────────────────────────────────────────

  /** Slots on the free list. */
  get freeCount(): number {
    return this.free.length;
  }

  /** Takes the next free slot off the free list (its state is the caller's to set). */
  take(): number | undefined {
    return this.free.shift();
  }

  /** Puts a slot taken by `take` back at the head: its lease was never granted. */
  putBack(index: number): void {
    this.free.unshift(index);
  }

  /** Takes a given slot off the free list; false when it is not on it. */
  takeIndex(index: number): boolean {
    const at = this.free.indexOf(index);
    if (at < 0) return false;
    this.free.splice(at, 1);
    return true;
  }

  /** The free list, oldest first (a copy). */
  freeIndices(): number[] {
    return [...this.free];
  }

  /** A free slot, left on the free list (the golden fingerprint is taken from it). */
  peekFree(): number | undefined {
    return this.free[0];
  }

  // ── transitions ───────────────────────────────────────────────────────────────────

  /** Boot: the state the store recorded, before reconciliation decides. */
  restore(index: number, since: string): void {
    this.entry(index).since = since;
  }

  markFree(index: number): void {
    const slot = this.entry(index);
    slot.state = "free";
    slot.reason = undefined;
    this.free.push(index);
    this.onFreed?.();
  }

  /** Leased to `leaseId`; `since` is set when given (a grant), kept otherwise (an adoption). */
  markLeased(index: number, leaseId: string, since?: string): void {
    const slot = this.entry(index);
    slot.state = "leased";
    slot.leaseId = leaseId;
    if (since !== undefined) slot.since = since;
  }

  /** Out of the pool until a scrub returns it; `ended` clears the lease (a release). */
  markScrubbing(index: number, ended = false): void {
    const slot = this.entry(index);
    slot.state = "scrubbing";
    if (ended) {
      slot.leaseId = undefined;
      slot.since = new Date().toISOString();
      this.onFreed?.();
    }
  }

  markQuarantined(index: number, reason?: string): void {
    const slot = this.entry(index);
    slot.state = "quarantined";
    if (reason !== undefined) slot.reason = reason;
  }

  markBuilding(index: number): void {
    this.entry(index).state = "building";
  }

  /** Not in the kernel; a lease may still point at it until it is rebuilt. */
  markMissing(index: number, leaseId?: string, reason?: string): void {
    const slot = this.entry(index);
    slot.state = "missing";
    if (leaseId !== undefined) slot.leaseId = leaseId;
    if (reason !== undefined) slot.reason = reason;
  }

  reasonOf(index: number): string | undefined {
    return this.entry(index).reason;
  }

  touch(index: number): void {
    this.entry(index).since = new Date().toISOString();
  }

  // ── views ─────────────────────────────────────────────────────────────────────────

  /** Slot counts by state and the quarantined slots (the pool adds the drain switch and consumers). */
  counts(): SlotCounts {
    const counts: SlotCounts = { size: this.slots.length, free: 0, leased: 0, scrubbing: 0, quarantined: 0, missing: 0, quarantinedSlots: [] };
    this.slots.forEach((slot, index) => {
      switch (slot.state) {
        case "free":
          counts.free++;
          break;
        case "leased":
          counts.leased++;
          break;
        case "scrubbing":
          counts.scrubbing++;
          break;
        case "quarantined":
          counts.quarantined++;
          counts.quarantinedSlots.push({ index, reason: slot.reason ?? "", since: slot.since } satisfies QuarantinedSlot);
          break;
        default:
          counts.missing++;
      }
    });
    return counts;
  }

  /** Slots in a reported state ("missing" includes those being built). */
  countIn(state: (typeof REPORTED_STATES)[number]): number {
    return this.slots.filter((s) => s.state === state || (state === "missing" && s.state === "building")).length;
  }

  private entry(index: number): SlotEntry {
    return this.slots[index]!;
  }
}
