// Proving slots clean against the golden fingerprint, reading only what may have changed.
//
// The full fingerprint reads everything (~11 ms of CPU, most of it ~500 sysctl files, the
// nftables listing and a scan of every process). A slot whose last proof was clean needs
// less: what the kernel can say did not change since then is taken from the reference:
// - sysctl files: nothing opened or wrote one (SysctlWatches: inotify, held directories);
// - nftables: the namespace's generation id is the one read before that proof (every
//   committed transaction advances it);
// - processes: one scan of every namespace serves every slot released before it started;
// - the tap probe frame: the scrub's reset has just cleared every filter it looks for.
// Everything else (rtnetlink dumps, per-device settings from them, tap getters, conntrack,
// xfrm, sockets, the eBPF entries, programs at tcx and namespace hooks) is read every
// time. Both the watch and the generation id are bound to the namespace by its cookie: a
// rebuilt slot (a new namespace) has neither until its next full proof. Anything unexpected falls back to the full proof.
import { nftGeneration } from "../kernel/nftsets.js";
import { netnsKey, netnsProcesses, nsIdOf, type NsProcess } from "../kernel/procfs.js";
import { SysctlWatches } from "../kernel/sysctlwatch.js";
import { stepTimer, type SlotDataplane } from "./dataplane.js";
import { diffFingerprints, type Fingerprint, type ProofShortcuts } from "./fingerprint.js";

export interface ProverOptions {
  /** inotify watches for sysctl change tracking in all (~35 per slot); 0: always read sysctls. */
  maxWatches: number;
}

export interface Proof {
  fingerprint: Fingerprint;
  /** Differences from the golden fingerprint (empty: clean). */
  diff: string[];
  /** "fast": sections were taken from the reference; "full": everything was read. */
  path: "fast" | "full";
}

/** A process scan of every namespace, and when it started (process.hrtime.bigint()). */
interface Scan {
  startedAt: bigint;
  byNs: Map<string, NsProcess[]>;
}

export class Prover {
  private readonly watches: SysctlWatches | undefined;
  /** Slot → its namespace cookie and nftables generation, read before its last clean proof. */
  private readonly clean = new Map<number, { cookie: bigint; gen: number }>();
  private scan: Scan | undefined;

  constructor(
    private readonly dataplane: SlotDataplane,
    opts: ProverOptions,
  ) {
    this.watches = opts.maxWatches > 0 ? new SysctlWatches({ maxWatches: opts.maxWatches }) : undefined;
  }

  /**
   * Proves slot `index` against `golden`: the fast path (what its last clean proof in the
   * same namespace vouches for taken from the reference; without one, only the nftables
   * listing and the sysctl files are read in full), or with `full` the full fingerprint. `since` (process.hrtime.bigint()):
   * when the slot was known released; a process scan started after it may be shared.
   * `full` forces the full fingerprint (the background audit, a dirty slot's re-check).
   * `taps`: the tap settings the scrub's reset read back just before (ScrubOutcome.tap).
   * `timings`: receives the wall ms of its steps and of the fingerprint's phases (and their
   * CPU, "cpu STEP"), for bench/recycle-steps.ts.
   */
  prove(
    index: number,
    golden: Fingerprint,
    opts: { since?: bigint; full?: boolean; taps?: Record<string, Record<string, string>>; timings?: Record<string, number> } = {},
  ): Proof {
    const timings = opts.timings;
    const lap = stepTimer(timings);
    const { cookie, gen } = this.dataplane.inSlot(index, nftGeneration);
    lap("nft generation");
    const last = this.clean.get(index);
    const watched = this.watches?.armedIn(index, cookie) ?? false;
    let shortcuts: ProofShortcuts | undefined;
    if (!opts.full) {
      // Taken from the slot's history, so only after a clean proof in this namespace: the
      // nftables listing and the sysctl files. The rest holds for any released slot, its
      // first release after boot or a rebuild included: the scrub's reset has just cleared
      // every filter the probe frame looks for (and read the tap back), and a process scan
      // started after the release sees what is in the namespace now.
      const known = last !== undefined && last.cookie === cookie;
      shortcuts = {
        from: golden,
        noProbe: true,
        nftables: known && last.gen === gen,
        sysctls: known && watched && this.watches!.untouched(index),
        processes: this.processesOf(index, opts.since ?? process.hrtime.bigint()),
        ...(opts.taps ? { taps: opts.taps } : {}),
      };
    }
    lap("process scan (shared)");
    // Watches are taken before the reads, so that a change made after them shows next time.
    if (!watched && this.watches) this.dataplane.inSlot(index, () => this.watches!.arm(index, cookie));
    lap("watches");
    const phases: Record<string, number> | undefined = timings ? {} : undefined;
    const fingerprint = this.dataplane.fingerprint(index, phases, shortcuts);
    // The fingerprint's own phases (process CPU: the caller runs them on one thread).
    if (phases && timings) {
      for (const [k, v] of Object.entries(phases)) {
        const key = k.startsWith("cpu ") ? `cpu fp ${k.slice(4)}` : `fp ${k}`;
        timings[key] = (timings[key] ?? 0) + v;
      }
    }
    // The fingerprint's time is in its phases.
    lap();
    // Our own reads opened sysctl files too.
    this.watches?.settle(index);
    const diff = diffFingerprints(golden, fingerprint);
    lap("diff");
    if (diff.length === 0) this.clean.set(index, { cookie, gen });
    else this.clean.delete(index);
    return { fingerprint, diff, path: shortcuts ? "fast" : "full" };
  }

  /** The slot is destroyed or rebuilt: nothing known about it holds any more. */
  forget(index: number): void {
    this.clean.delete(index);
    this.watches?.disarm(index);
  }

  /** The golden fingerprint changed: every clean record was against the old one. */
  forgetAll(): void {
    this.clean.clear();
  }

  /** Slots whose sysctls are watched, and the times the event queue overflowed. */
  stats(): { watched: number; overflows: number } {
    return { watched: this.watches?.size ?? 0, overflows: this.watches?.overflows ?? 0 };
  }

  close(): void {
    this.watches?.close();
  }

  private processesOf(index: number, since: bigint): NsProcess[] {
    if (!this.scan || this.scan.startedAt < since) {
      const startedAt = process.hrtime.bigint();
      this.scan = { startedAt, byNs: netnsProcesses() };
    }
    return this.scan.byNs.get(netnsKey(nsIdOf(this.dataplane.addressing(index).netnsPath))) ?? [];
  }
}
