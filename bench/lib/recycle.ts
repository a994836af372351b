// The pool recycling under load (issue 15, goals 2 and 3): 8 SDK clients loop
// request → release back to back for a fixed window on a full pool, while one more client
// (the probe) does a paced request → release and times what an ordinary consumer sees.
// Counted: cycles, `pool_exhausted` answers, slots quarantined; from the daemon's /metrics
// before and after: release → reusable, scrub and acquire histograms, and the event-loop
// delay of its main thread; from /proc/PID/stat: the daemon's CPU (all threads: the API,
// the pool and the scrub worker) over the window and until the last scrub of the window
// is done, per cycle. Once a second: cycles, answers and the pool's state counts, for the chart.
import * as fs from "node:fs";
import { NetslotApiError, NetslotClient } from "../../src/sdk/index.js";
import { sh, sleep } from "../../test/support/env.js";
import { histogramDelta, histogramSummary, parseHistogram, parsePercentiles } from "./prom.js";
import { errorText, now, round, summarize, type Summary } from "./util.js";

export interface RecycleOptions {
  socket: string;
  /** The daemon's pid, for its CPU time. */
  pid: number;
  poolSize: number;
  clients: number;
  seconds: number;
  /** The probe's period: one request → release every this many ms. */
  probeIntervalMs: number;
  /** How long to wait for a full pool before the window, and for the scrubs after it. */
  settleSeconds: number;
  log: (msg: string) => void;
}

/** One second of the window. */
export interface RecycleSecond {
  /** Seconds since the window started (end of this one-second step). */
  t: number;
  /** Cycles (request + release) completed by the 8 clients in this second. */
  cycles: number;
  /** `pool_exhausted` answers in this second. */
  exhausted: number;
  free: number;
  leased: number;
  scrubbing: number;
  quarantined: number;
  /** Daemon CPU (user + system, all threads) in this second, in % of one core. */
  daemonCpuPercent: number;
}

type HistSummary = ReturnType<typeof histogramSummary>;

export interface RecycleResult {
  poolSize: number;
  clients: number;
  /** Window length as run. */
  seconds: number;
  cycles: number;
  cyclesPerSecond: number;
  /** `503 pool_exhausted` answers the clients got (each is retried after 5 ms). */
  exhausted: number;
  /** Other errors. */
  errors: number;
  firstError?: string;
  /** Free and still scrubbing slots when the window started (the scrubs of earlier releases then count in the window). */
  freeAtStart: number;
  scrubbingAtStart?: number;
  /** Quarantined slots before the window and once its scrubs were done. */
  quarantinedBefore: number;
  quarantinedAfter: number;
  /** Client-side, the 8 clients. */
  requestMs: Summary;
  releaseAckMs: Summary;
  /** The probe: one more client, paced, while the 8 recycle. */
  probe: { intervalMs: number; cycles: number; exhausted: number; errors: number; requestMs: Summary; releaseAckMs: Summary };
  /** Daemon histograms over the window (and the scrubs it left). */
  server: {
    acquire: HistSummary | undefined;
    release: HistSummary | undefined;
    releaseToReusable: HistSummary | undefined;
    scrub: HistSummary | undefined;
  };
  /** netslot_event_loop_delay_seconds after the window (percentiles since the previous scrape, taken just before it). */
  eventLoopDelayMs?: { p50?: number; p90?: number; p99?: number; max?: number };
  /** Daemon CPU from /proc/PID/stat (utime + stime, all threads). */
  cpu: {
    clockTicksPerSecond: number;
    /** Over the window only. */
    windowMs: number;
    /** From the window's start until the scrubs of its releases were done. */
    untilDrainedMs: number;
    drainedAfterSeconds: number;
    drained: boolean;
    /**
     * untilDrainedMs ÷ (cycles of the 8 clients + the probe's): request + release + scrub.
     * The same population on both sides: the window starts with no scrub pending
     * (scrubbingAtStart), and the drain runs exactly the scrubs of the window's releases.
     * It includes the answers to rejected requests (`rejectedRequests`) and the
     * benchmark's own `/v1/pool` polls, which the main thread serves.
     */
    msPerCycle: number;
    /** `pool_exhausted` answers served meanwhile (8 clients + probe): main-thread work that is in msPerCycle but no cycle. */
    rejectedRequests?: number;
    /**
     * Per thread of the daemon (/proc/PID/task/TID/stat), window and until drained: the main
     * thread (API, pool, store), the scrub worker (the thread at a nice value other than the
     * main thread's: it renices itself), and the others (V8 and libuv helpers).
     */
    threads?: Record<"main" | "scrub" | "other", { windowMs: number; untilDrainedMs: number }>;
    /** Scrub worker CPU until drained ÷ cycles: the scrub's share of a cycle. */
    scrubMsPerCycle?: number;
    /** Main thread CPU until drained ÷ every API request it answered (served cycles × 2 + rejected). */
    mainMsPerRequest?: number;
    /** msPerCycle without the main thread's share spent on rejected requests (at mainMsPerRequest each). */
    msPerServedCycle?: number;
  };
  series: RecycleSecond[];
}

