// Where the recycle cycle's time and CPU go (issue 15, goals 2 and 3):
// `node dist/bench/recycle-steps.js [N=300] [--watch] [--daemon [--seconds S=20] [--clients C=8] [--nice K]]`.
//
// Part 1, on one thread in this process (N scratch slots on a scratch uplink, with vx0):
// the scrub worker's job for an untouched released slot, step by step — the reset
// (`dataplane.scrub()`: map entries, netns switch, tap reset, conntrack and neighbour
// flush) and the proof (`Prover.prove()`: nftables generation, process scan, each phase of
// the fingerprint, the diff) — with wall and thread CPU time (CLOCK_THREAD_CPUTIME_ID) per
// step, in three rounds over every slot: the first release of each slot (no clean record
// yet: the full proof), then again one slot at a time (the fast proof, a process scan
// each), then in batches of 8 sharing one process scan (as the worker does for slots
// released together). `--watch`: the sysctl watch on (`--watch-sysctls`); the daemon's
// default is off.
//
// Part 2 (`--daemon`): a daemon with N slots, C clients recycling request → release back
// to back for S seconds; CPU per thread of the daemon from /proc/PID/task/TID/stat (the
// main thread, the scrub worker — the thread at nice 5 —, the rest by name), and the
// machine's CPU from /proc/stat (kernel work on workqueues and softirqs shows there, in
// no thread of the daemon), per cycle; and how long each thread was runnable but waiting
// for a CPU (/proc/PID/task/TID/schedstat). `--nice K`: the daemon's --scrub-nice.
import * as fs from "node:fs";
import { Prover } from "../src/dataplane/prover.js";
import { threadCpuMs } from "../src/kernel/libc.js";
import { NetslotApiError, NetslotClient } from "../src/sdk/index.js";
import { startDaemon, sleep, sh, CLI } from "../test/support/env.js";
import { scratchDataplane, scratchUplink } from "./lib/util.js";

const argv = process.argv.slice(2);
const flag = (name: string, dflt: number) => {
  const i = argv.indexOf(name);
  return i >= 0 ? Number(argv[i + 1]) : dflt;
};
const N = Number(argv.find((a, i) => /^\d+$/.test(a) && !/^--/.test(argv[i - 1] ?? "")) ?? 300);
if (N > 1000) throw new Error("at most 1,000 slots (shared machine)");
const prefix = `rs${process.pid % 100000}`;
const out = (line: string) => process.stdout.write(`${line}\n`);

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))] ?? NaN;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

function report(title: string, rounds: Array<Record<string, number>>, totals: { wall: number[]; cpu: number[] }): void {
  out(`\n${title}: per slot wall mean ${mean(totals.wall).toFixed(3)} ms (p50 ${pct(totals.wall, 0.5).toFixed(3)}, p99 ${pct(totals.wall, 0.99).toFixed(3)}), thread CPU mean ${mean(totals.cpu).toFixed(3)} ms (p50 ${pct(totals.cpu, 0.5).toFixed(3)}) → ${(1000 / mean(totals.wall)).toFixed(0)} slots/s on one thread`);
  out(`  ${"step".padEnd(34)} ${"wall mean".padStart(9)} ${"cpu mean".padStart(9)} ${"cpu p50".padStart(9)}  (ms)`);
  const steps = [...new Set(rounds.flatMap((r) => Object.keys(r)))].filter((k) => !k.startsWith("cpu "));
  for (const step of steps) {
    const w = rounds.map((r) => r[step] ?? 0);
    const c = rounds.map((r) => r[`cpu ${step}`] ?? 0);
    if (mean(w) < 0.0005) continue;
    out(`  ${step.padEnd(34)} ${mean(w).toFixed(3).padStart(9)} ${mean(c).toFixed(3).padStart(9)} ${pct(c, 0.5).toFixed(3).padStart(9)}`);
  }
}

