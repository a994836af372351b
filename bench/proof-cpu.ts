// What it costs to prove a released slot clean (issue 15, goal 1: ≤ 1 ms CPU median for
// an untouched slot): `node dist/bench/proof-cpu.js [N]`, or `measureProof(opts)` from
// `npm run bench`. One scratch slot on a scratch uplink. Reports process CPU (user +
// system) per proof, median and p99, for:
// - untouched: the scrub's reset, then the proof the scrub worker makes (dataplane/prover.ts),
//   N times with nothing changed in between; each proof scans processes itself, and
//   "batched" shares one scan among 8 proofs, as the worker does for slots released together;
//   at the daemon's default configuration (no sysctl watch: every proof reads the sysctls)
//   unless `watchSysctls` is set (--watch-sysctls); the sysctl read is also broken down by
//   section (which files were read, which values came with the link dump);
// - full: the full fingerprint (every section read), as the audit and a dirty slot get it;
// - dirty: a sysctl changed while leased, caught, then the full proof of the slot;
// - rebuild: destroying the slot and building it again instead of proving it (process CPU
//   and wall; the kernel frees the old namespace later on its workqueue, not counted).
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import type { SlotDataplane } from "../src/dataplane/dataplane.js";
import { diffFingerprints } from "../src/dataplane/fingerprint.js";
import { Prover } from "../src/dataplane/prover.js";
import { withNetns } from "../src/kernel/netns.js";
import { inspectNamespace } from "../src/kernel/netlink/inspect.js";
import { readAllNetSysctls, writeSysctl, type SysctlReadStats } from "../src/kernel/sysctl.js";
import { scratchDataplane } from "./lib/util.js";

export interface ProofOptions {
  /** Proofs of each kind (default 200). */
  n?: number;
  /** Destroy + rebuild rounds (default 20). */
  rebuilds?: number;
  /** Prove with the sysctl watch on (the daemon's --watch-sysctls); default off, as the daemon. */
  watchSysctls?: boolean;
}

export interface Spread {
  median: number;
  p99: number;
  n: number;
}

export interface ProofResult {
  /** The proof of an untouched released slot, CPU ms, each proof scanning processes itself. */
  untouched: Spread & { fastPaths: number; phases: Record<string, number>; watchSysctls: boolean };
  /**
   * The untouched proof's sysctl read by section (conf/<dev>, conf/all, conf/default,
   * neigh/<dev>, other): files opened and read, values taken from the link dump, and the
   * median CPU ms of reading that section alone (files, directory listings, conversion).
   */
  sysctlSections: Record<string, { files: number; dumped: number; cpu: number }>;
  /** The same with one process scan shared by 8 released slots (the worker's batches). */
  untouchedBatched: Spread;
  /** The scrub's reset that precedes every proof (tap, conntrack, neighbours, map entry), CPU ms. */
  reset: Spread;
  /** The full fingerprint, CPU ms, and its phases (median CPU ms; "wall X": median wall ms). */
  full: Spread & { phases: Record<string, number> };
  /** A slot whose sysctl changed while leased: the proof that catches it, CPU ms (then a full proof follows). */
  dirty: Spread & { caught: number };
  /** Destroy + build of the slot instead of a proof: this process's CPU ms, and wall ms. */
  rebuild: { cpu: Spread; wall: Spread };
}

/** Sections of the sysctl tree, by how they can be read. */
const SYSCTL_SECTIONS = ["conf/<dev>", "conf/all", "conf/default", "neigh/<dev>", "other"] as const;

function inSection(key: string, section: (typeof SYSCTL_SECTIONS)[number]): boolean {
  const parts = key.split(".");
  if (/^ipv[46]$/.test(parts[1] ?? "")) {
    // net.ipv4, net.ipv4.conf, net.ipv4.neigh: walked into for every section.
    if (parts.length === 2) return true;
    if (parts[2] === "conf" || parts[2] === "neigh") {
      if (parts.length === 3) return true;
      const own = parts[2] === "neigh" ? "neigh/<dev>" : parts[3] === "all" ? "conf/all" : parts[3] === "default" ? "conf/default" : "conf/<dev>";
      return own === section;
    }
  }
  return section === "other";
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))] ?? NaN;
const spread = (xs: number[]): Spread => ({ median: pct(xs, 0.5), p99: pct(xs, 0.99), n: xs.length });