let clockTicks: number | undefined;
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(sh("getconf", ["CLK_TCK"]).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** utime + stime of a process (all its threads), in ms. */
export function processCpuMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  // The command name may hold spaces and parentheses: fields count from the last ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  const ticks = Number(fields[11]) + Number(fields[12]);
  return (ticks * 1000) / ticksPerSecond();
}

type ThreadGroup = "main" | "scrub" | "other";

/** utime + stime (ms) of a process's threads, grouped: main thread, scrub worker (reniced), the rest. */
export function threadCpuMs(pid: number): Record<ThreadGroup, number> {
  const out: Record<ThreadGroup, number> = { main: 0, scrub: 0, other: 0 };
  const stats: Array<{ tid: number; nice: number; ms: number }> = [];
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, "latin1");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // f[0] is field 3; utime 14, stime 15, nice 19.
      stats.push({ tid: Number(tid), nice: Number(f[16]), ms: ((Number(f[11]) + Number(f[12])) * 1000) / ticksPerSecond() });
    } catch {
      // the thread ended meanwhile
    }
  }
  const mainNice = stats.find((t) => t.tid === pid)?.nice ?? 0;
  for (const t of stats) out[t.tid === pid ? "main" : t.nice !== mainNice ? "scrub" : "other"] += t.ms;
  return out;
}

async function metricsText(client: NetslotClient): Promise<string> {
  try {
    return await client.metrics();
  } catch {
    return "";
  }
}