function inProcess(): void {
  const scratch = scratchDataplane(prefix, { vtepRemote: "198.18.0.1" });
  let prover: Prover | undefined;
  try {
    const dp = scratch.dp;
    const slots = dp;
    const t0 = performance.now();
    for (let i = 0; i < N; i++) slots.buildSlot(i);
    out(`${N} slots built in ${((performance.now() - t0) / 1000).toFixed(2)} s; sysctl watch ${argv.includes("--watch") ? "on" : "off (the daemon's default)"}`);
    const golden = slots.fingerprint(0);
    prover = new Prover(slots, { maxWatches: argv.includes("--watch") ? 96_000 : 0 });
    const p = prover;
    const round = (title: string, batch: number) => {
      const rounds: Array<Record<string, number>> = [];
      const wall: number[] = [];
      const cpu: number[] = [];
      const paths = new Map<string, number>();
      for (let i = 0; i < N; i += batch) {
        const since = process.hrtime.bigint();
        for (let j = i; j < Math.min(N, i + batch); j++) {
          const timings: Record<string, number> = {};
          const w0 = performance.now();
          const c0 = threadCpuMs();
          const outcome = slots.scrub(j, undefined, false, timings);
          if (!outcome.ok) throw new Error(`slot ${j}: ${outcome.reason}`);
          const proof = p.prove(j, golden, { since, ...(outcome.tap ? { taps: { tap0: outcome.tap } } : {}), timings });
          wall.push(performance.now() - w0);
          cpu.push(threadCpuMs() - c0);
          if (proof.diff.length > 0) throw new Error(`slot ${j} differs: ${proof.diff.slice(0, 3).join("; ")}`);
          paths.set(proof.path, (paths.get(proof.path) ?? 0) + 1);
          rounds.push(timings);
        }
      }
      report(`${title} (${[...paths].map(([k, v]) => `${v} ${k}`).join(", ")})`, rounds, { wall, cpu });
    };
    round("first release of each slot", 1);
    round("released again, one at a time", 1);
    round("released again, batches of 8 (one process scan each)", 8);
    round("released again, batches of 64", 64);
  } finally {
    prover?.close();
    scratch.remove();
  }
}

/** utime + stime (ms), time spent runnable but waiting for a CPU (ms, schedstat), nice and name of every thread of `pid`. */
function threads(pid: number): Map<number, { name: string; nice: number; ms: number; waitMs: number }> {
  const outMap = new Map<number, { name: string; nice: number; ms: number; waitMs: number }>();
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, "latin1");
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // f[0] is field 3; utime 14, stime 15, nice 19 (clock ticks of 10 ms).
      const sched = fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "latin1").split(" ");
      outMap.set(Number(tid), { name, nice: Number(f[16]), ms: (Number(f[11]) + Number(f[12])) * 10, waitMs: Number(sched[1]) / 1e6 });
    } catch {
      // thread gone
    }
  }
  return outMap;
}

/** The machine's CPU since boot (ms, all CPUs): busy (not idle/iowait), and softirq. */
function machineCpu(): { busy: number; softirq: number } {
  const f = fs.readFileSync("/proc/stat", "latin1").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f as [number, number, number, number, number, number, number, number];
  return { busy: (user + nice + system + irq + softirq + steal) * 10, softirq: softirq * 10 };
}