function cpuMs(fn: () => void): number {
  const c0 = process.cpuUsage();
  fn();
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / 1000;
}

/** Runs the measurement on a scratch slot (root; builds and removes its own uplink and slot). */
export function measureProof(opts: ProofOptions = {}): ProofResult {
  const n = opts.n ?? 200;
  const rebuilds = opts.rebuilds ?? 20;
  const scratch = scratchDataplane(`pc${process.pid % 100000}`);
  const slot = scratch.dp;
  let prover: Prover | undefined;
  try {
    slot.buildSlot(0);
    const golden = slot.fingerprint(0);
    const watch = opts.watchSysctls ?? false;
    prover = new Prover(slot, { maxWatches: watch ? 1000 : 0 });
    const p = prover;
    const check = (proof: { diff: string[] }) => {
      if (proof.diff.length > 0) throw new Error(`untouched slot differs: ${proof.diff.join("; ")}`);
    };
    check(p.prove(0, golden)); // the first proof is full and takes the watches

    const reset: number[] = [];
    const untouched: number[] = [];
    const phases = new Map<string, number[]>();
    let fastPaths = 0;
    const taps = (outcome: { tap?: Record<string, string> }) => (outcome.tap ? { taps: { tap0: outcome.tap } } : {});
    for (let i = 0; i < n; i++) {
      let outcome!: ReturnType<SlotDataplane["scrub"]>;
      reset.push(cpuMs(() => void (outcome = slot.scrub(0, undefined))));
      let proof!: ReturnType<Prover["prove"]>;
      untouched.push(cpuMs(() => (proof = p.prove(0, golden, taps(outcome)))));
      check(proof);
      if (proof.path === "fast") fastPaths++;
    }
    // Phases of the fast path (the prover's fingerprint call, timed from outside: a few runs).
    for (let i = 0; i < Math.min(n, 50); i++) {
      const timings: Record<string, number> = {};
      const outcome = slot.scrub(0, undefined);
      slot.fingerprint(0, timings, { from: golden, noProbe: true, nftables: true, sysctls: watch, processes: [], ...taps(outcome) });
      for (const [k, v] of Object.entries(timings)) if (k.startsWith("cpu ")) phases.set(k.slice(4), [...(phases.get(k.slice(4)) ?? []), v]);
    }

    // The sysctl read by section: what it reads, and the CPU of reading each section alone.
    const sysctlSections: ProofResult["sysctlSections"] = {};
    const netnsPath = slot.addressing(0).netnsPath;
    withNetns(netnsPath, () => {
      const devices = new Map(inspectNamespace().links.map((l) => [l.name, l.devconf]));
      const sections = new Map<string, { files: number; dumped: number; cpu: number[] }>();
      for (let i = 0; i < Math.min(n, 50); i++) {
        for (const section of SYSCTL_SECTIONS) {
          const stats: SysctlReadStats = { files: 0, dumped: 0 };
          const cpu = cpuMs(() => void readAllNetSysctls((key) => !inSection(key, section), { devices, stats }));
          const s = sections.get(section) ?? { files: stats.files, dumped: stats.dumped, cpu: [] };
          s.cpu.push(cpu);
          sections.set(section, s);
        }
      }
      for (const [section, s] of sections) sysctlSections[section] = { files: s.files, dumped: s.dumped, cpu: Number(pct(s.cpu, 0.5).toFixed(3)) };
    });

    const batched: number[] = [];
    for (let i = 0; i < n; i += 8) {
      const since = process.hrtime.bigint();
      for (let j = 0; j < 8 && i + j < n; j++) {
        const outcome = slot.scrub(0, undefined);
        let proof!: ReturnType<Prover["prove"]>;
        batched.push(cpuMs(() => (proof = p.prove(0, golden, { since, ...taps(outcome) }))));
        check(proof);
      }
    }

    const full: number[] = [];
    const fullPhases = new Map<string, number[]>();
    for (let i = 0; i < n; i++) {
      const timings: Record<string, number> = {};
      let fp!: ReturnType<SlotDataplane["fingerprint"]>;
      full.push(cpuMs(() => (fp = slot.fingerprint(0, timings))));
      const d = diffFingerprints(golden, fp);
      if (d.length > 0) throw new Error(`untouched slot differs: ${d.join("; ")}`);
      for (const [k, v] of Object.entries(timings)) {
        const key = k.startsWith("cpu ") ? k.slice(4) : `wall ${k}`;
        fullPhases.set(key, [...(fullPhases.get(key) ?? []), v]);
      }
    }

    // A tenant changes a sysctl; the proof catches it; it is put back and proven in full.
    const dirty: number[] = [];
    let caught = 0;
    for (let i = 0; i < Math.max(1, Math.floor(n / 10)); i++) {
      withNetns(netnsPath, () => writeSysctl("net.ipv4.tcp_syn_retries", 4));
      slot.scrub(0, undefined);
      let proof!: ReturnType<Prover["prove"]>;
      dirty.push(cpuMs(() => (proof = p.prove(0, golden))));
      if (proof.diff.length > 0) caught++;
      withNetns(netnsPath, () => writeSysctl("net.ipv4.tcp_syn_retries", 6));
      check(p.prove(0, golden));
    }

    const rebuildCpu: number[] = [];
    const rebuildWall: number[] = [];
    for (let i = 0; i < rebuilds; i++) {
      const t = performance.now();
      rebuildCpu.push(
        cpuMs(() => {
          p.forget(0);
          slot.destroySlot(0);
          slot.buildSlot(0);
        }),
      );
      rebuildWall.push(performance.now() - t);
    }

    const medians = (m: Map<string, number[]>) => Object.fromEntries([...m].map(([k, v]) => [k, Number(pct(v, 0.5).toFixed(3))]));
    return {
      untouched: { ...spread(untouched), fastPaths, phases: medians(phases), watchSysctls: watch },
      sysctlSections,
      untouchedBatched: spread(batched),
      reset: spread(reset),
      full: { ...spread(full), phases: medians(fullPhases) },
      dirty: { ...spread(dirty), caught },
      rebuild: { cpu: spread(rebuildCpu), wall: spread(rebuildWall) },
    };
  } finally {
    prover?.close();
    scratch.remove();
  }
}

