// The pool's invariants, checked against the store and the kernel: what `netslot check`
// reports and what the crash and disk-full tests assert after every fault.
import * as fs from "node:fs";
import { bpfPinDir, fingerprintOf, inventory } from "../dataplane/dataplane.js";
import { diffFingerprints } from "../dataplane/fingerprint.js";
import { loadGolden } from "../dataplane/golden.js";
import { parseCidr, slotAddressing, type Cidr } from "../dataplane/topology.js";
import { LeaseStore } from "../store/store.js";

export interface CheckOptions {
  prefix: string;
  stateDir: string;
  linkCidr: string;
  /** Lease ids the caller saw acknowledged and not released: each must be present. */
  expectLeases?: string[];
  /** Compare every free slot's fingerprint with the golden one (default true; ~15 ms a slot). */
  fingerprints?: boolean;
}

/**
 * The invariants, checked against the store and the kernel. Returns the problems found
 * (empty when all hold). Read-only: safe while a daemon runs, meant for after a crash.
 */
export function checkInvariants(opts: CheckOptions): string[] {
  const problems: string[] = [];
  const cidr = parseCidr(opts.linkCidr);
  const store = LeaseStore.open(opts.stateDir);
  try {
    const fp = store.fingerprint();
    const size = fp?.poolSize ?? store.slots().length;
    if (fp && fp.prefix !== opts.prefix) problems.push(`store belongs to prefix ${fp.prefix}, not ${opts.prefix}`);
    const slots = new Map(store.slots().map((s) => [s.idx, s]));
    const leases = store.listLeases();
    const leaseBySlot = new Map<number, string>();
    for (const lease of leases) {
      const other = leaseBySlot.get(lease.slotIndex);
      if (other) problems.push(`slot ${lease.slotIndex} is leased twice: ${other} and ${lease.id}`);
      leaseBySlot.set(lease.slotIndex, lease.id);
      if (lease.slotIndex >= size) problems.push(`lease ${lease.id} points at slot ${lease.slotIndex}, beyond the pool of ${size}`);
      if (slots.get(lease.slotIndex)?.state !== "leased") {
        problems.push(`lease ${lease.id}: slot ${lease.slotIndex} is ${slots.get(lease.slotIndex)?.state ?? "unknown"} in the store, not leased`);
      }
    }
    for (const id of opts.expectLeases ?? []) {
      if (!leases.some((l) => l.id === id)) problems.push(`acknowledged lease ${id} is missing`);
    }
    for (const [idx, slot] of slots) {
      if (slot.state === "leased" && !leaseBySlot.has(idx)) problems.push(`slot ${idx} is leased in the store but no lease holds it`);
    }

    const kernel = inventory(opts.prefix);
    const built = [...slots.values()].filter((s) => s.idx < size && s.state !== "missing").map((s) => s.idx);
    const expected = new Set(built);
    const compare = (what: string, found: Set<number>) => {
      for (const idx of found) if (!expected.has(idx)) problems.push(`${what} ${opts.prefix}-${idx} exists but is not in the pool`);
      for (const idx of expected) if (!found.has(idx)) problems.push(`${what} ${opts.prefix}-${idx} is missing`);
    };
    compare("namespace", kernel.namespaces);
    compare("host veth", kernel.hostLinks);
    if (!kernel.rootTable) problems.push(`root table inet ${opts.prefix} is missing`);
    if (!kernel.pinned) problems.push(`pinned eBPF objects under ${bpfPinDir(opts.prefix)} are missing`);
    else {
      const byMac = new Map(kernel.mapEntries.map((e) => [e.mac, e]));
      const expectedMacs = new Set<string>();
      for (const idx of expected) {
        const a = slotAddressing(opts.prefix, cidr, idx);
        expectedMacs.add(a.slotMac);
        const entry = byMac.get(a.slotMac);
        if (!entry) {
          problems.push(`NAT map entry of slot ${idx} is missing`);
          continue;
        }
        if (entry.outsideAddress !== a.outsideAddress) problems.push(`NAT map entry of slot ${idx} maps to ${entry.outsideAddress}, not ${a.outsideAddress}`);
        const lease = leases.find((l) => l.slotIndex === idx);
        const vni = lease?.network?.vni ?? 0;
        if (entry.vni !== vni) problems.push(`slot ${idx} carries VNI ${entry.vni} in the map; its lease says ${vni}`);
      }
      for (const e of kernel.mapEntries) if (!expectedMacs.has(e.mac)) problems.push(`NAT map holds an entry for ${e.mac}, which is no slot of the pool`);
    }
    if (opts.fingerprints !== false && kernel.pinned) problems.push(...checkFreeSlotFingerprints(opts, cidr, [...slots.values()].filter((x) => x.state === "free").map((x) => x.idx)));
    const counts = store.slotCounts();
    if (counts.total - counts.missing !== kernel.namespaces.size) {
      problems.push(`store counts ${counts.total - counts.missing} built slots, the kernel ${kernel.namespaces.size} namespaces`);
    }
  } finally {
    store.close();
  }
  return problems;
}

/** Every free slot must be identical to the golden (freshly built) slot the daemon saved. */
function checkFreeSlotFingerprints(opts: CheckOptions, cidr: Cidr, free: number[]): string[] {
  const golden = loadGolden(opts.stateDir);
  if (!golden) return free.length > 0 ? ["no golden fingerprint saved in the state dir: free slots cannot be verified"] : [];
  const problems: string[] = [];
  for (const idx of free) {
    if (!fs.existsSync(slotAddressing(opts.prefix, cidr, idx).netnsPath)) continue; // reported as a missing namespace
    const diff = diffFingerprints(golden, fingerprintOf(opts.prefix, cidr, idx));
    if (diff.length > 0) problems.push(`free slot ${idx} differs from a fresh slot: ${diff.slice(0, 3).join("; ")}`);
  }
  return problems;
}
