// Slot layouts: what each slot was built with. A layout's id is derived from the golden
// fingerprint of a fresh slot (scrub-worker.ts), so any change to what a slot contains
// (a device, an MTU, a rule, a sysctl) is a new layout, and going back to an earlier
// version is going back to its layout. Slots of another layout than the current one are
// migrated (migration.ts), leased ones after release (a scrub compares them with the
// current golden fingerprint and rebuilds them).
import type { SlotLayout } from "../core/schema.js";
import type { LeaseStore } from "../store/store.js";

export interface LayoutSpec {
  /** tap0's MTU in slots of this layout: a lease on one reports it as guest.mtu. */
  guestMtu: number;
}

export class SlotLayouts {
  private readonly bySlot: Array<string | undefined>;
  private readonly specs = new Map<string, LayoutSpec>();
  private currentId: string | undefined;

  constructor(
    size: number,
    private readonly store: Pick<LeaseStore, "layouts" | "putLayout" | "setSlotLayouts">,
  ) {
    this.bySlot = new Array<string | undefined>(size).fill(undefined);
  }

  /** What the store recorded (slots beyond the pool are ignored). */
  load(): void {
    const { slots, specs } = this.store.layouts();
    for (const [idx, layout] of slots) if (idx < this.bySlot.length) this.bySlot[idx] = layout;
    for (const [id, spec] of specs) this.specs.set(id, spec);
  }

  get current(): string | undefined {
    return this.currentId;
  }

  /** The layout this daemon builds, known once the golden fingerprint is. */
  setCurrent(id: string, spec: LayoutSpec): void {
    this.store.putLayout(id, spec);
    this.specs.set(id, spec);
    this.currentId = id;
  }

  /** Records that `indices` now have the current layout (built, rebuilt, or verified equal to a fresh slot). */
  markCurrent(indices: readonly number[]): void {
    if (this.currentId === undefined || indices.length === 0) return;
    const changed = indices.filter((i) => this.bySlot[i] !== this.currentId);
    if (changed.length === 0) return;
    this.store.setSlotLayouts(changed, this.currentId);
    for (const i of changed) this.bySlot[i] = this.currentId;
  }

  /** Slots no layout was recorded for (a store from before 0.2, or built before the golden was known). */
  unrecorded(): number[] {
    return this.bySlot.flatMap((l, i) => (l === undefined ? [i] : []));
  }

  /** Whether slot `index` was built with another layout than the current one. */
  isStale(index: number): boolean {
    return this.currentId !== undefined && this.bySlot[index] !== undefined && this.bySlot[index] !== this.currentId;
  }

  specOf(index: number): LayoutSpec | undefined {
    const id = this.bySlot[index];
    return id === undefined ? undefined : this.specs.get(id);
  }

  summary(): SlotLayout[] {
    const counts = new Map<string, number>();
    for (const id of this.bySlot) if (id !== undefined) counts.set(id, (counts.get(id) ?? 0) + 1);
    if (this.currentId !== undefined && !counts.has(this.currentId)) counts.set(this.currentId, 0);
    return [...counts].map(([id, slots]) => ({ id, slots, current: id === this.currentId })).sort((a, b) => Number(b.current) - Number(a.current) || a.id.localeCompare(b.id));
  }
}