async function withDaemon(): Promise<void> {
  const seconds = flag("--seconds", 20);
  const clients = flag("--clients", 8);
  const scratch = scratchUplink(prefix);
  const extraArgs = [...(argv.includes("--watch") ? ["--watch-sysctls"] : []), ...(argv.includes("--nice") ? ["--scrub-nice", String(flag("--nice", 5))] : [])];
  const daemon = await startDaemon({ prefix, poolSize: N, uplink: scratch.uplink, vtepRemote: "198.18.0.1", extraArgs });
  const pid = daemon.process.pid!;
  const cs = Array.from({ length: clients }, () => new NetslotClient({ socketPath: daemon.socket }));
  try {
    out(`daemon pid ${pid}, ${N} slots, ${clients} clients × ${seconds} s`);
    const t0 = threads(pid);
    const m0 = machineCpu();
    let cycles = 0;
    let exhausted = 0;
    const end = performance.now() + seconds * 1000;
    await Promise.all(
      cs.map(async (c) => {
        while (performance.now() < end) {
          try {
            const lease = await c.acquire({ autoRenew: false });
            await c.release(lease.id);
            cycles++;
          } catch (err) {
            if (!(err instanceof NetslotApiError) || err.code !== "pool_exhausted") throw err;
            exhausted++;
            await sleep(5);
          }
        }
      }),
    );
    const windowThreads = threads(pid);
    const windowMachine = machineCpu();
    // The window's releases still scrubbing: their CPU counts too, reported apart.
    let scrubbing = (await daemon.client.pool()).scrubbing;
    const drainStart = performance.now();
    while (scrubbing > 0 && performance.now() - drainStart < 120_000) {
      await sleep(50);
      scrubbing = (await daemon.client.pool()).scrubbing;
    }
    const t1 = threads(pid);
    const m1 = machineCpu();
    out(`${cycles} cycles (${(cycles / seconds).toFixed(0)}/s), ${exhausted} pool_exhausted; drained in ${((performance.now() - drainStart) / 1000).toFixed(1)} s`);
    out(`  ${"thread".padEnd(28)} ${"window ms".padStart(10)} ${"+drain ms".padStart(10)} ${"ms/cycle".padStart(9)} ${"runnable, waiting for a CPU in the window (ms)".padStart(12)}`);
    const groups = new Map<string, [number, number, number]>();
    const mainNice = t1.get(pid)?.nice ?? 0;
    for (const [tid, after] of t1) {
      const before = t0.get(tid);
      const group = tid === pid ? "main (API, pool, store)" : after.nice !== mainNice ? `scrub worker (nice ${after.nice})` : after.name;
      const g = groups.get(group) ?? [0, 0, 0];
      g[0] += (windowThreads.get(tid)?.ms ?? after.ms) - (before?.ms ?? 0);
      g[1] += after.ms - (before?.ms ?? 0);
      g[2] += (windowThreads.get(tid)?.waitMs ?? after.waitMs) - (before?.waitMs ?? 0);
      groups.set(group, g);
    }
    let daemonTotal = 0;
    for (const [name, [w, d, wait]] of [...groups].sort((a, b) => b[1][1] - a[1][1])) {
      daemonTotal += d;
      out(`  ${name.padEnd(28)} ${w.toFixed(0).padStart(10)} ${d.toFixed(0).padStart(10)} ${(d / cycles).toFixed(3).padStart(9)} ${wait.toFixed(0).padStart(12)}`);
    }
    out(`  ${"daemon, all threads".padEnd(28)} ${"".padStart(10)} ${daemonTotal.toFixed(0).padStart(10)} ${(daemonTotal / cycles).toFixed(3).padStart(9)}`);
    out(`machine busy in the window ${(windowMachine.busy - m0.busy).toFixed(0)} ms of ${(seconds * 2000).toFixed(0)} (softirq ${(windowMachine.softirq - m0.softirq).toFixed(0)}); with the drain ${(m1.busy - m0.busy).toFixed(0)} ms (${((m1.busy - m0.busy) / cycles).toFixed(3)} ms/cycle; includes this client and anything else running)`);
    const metrics = await daemon.client.metrics();
    for (const line of metrics.split("\n")) if (/^netslot_scrub_proofs_total|^netslot_scrub_seconds_(sum|count)|^netslot_release_to_reusable_seconds_(sum|count)/.test(line)) out(`  ${line}`);
  } finally {
    for (const c of cs) c.close();
    await daemon.cleanup();
    sh(process.execPath, [CLI, "purge", "--prefix", prefix, "--state-dir", daemon.stateDir], { allowFail: true });
    scratch.remove();
  }
}

if (argv.includes("--daemon")) await withDaemon();
else inProcess();