function text(r: ProofResult): string {
  const s = (x: Spread) => `median ${x.median.toFixed(2)} ms, p99 ${x.p99.toFixed(2)} ms (N=${x.n})`;
  const ph = (o: Record<string, number>) =>
    Object.entries(o)
      .map(([k, v]) => `${k} ${v.toFixed(2)}`)
      .join(", ");
  return [
    `proof of an untouched slot (sysctl watch ${r.untouched.watchSysctls ? "on" : "off"}), CPU: ${s(r.untouched)}; fast path ${r.untouched.fastPaths}/${r.untouched.n}`,
    `  phases (median CPU ms): ${ph(r.untouched.phases)}`,
    `  sysctls by section: ${Object.entries(r.sysctlSections)
      .map(([k, v]) => `${k} ${v.files} files + ${v.dumped} from the link dump, ${v.cpu.toFixed(2)} ms`)
      .join("; ")}`,
    `  with one process scan per 8 released slots: ${s(r.untouchedBatched)}`,
    `the scrub's reset before it, CPU: ${s(r.reset)}`,
    `full fingerprint, CPU: ${s(r.full)}`,
    `  phases (median ms): ${ph(r.full.phases)}`,
    `a sysctl changed while leased: caught ${r.dirty.caught}/${r.dirty.n}, CPU of the catching proof: ${s(r.dirty)}`,
    `destroy + rebuild instead: CPU ${s(r.rebuild.cpu)}; wall ${s(r.rebuild.wall)}`,
  ].join("\n");
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const r = measureProof({ n: Number(process.argv.slice(2).find((a) => !a.startsWith("--")) ?? 200), watchSysctls: process.argv.includes("--watch-sysctls") });
  process.stdout.write(`${text(r)}\n`);
  if (process.argv.includes("--json")) process.stdout.write(`${JSON.stringify(r)}\n`);
}