export async function measureRecycle(opts: RecycleOptions): Promise<RecycleResult> {
  const cs = Array.from({ length: opts.clients }, () => new NetslotClient({ socketPath: opts.socket }));
  const probe = new NetslotClient({ socketPath: opts.socket });
  const monitor = new NetslotClient({ socketPath: opts.socket });
  try {
    await Promise.all([...cs, probe, monitor].map((c) => c.health()));
    // Start with the pool full (earlier releases may still be scrubbing), within reason.
    const fullBy = now() + opts.settleSeconds * 1000;
    let start = await monitor.pool();
    while (start.free < opts.poolSize && now() < fullBy) {
      await sleep(100);
      start = await monitor.pool();
    }
    const before = await metricsText(monitor); // also starts the event-loop delay window
    const cpu0 = processCpuMs(opts.pid);
    const threads0 = threadCpuMs(opts.pid);

    const req: number[] = [];
    const rel: number[] = [];
    const errs = { exhausted: 0, other: 0, first: undefined as string | undefined };
    let cycles = 0;
    const t0 = now();
    const end = t0 + opts.seconds * 1000;
    const loop = async (c: NetslotClient) => {
      while (now() < end) {
        try {
          const a = now();
          const lease = await c.acquire({ autoRenew: false });
          const b = now();
          await c.release(lease.id);
          req.push(b - a);
          rel.push(now() - b);
          cycles++;
        } catch (err) {
          if (err instanceof NetslotApiError && err.code === "pool_exhausted") {
            errs.exhausted++;
            await sleep(5);
            continue;
          }
          errs.other++;
          errs.first ??= errorText(err);
          if (errs.other > 10_000) throw err;
        }
      }
    };
    const probeRun = { cycles: 0, exhausted: 0, errors: 0, req: [] as number[], rel: [] as number[] };
    const probeLoop = async () => {
      let next = now();
      while (now() < end) {
        next += opts.probeIntervalMs;
        try {
          const a = now();
          const lease = await probe.acquire({ autoRenew: false });
          const b = now();
          await probe.release(lease.id);
          probeRun.req.push(b - a);
          probeRun.rel.push(now() - b);
          probeRun.cycles++;
        } catch (err) {
          if (err instanceof NetslotApiError && err.code === "pool_exhausted") probeRun.exhausted++;
          else probeRun.errors++;
        }
        const wait = next - now();
        if (wait > 0) await sleep(wait);
        else next = now();
      }
    };
    // Once a second: what happened in it and the pool's state at its end.
    const series: RecycleSecond[] = [];
    const sampler = (async () => {
      let lastCycles = 0;
      let lastExhausted = 0;
      let lastCpu = cpu0;
      let lastT = t0;
      for (let k = 1; t0 + k * 1000 <= end + 1; k++) {
        const wait = t0 + k * 1000 - now();
        if (wait > 0) await sleep(wait);
        const t = now();
        const c = cycles;
        const x = errs.exhausted;
        const cpu = processCpuMs(opts.pid);
        const p = await monitor.pool().catch(() => undefined);
        series.push({
          t: round((t - t0) / 1000, 3),
          cycles: c - lastCycles,
          exhausted: x - lastExhausted,
          free: p?.free ?? NaN,
          leased: p?.leased ?? NaN,
          scrubbing: p?.scrubbing ?? NaN,
          quarantined: p?.quarantined ?? NaN,
          daemonCpuPercent: round(((cpu - lastCpu) / (t - lastT)) * 100, 1),
        });
        lastCycles = c;
        lastExhausted = x;
        lastCpu = cpu;
        lastT = t;
      }
    })();
    await Promise.all([...cs.map(loop), probeLoop(), sampler]);
    const wall = now() - t0;
    const cpuWindow = processCpuMs(opts.pid) - cpu0;
    const threadsWindow = threadCpuMs(opts.pid);
    const after = await metricsText(monitor);

    // The scrubs of the window's releases: wait until nothing is scrubbing any more.
    const drainStart = now();
    let drained = false;
    let last = await monitor.pool();
    while (now() - drainStart < opts.settleSeconds * 1000) {
      if (last.scrubbing === 0) {
        drained = true;
        break;
      }
      await sleep(20);
      last = await monitor.pool();
    }
    const cpuDrained = processCpuMs(opts.pid) - cpu0;
    const threadsDrained = threadCpuMs(opts.pid);
    const drainedMetrics = await metricsText(monitor);

    const pick = (name: string, text = after) => {
      const a = parseHistogram(text, name);
      return a ? histogramSummary(histogramDelta(parseHistogram(before, name), a)) : undefined;
    };
    const eld = parsePercentiles(after, "netslot_event_loop_delay_seconds");
    const allCycles = cycles + probeRun.cycles;
    const rejected = errs.exhausted + probeRun.exhausted;
    const threads = Object.fromEntries(
      (["main", "scrub", "other"] as const).map((g) => [g, { windowMs: threadsWindow[g] - threads0[g], untilDrainedMs: threadsDrained[g] - threads0[g] }]),
    ) as Record<ThreadGroup, { windowMs: number; untilDrainedMs: number }>;
    const mainMsPerRequest = threads.main.untilDrainedMs / Math.max(1, 2 * allCycles + rejected);
    const result: RecycleResult = {
      poolSize: opts.poolSize,
      clients: opts.clients,
      seconds: wall / 1000,
      cycles,
      cyclesPerSecond: (cycles / wall) * 1000,
      exhausted: errs.exhausted,
      errors: errs.other,
      ...(errs.first ? { firstError: errs.first } : {}),
      freeAtStart: start.free,
      scrubbingAtStart: start.scrubbing,
      quarantinedBefore: start.quarantined,
      quarantinedAfter: last.quarantined,
      requestMs: summarize(req),
      releaseAckMs: summarize(rel),
      probe: { intervalMs: opts.probeIntervalMs, cycles: probeRun.cycles, exhausted: probeRun.exhausted, errors: probeRun.errors, requestMs: summarize(probeRun.req), releaseAckMs: summarize(probeRun.rel) },
      server: {
        acquire: pick("netslot_acquire_seconds"),
        release: pick("netslot_release_seconds"),
        // Reuse and scrub include the scrubs finished after the window.
        releaseToReusable: pick("netslot_release_to_reusable_seconds", drainedMetrics),
        scrub: pick("netslot_scrub_seconds", drainedMetrics),
      },
      ...(eld
        ? {
            eventLoopDelayMs: {
              ...(eld.get(50) !== undefined ? { p50: eld.get(50)! * 1000 } : {}),
              ...(eld.get(90) !== undefined ? { p90: eld.get(90)! * 1000 } : {}),
              ...(eld.get(99) !== undefined ? { p99: eld.get(99)! * 1000 } : {}),
              ...(eld.get(100) !== undefined ? { max: eld.get(100)! * 1000 } : {}),
            },
          }
        : {}),
      cpu: {
        clockTicksPerSecond: ticksPerSecond(),
        windowMs: cpuWindow,
        untilDrainedMs: cpuDrained,
        drainedAfterSeconds: (now() - drainStart) / 1000,
        drained,
        msPerCycle: allCycles > 0 ? cpuDrained / allCycles : NaN,
        rejectedRequests: rejected,
        threads,
        scrubMsPerCycle: allCycles > 0 ? threads.scrub.untilDrainedMs / allCycles : NaN,
        mainMsPerRequest,
        msPerServedCycle: allCycles > 0 ? (cpuDrained - mainMsPerRequest * rejected) / allCycles : NaN,
      },
      series,
    };
    const r2u = result.server.releaseToReusable?.p99;
    opts.log(
      `  ${opts.clients} clients recycling ${round(result.seconds, 1)} s on ${opts.poolSize} slots: ${round(result.cyclesPerSecond, 0)} cycles/s, ` +
        `${result.exhausted} pool_exhausted, quarantined ${result.quarantinedBefore} → ${result.quarantinedAfter}` +
        (result.errors ? `, ${result.errors} errors (${result.firstError})` : "") +
        `; release → reusable p99 ≤ ${r2u ? round(r2u.upperBoundMs, 2) : "?"} ms; daemon CPU ${round(result.cpu.msPerCycle, 3)} ms/cycle` +
        ` (scrub thread ${round(result.cpu.scrubMsPerCycle!, 3)}, main ${round(mainMsPerRequest, 3)} per request of ${2 * allCycles + rejected}; ${round(result.cpu.msPerServedCycle!, 3)} without rejected requests)` +
        `; probe request p99 ${round(result.probe.requestMs.p99)} ms (${result.probe.cycles} cycles)` +
        `; event-loop delay p99 ${result.eventLoopDelayMs?.p99 !== undefined ? `${round(result.eventLoopDelayMs.p99)} ms` : "not exposed"}` +
        (drained ? "" : `; scrubs not drained after ${opts.settleSeconds} s (${last.scrubbing} scrubbing)`),
    );
    return result;
  } finally {
    for (const c of [...cs, probe, monitor]) c.close();
  }
}
