// Targets from the issue, checked against the measured figures; the Markdown summary and
// the SVG charts written next to the JSON.
import * as fs from "node:fs";
import * as path from "node:path";
import type { HistogramPercentile } from "./prom.js";
import { barChart, lineChart, type Series } from "./svg.js";
import type { BenchResults, TargetRow } from "./types.js";
import { round } from "./util.js";

const SPEC = "../../docs/SPECIFICATION.md";

function ms(x: number | undefined, d = 3): string {
  if (x === Infinity) return "beyond the last bucket";
  return x === undefined || !Number.isFinite(x) ? "—" : `${round(x, d)} ms`;
}

function largestBoot(r: BenchResults) {
  return [...r.boot].filter((b) => b.start !== undefined).sort((a, b) => b.n - a.n)[0];
}

/** Evaluates every target of the issue; pass null means "not measured in this run". */
export function evaluateTargets(r: BenchResults): TargetRow[] {
  const rows: TargetRow[] = [];
  const big = largestBoot(r);
  const at = (n: number | undefined) => (n === undefined ? "" : n === 4000 ? "" : ` (at N=${n}, not 4,000)`);
  const one = r.lease.plain?.concurrency.find((c) => c.clients === 1);

  // S1 boot
  {
    const secs = big?.start ? big.start.wallReadyMs / 1000 : undefined;
    rows.push({
      id: "S1",
      what: "4,000 slots ready with --vtep-remote (spawn → health ready, wall clock)",
      target: "≤ 12 s",
      measured:
        secs === undefined
          ? "—"
          : `${round(secs, 2)} s${at(big?.n)}; daemon's own: ${big?.start?.daemonReadySeconds ?? "—"} s${big?.vtepRemote ? "" : "; without --vtep-remote (it failed with it)"}`,
      ratio: secs === undefined ? "—" : `${round(secs / 12, 2)}× of budget`,
      pass: secs === undefined || big?.n !== 4000 ? null : secs <= 12 && big.vtepRemote !== undefined,
      spec: `${SPEC}#s1`,
      ...(big && big.n !== 4000 ? { note: "quick mode: judged at 4,000 only" } : {}),
    });
  }
  // S2/S3 request and release-ack p99 at 1 client
  for (const [id, what, v] of [
    ["S2", "request → lease, p99, 1 client", one?.requestMs.p99],
    ["S3", "release → acknowledged, p99, 1 client", one?.releaseAckMs.p99],
  ] as const) {
    rows.push({
      id,
      what,
      target: "≤ 1 ms",
      measured: `${ms(v)}${at(r.lease.plain?.poolSize)}`,
      ratio: v === undefined ? "—" : `${round(v / 1, 2)}× of budget`,
      pass: v === undefined ? null : v <= 1,
      spec: `${SPEC}#${id.toLowerCase()}`,
    });
  }
  // S4 reusable
  {
    const client = r.lease.plain?.reusable?.releaseToReusableMs.p99;
    const server = one?.server.releaseToReusable?.p99?.upperBoundMs;
    const v = client ?? server;
    rows.push({
      id: "S4",
      what: "release → slot reusable, p99",
      target: "≤ 10 ms",
      measured: `${ms(client)} (client poll); daemon histogram p99 ≤ ${ms(server, 4)}`,
      ratio: v === undefined ? "—" : `${round(v / 10, 2)}× of budget`,
      pass: v === undefined ? null : v <= 10,
      spec: `${SPEC}#s4`,
    });
  }
  // S5 throughput: the recycle window (issue 15, goal 2)
  {
    const rc = r.recycle;
    const judged = recycleJudged(r);
    const old = r.lease.plain?.sustained;
    const v = rc?.cyclesPerSecond ?? old?.cyclesPerSecond;
    const quarantined = rc ? rc.quarantinedAfter - rc.quarantinedBefore : undefined;
    rows.push({
      id: "S5",
      what: `request + release cycles/s, 8 clients${rc ? ` for ${round(rc.seconds, 0)} s on ${rc.poolSize} slots` : ""}, no \`pool_exhausted\`, nothing quarantined`,
      target: "≥ 1,000/s, 0, 0 (60 s, 4,000 slots)",
      measured: rc
        ? `${round(rc.cyclesPerSecond, 0)}/s; ${rc.exhausted} pool_exhausted; ${quarantined} quarantined${rc.errors ? `; ${rc.errors} other errors` : ""}`
        : old
          ? `${round(old.cyclesPerSecond, 0)}/s over ${round(old.seconds, 0)} s (older run: no recycle window)`
          : "—",
      ratio: v === undefined ? "—" : `${round(v / 1000, 2)}×`,
      pass: rc && judged ? rc.cyclesPerSecond >= 1000 && rc.exhausted === 0 && quarantined === 0 && rc.errors === 0 : null,
      spec: `${SPEC}#s5`,
      ...(rc && !judged ? { note: "judged on a full run: 60 s on 4,000 slots" } : notFull(r)),
    });
  }
  // S6 vs CNI
  {
    const cni = [...r.baselines].filter((b) => b.baseline === "cni-bridge" && b.setupMsPerVm !== undefined).sort((a, b) => b.n - a.n)[0];
    const req = one?.requestMs.mean;
    const ratio = cni?.setupMsPerVm !== undefined && req ? cni.setupMsPerVm / req : undefined;
    rows.push({
      id: "S6",
      what: `request vs CNI bridge ADD (mean per VM${cni ? `, CNI at N=${cni.n}` : ""})`,
      target: "≥ 30× faster",
      measured: `${ms(req)} vs ${ms(cni?.setupMsPerVm, 2)}`,
      ratio: ratio === undefined ? "—" : `${round(ratio, 1)}× faster`,
      pass: ratio === undefined ? null : ratio >= 30,
      spec: `${SPEC}#s6`,
    });
  }
  // S7 rules
  {
    const rules = r.footprint.rules;
    const counts = [...new Set(rules.map((x) => x.count))];
    rows.push({
      id: "S7",
      what: "root-namespace rule count at every N",
      target: "identical",
      measured: rules.length ? rules.map((x) => `N=${x.n}: ${x.count}`).join(", ") : "—",
      ratio: counts.length ? `${counts.length} distinct value(s)` : "—",
      pass: rules.length < 2 ? null : counts.length === 1,
      spec: `${SPEC}#s7`,
    });
  }
  // S8 connect skew
  {
    const c = r.footprint.connect;
    const f = c?.first?.hostToGuest?.ms.p99;
    const l = c?.last?.hostToGuest?.ms.p99;
    const ratio = f && l ? l / f : undefined;
    rows.push({
      id: "S8",
      what: `TCP connect p99 host → guest, last slot vs first${c ? ` (N=${c.n})` : ""}`,
      target: "within 10%",
      measured: `first ${ms(f)}, last ${ms(l)}`,
      ratio: ratio === undefined ? "—" : `${round(ratio, 3)}×`,
      pass: ratio === undefined ? null : ratio <= 1.1,
      spec: `${SPEC}#s8`,
    });
  }
  // S9 build skew
  {
    const t = big?.perSlotBuild?.timeline ?? big?.perSlotBuild?.progress;
    rows.push({
      id: "S9",
      what: `per-slot build time, last 10% vs first 10%${big ? ` (N=${big.n})` : ""}`,
      target: "≤ 1.5×",
      measured: t ? `${ms(t.firstTenthMsPerSlot)} → ${ms(t.lastTenthMsPerSlot)}` : "—",
      ratio: t ? `${round(t.ratio, 2)}×` : "—",
      pass: t ? t.ratio <= 1.5 : null,
      spec: `${SPEC}#s9`,
    });
  }
  // S10 RSS
  {
    const m = r.memory;
    const kb = Math.max(m?.daemonRssKbAtReady ?? 0, m?.daemonRssKbAfterLeases ?? 0) || undefined;
    const mb = kb === undefined ? undefined : kb / 1024;
    rows.push({
      id: "S10",
      what: `daemon RSS${m ? ` (N=${m.n})` : ""}`,
      target: "≤ 200 MB",
      measured: mb === undefined ? "—" : `${round(mb, 1)} MiB; kernel ≈ ${round(m?.kernelKbPerSlot ?? NaN, 1)} KiB/slot, slab ${round(m?.slabKbPerSlot ?? NaN, 1)} KiB/slot`,
      ratio: mb === undefined ? "—" : `${round(mb / 200, 2)}× of budget`,
      pass: mb === undefined ? null : mb <= 200,
      spec: `${SPEC}#s10`,
    });
  }
  // S11 restart
  for (const kind of ["sigterm", "kill9"] as const) {
    const run = r.restart.find((x) => x.kind === kind);
    const secs = run?.start ? run.start.wallReadyMs / 1000 : undefined;
    rows.push({
      id: kind === "sigterm" ? "S11" : "S11b",
      what: `restart to ready after ${kind === "sigterm" ? "SIGTERM" : "kill -9"}${run ? ` (N=${run.n})` : ""}`,
      target: "≤ 5 s",
      measured: secs === undefined ? (run?.error ? `error: ${run.error.slice(0, 80)}` : "—") : `${round(secs, 2)} s (daemon's own ${run?.start?.daemonReadySeconds ?? "—"} s)`,
      ratio: secs === undefined ? "—" : `${round(secs / 5, 2)}× of budget`,
      pass: secs === undefined ? null : secs <= 5,
      spec: `${SPEC}#s11`,
    });
  }
  // S12 data path (reported, no target in the issue)
  {
    const d = r.datapath;
    rows.push({
      id: "S12",
      what: "iperf3 guest → upstream through the slot's eBPF NAT vs plain routing",
      target: "report",
      measured:
        d?.netslot?.forward && d.plainRelay?.forward
          ? `${round(d.netslot.forward.bitsPerSecond / 1e9, 2)} vs ${round(d.plainRelay.forward.bitsPerSecond / 1e9, 2)} Gbit/s`
          : d?.error
            ? `error: ${d.error.slice(0, 80)}`
            : "—",
      ratio: d?.ratioForward === undefined ? "—" : `${round(d.ratioForward, 3)}×`,
      pass: null,
      spec: `${SPEC}#s12`,
    });
  }
  // S13 purge leaves nothing
  {
    const purges = [...r.boot, ...(r.scale ? [r.scale] : [])].filter((b) => b.purge);
    const left = purges.flatMap((b) => b.purge!.leftovers.map((x) => `N=${b.n}: ${x}`));
    const failed = purges.filter((b) => !b.purge!.ok);
    rows.push({
      id: "S13",
      what: "`netslot purge` leaves no object of the prefix",
      target: "0 left",
      measured: purges.length
        ? `${left.length} left over ${purges.length} purges${failed.length ? `, ${failed.length} purge(s) failed` : ""}${left.length ? ` (${left.slice(0, 3).join(", ")})` : ""}; slowest ${round(Math.max(...purges.map((b) => b.purge!.ms)) / 1000, 1)} s`
        : "—",
      ratio: "—",
      pass: purges.length ? left.length === 0 && failed.length === 0 : null,
      spec: `${SPEC}#s13`,
    });
  }
  // S14 exhaustion
  {
    const a = r.footprint.acquireAll;
    rows.push({
      id: "S14",
      what: `request on a fully leased pool${a ? ` (N=${a.n})` : ""}`,
      target: "503 pool_exhausted",
      measured: a?.exhaustedAnswer ?? "—",
      ratio: "—",
      pass: a?.exhaustedAnswer === undefined ? null : a.exhaustedAnswer === "503 pool_exhausted",
      spec: `${SPEC}#s14`,
    });
  }
  // S15/S16 network profiles
  {
    const p = r.profiles;
    const none = p?.requestMs["none"]?.p99;
    const worst = p ? Object.entries(p.requestMs).filter(([n]) => n !== "none").sort((a, b) => b[1].p99 - a[1].p99)[0] : undefined;
    const ratio = none !== undefined && worst ? worst[1].p99 / none : undefined;
    rows.push({
      id: "S15",
      what: `request p99 with each profile vs without (worst shown${p ? `; pool ${p.poolSize}, ${p.cycles} cycles each` : ""})`,
      target: "≤ 2×",
      measured: worst && none !== undefined ? `${ms(worst[1].p99)} (${worst[0]}) vs ${ms(none)}` : "—",
      ratio: ratio === undefined ? "—" : `${round(ratio, 2)}×`,
      pass: ratio === undefined ? null : ratio <= 2,
      spec: `${SPEC}#s15`,
    });
    const d = p?.datapath;
    const median = (xs: number[] | undefined) => {
      const s = [...(xs ?? [])].sort((a, b) => a - b);
      return s.length === 0 ? NaN : s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
    };
    const gbit = (xs: Array<{ bitsPerSecond: number }> | undefined) => round(median(xs?.map((x) => x.bitsPerSecond)) / 1e9, 2);
    const spread = d?.pairRatios.length ? ` (pairs ${round(Math.min(...d.pairRatios) * 100, 1)}–${round(Math.max(...d.pairRatios) * 100, 1)} %)` : "";
    rows.push({
      id: "S16",
      what: `iperf3 guest → upstream with a ${p?.largeCidrs ?? "—"}-CIDR egress policy vs none, median of ${d?.repetitions ?? "—"} alternated pairs`,
      target: "≥ 90 %",
      measured: d?.withPolicy.length ? `${gbit(d.withPolicy)} vs ${gbit(d.none)} Gbit/s${spread}` : d?.error ? `error: ${d.error.slice(0, 80)}` : "—",
      ratio: d?.ratio === undefined ? "—" : `${round(d.ratio * 100, 1)} %`,
      pass: d?.ratio === undefined ? null : d.ratio >= 0.9,
      spec: `${SPEC}#s16`,
    });
  }
  // S17 tenancy checks
  {
    const one = r.tenancy?.levels.find((l) => l.clients === 1);
    rows.push({
      id: "S17",
      what: "request p50 with four configured consumers vs none, 1 client",
      target: "≤ 1.10×",
      measured: one
        ? `${round(one.four.requestMs.p50, 3)} vs ${round(one.none.requestMs.p50, 3)} ms (p99 ${round(one.four.requestMs.p99, 2)} vs ${round(one.none.requestMs.p99, 2)} ms); checks ${round(r.tenancy!.checksUs, 1)} µs in-process`
        : "—",
      ratio: one ? `${round(one.requestP50Ratio, 3)}×` : "—",
      pass: one ? one.requestP50Ratio <= 1.1 : null,
      spec: `${SPEC}#s17`,
    });
  }
  rows.push(...issue15Targets(r));
  return rows;
}

/** The percentile lies in the +Inf bucket (Infinity, or null once through JSON). */
function beyond(p: HistogramPercentile): boolean {
  return !Number.isFinite(p.upperBoundMs);
}

function bound(p: HistogramPercentile | undefined): string {
  return p === undefined ? "—" : beyond(p) ? "beyond the last bucket" : `≤ ${ms(p.upperBoundMs, 4)}`;
}

/** The recycle window is judged only at its full size: 60 s on 4,000 slots. */
function recycleJudged(r: BenchResults): boolean {
  const rc = r.recycle;
  return rc !== undefined && r.mode === "full" && rc.poolSize >= 4000 && rc.seconds >= 59;
}

/** A note on a recycle window that started on a pool still scrubbing. */
function notFull(r: BenchResults): { note: string } | Record<string, never> {
  const rc = r.recycle;
  return rc && rc.freeAtStart < rc.poolSize ? { note: `the window started with ${rc.freeAtStart} of ${rc.poolSize} slots free` } : {};
}

/** Issue 15's promises beyond S1, S5 and S9: S18–S23. */
function issue15Targets(r: BenchResults): TargetRow[] {
  const rows: TargetRow[] = [];
  const rc = r.recycle;
  const judged = recycleJudged(r);
  const quickNote = rc && !judged ? { note: "judged on a full run: 60 s on 4,000 slots" } : notFull(r);
  // S18 release → reusable while the pool recycles
  {
    const h = rc?.server.releaseToReusable?.p99;
    rows.push({
      id: "S18",
      what: "release → reusable p99 while 8 clients recycle (daemon histogram, upper bucket bound)",
      target: "≤ 5 ms",
      measured: h ? `${bound(h)} (${beyond(h) ? ">" : "≈"} ${ms(h.estimateMs, 2)}); scrub p50 ≈ ${ms(rc.server.scrub?.p50?.estimateMs, 2)}` : "—",
      ratio: h && !beyond(h) ? `${round(h.upperBoundMs / 5, 2)}× of budget` : "—",
      pass: h && judged ? !beyond(h) && h.upperBoundMs <= 5 : null,
      spec: `${SPEC}#s18`,
      ...quickNote,
    });
  }
  // S19 daemon CPU per cycle
  {
    const c = rc?.cpu;
    rows.push({
      id: "S19",
      what: "daemon CPU per full cycle (request + release + scrub; utime + stime of all its threads)",
      target: "≤ 1 ms",
      measured: c
        ? `${ms(c.msPerCycle, 3)} (${round(c.untilDrainedMs / 1000, 1)} s CPU from the window's start until its ${rc.cycles + rc.probe.cycles} cycles' scrubs were done, ${round(rc.seconds + c.drainedAfterSeconds, 0)} s${c.drained ? "" : ", scrubs not drained"})` +
          (c.threads && c.rejectedRequests !== undefined
            ? `; scrub thread ${ms(c.scrubMsPerCycle, 3)}/cycle, main thread ${ms(c.mainMsPerRequest, 3)}/request, ${c.rejectedRequests} rejected requests answered; ${ms(c.msPerServedCycle, 3)} without them`
            : "")
        : "—",
      ratio: c ? `${round(c.msPerCycle / 1, 2)}× of budget` : "—",
      pass: c && judged ? c.drained && c.msPerCycle <= 1 : null,
      spec: `${SPEC}#s19`,
      ...quickNote,
    });
  }
  // S20 one more client's request p99 while the pool recycles; the event-loop delay
  {
    const p = rc?.probe;
    rows.push({
      id: "S20",
      what: `request p99 seen by one more client while 8 recycle${p ? ` (every ${p.intervalMs} ms, ${p.cycles} requests)` : ""}`,
      target: "≤ 1 ms",
      measured: p && p.requestMs.n > 0 ? `${ms(p.requestMs.p99)} (p50 ${ms(p.requestMs.p50)}; daemon's acquire p99 ≤ ${ms(rc.server.acquire?.p99?.upperBoundMs, 4)})` : "—",
      ratio: p && p.requestMs.n > 0 ? `${round(p.requestMs.p99, 2)}× of budget` : "—",
      pass: p && p.requestMs.n > 0 && judged ? p.requestMs.p99 <= 1 : null,
      spec: `${SPEC}#s20`,
      ...quickNote,
    });
    const e = rc?.eventLoopDelayMs;
    rows.push({
      id: "S20b",
      what: "event-loop delay of the daemon's main thread, p99, same window",
      target: "≤ 1 ms",
      measured: e?.p99 !== undefined ? `${ms(e.p99)} (p50 ${ms(e.p50)}, max ${ms(e.max)})` : rc ? "not exposed by this daemon" : "—",
      ratio: e?.p99 !== undefined ? `${round(e.p99, 2)}× of budget` : "—",
      pass: e?.p99 !== undefined && judged ? e.p99 <= 1 : null,
      spec: `${SPEC}#s20`,
      ...quickNote,
    });
  }
  // S21 proof of an untouched slot
  {
    const pr = r.proof;
    const u = pr?.result?.untouched;
    rows.push({
      id: "S21",
      what: `CPU of proving an untouched released slot clean, median${u ? ` (${u.n} proofs, each scanning processes itself)` : ""}`,
      target: "≤ 1 ms",
      measured: u
        ? `${ms(u.median)} (p99 ${ms(u.p99)}; one process scan per 8 slots ${ms(pr.result!.untouchedBatched.median)}; the reset before it ${ms(pr.result!.reset.median)}; full fingerprint ${ms(pr.result!.full.median, 2)})`
        : pr?.error
          ? `error: ${pr.error.split("\n")[0]!.slice(0, 80)}`
          : "—",
      ratio: u ? `${round(u.median, 2)}× of budget` : "—",
      pass: u ? u.median <= 1 : null,
      spec: `${SPEC}#s21`,
    });
  }
  // S22 kernel memory per slot
  {
    const b = r.boot.find((x) => x.n === 4000 && x.memory) ?? largestBoot(r);
    const m = b?.memory;
    rows.push({
      id: "S22",
      what: `kernel memory per slot${b ? ` (N=${b.n})` : ""}: (MemAvailable drop − daemon RSS) ÷ N`,
      target: "≤ 300 KiB",
      measured: m
        ? `${round(m.kernelKbPerSlot, 1)} KiB (Slab ${round(m.slabKbPerSlot, 1)} KiB, of it unreclaimable ${round((m.slabUnreclaimDeltaKb ?? NaN) / b.n, 1)} KiB${m.perSlotKb ? `; Percpu ${round(m.perSlotKb["Percpu"] ?? NaN, 1)}, PageTables ${round(m.perSlotKb["PageTables"] ?? NaN, 1)}, KernelStack ${round(m.perSlotKb["KernelStack"] ?? NaN, 1)}, VmallocUsed ${round(m.perSlotKb["VmallocUsed"] ?? NaN, 1)}` : ""})`
        : "—",
      ratio: m ? `${round(m.kernelKbPerSlot / 300, 2)}× of budget` : "—",
      pass: m && b.n >= 4000 ? m.kernelKbPerSlot <= 300 : null,
      spec: `${SPEC}#s22`,
      ...(b && b.n < 4000 ? { note: "judged at 4,000 only" } : {}),
    });
  }
  // S23 the /16 maximum
  {
    const sc = r.scale;
    const secs = sc?.start ? sc.start.wallReadyMs / 1000 : undefined;
    const t = sc?.perSlotBuild?.timeline ?? sc?.perSlotBuild?.progress;
    rows.push({
      id: "S23",
      what: `a pool of 16,384 slots (the /16 maximum) ready, wall clock${sc && sc.n !== 16384 ? ` (ran at N=${sc.n})` : ""}`,
      target: "≤ 60 s",
      measured:
        secs !== undefined
          ? `${round(secs, 1)} s; per slot ${ms(t?.firstTenthMsPerSlot, 2)} → ${ms(t?.lastTenthMsPerSlot, 2)}; kernel ${round(sc?.memory?.kernelKbPerSlot ?? NaN, 0)} KiB/slot; purge ${sc?.purge ? round(sc.purge.ms / 1000, 1) : "—"} s`
          : sc?.error
            ? `error: ${sc.error.split("\n")[0]!.slice(0, 80)}`
            : "—",
      ratio: secs !== undefined ? `${round(secs / 60, 2)}× of budget` : "—",
      pass: secs !== undefined && sc!.n === 16384 ? secs <= 60 : sc?.error && sc.n === 16384 ? false : null,
      spec: `${SPEC}#s23`,
    });
  }
  return rows;
}

export function markdown(r: BenchResults): string {
  const m = r.machine;
  const out: string[] = [];
  out.push(`# netslot benchmarks — ${r.mode} run, ${r.startedAt.slice(0, 19).replace("T", " ")} UTC`);
  out.push("");
  out.push(
    `Machine: ${m.cpuModel}, ${m.cores} cores, ${round(m.memoryMiB / 1024, 1)} GiB, kernel ${m.kernel}, Node ${m.node}, ${m.os}.` +
      (r.git ? ` Commit ${r.git.commit.slice(0, 12)}${r.git.dirty ? " (uncommitted changes)" : ""}.` : "") +
      (m.loadAverageAtStart ? ` Load average at start ${m.loadAverageAtStart.join(" ")} (other work on the machine shows up in the figures).` : "") +
      ` Run took ${round(r.durationSeconds ?? NaN, 0)} s. Raw figures: \`${path.basename(resultsFileName(r))}\`.`,
  );
  for (const x of r.reruns ?? []) {
    out.push("");
    out.push(
      `Re-run later and merged here: **${x.parts.join(", ")}**, ${x.startedAt.slice(0, 19).replace("T", " ")} UTC` +
        (x.git ? `, commit ${x.git.commit.slice(0, 12)}${x.git.dirty ? " (uncommitted changes)" : ""}` : "") +
        (x.loadAverageAtStart ? `, load average at start ${x.loadAverageAtStart.join(" ")}` : "") +
        `, ${round(x.durationSeconds, 0)} s.`,
    );
  }
  out.push("");
  out.push("| # | target | goal | measured | ratio | result |");
  out.push("|---|---|---|---|---|---|");
  for (const t of r.targets) {
    const res = t.pass === null ? "—" : t.pass ? "**pass**" : "**miss**";
    out.push(`| [${t.id}](${t.spec}) | ${t.what} | ${t.target} | ${t.measured}${t.note ? ` (${t.note})` : ""} | ${t.ratio} | ${res} |`);
  }
  out.push("");
  out.push("## Boot");
  out.push("");
  out.push("| N | ready, wall (s) | ready, daemon (s) | slots/s (wall) | per slot, first 10% | per slot, last 10% | root rules | RSS (MiB) | purge (s) |");
  out.push("|---|---|---|---|---|---|---|---|---|");
  for (const b of r.boot) {
    const t = b.perSlotBuild?.timeline ?? b.perSlotBuild?.progress;
    out.push(
      `| ${b.n} | ${b.start ? round(b.start.wallReadyMs / 1000, 2) : b.error ? "error" : "—"} | ${b.start?.daemonReadySeconds ?? "—"} | ${round(b.slotsPerSecondWall ?? NaN, 0)} | ${ms(t?.firstTenthMsPerSlot)} | ${ms(t?.lastTenthMsPerSlot)} | ${b.rootRules ?? "—"} | ${b.rssKbAtReady ? round(b.rssKbAtReady / 1024, 1) : "—"} | ${b.purge ? round(b.purge.ms / 1000, 2) : "—"} |`,
    );
  }
  const bootErrors = r.boot.filter((b) => b.error);
  for (const b of bootErrors) out.push(`\nN=${b.n}: ${b.error!.split("\n")[0]}`);
  out.push(...kernelMemoryLines([...r.boot, ...(r.scale ? [r.scale] : [])]));
  out.push(...scaleSection(r));
  out.push("");
  out.push("## Lease path (SDK over the unix socket)");
  for (const [label, lp] of [
    ["no tenant network", r.lease.plain],
    ["with a tenant network (VXLAN VNI set at request)", r.lease.tenant],
  ] as const) {
    out.push("");
    out.push(`### ${label}${lp ? `, pool ${lp.poolSize}` : ""}`);
    out.push("");
    if (!lp) {
      out.push(r.lease.error ? `Not measured: ${r.lease.error}` : "Not measured.");
      continue;
    }
    if (lp.skipped) {
      out.push(`Skipped: ${lp.skipped}`);
      continue;
    }
    out.push("| clients | cycles | request p50 / p90 / p99 / max (ms) | release-ack p50 / p90 / p99 / max (ms) | daemon: reusable p99 ≤ | daemon: scrub p50 ≈ | cycles/s | errors |");
    out.push("|---|---|---|---|---|---|---|---|");
    for (const c of lp.concurrency) {
      const q = c.requestMs;
      const l = c.releaseAckMs;
      out.push(
        `| ${c.clients} | ${q.n} | ${round(q.p50)} / ${round(q.p90)} / ${round(q.p99)} / ${round(q.max)} | ${round(l.p50)} / ${round(l.p90)} / ${round(l.p99)} / ${round(l.max)} | ${ms(c.server.releaseToReusable?.p99?.upperBoundMs, 4)} | ${ms(c.server.scrub?.p50?.estimateMs, 2)} | ${round(c.cyclesPerSecond, 0)} | ${c.errors}${c.firstError ? ` (${c.firstError.split(":")[0]})` : ""}${c.cutShort ? "; cut short by the time cap" : ""} |`,
      );
    }
    if (lp.reusable) {
      const u = lp.reusable.releaseToReusableMs;
      out.push("");
      out.push(`Release → reusable, seen by a client polling GET /v1/pool (${lp.reusable.cycles} cycles): p50 ${ms(u.p50)}, p90 ${ms(u.p90)}, p99 ${ms(u.p99)}, max ${ms(u.max)}.`);
    }
    for (const e of lp.errors ?? []) out.push(`\nFailed: ${e}`);
    if (lp.concurrency.some((c) => c.freeAtStart < lp.poolSize)) {
      out.push(`\nFree slots when each level started: ${lp.concurrency.map((c) => `${c.clients} client(s): ${c.freeAtStart}`).join(", ")} (of ${lp.poolSize}; the rest were still being scrubbed).`);
    }
    if (lp.sustained) {
      const s = lp.sustained;
      out.push(`Sustained with ${s.clients} clients for ${round(s.seconds, 1)} s: **${round(s.cyclesPerSecond, 0)} cycles/s** (${s.cycles} cycles, ${s.errors} errors; request p99 ${ms(s.requestMs.p99)}, release p99 ${ms(s.releaseAckMs.p99)}).`);
    }
  }
  out.push("");
  out.push(...recycleSection(r));
  out.push(...proofSection(r));
  if (r.tenancy) {
    const t = r.tenancy;
    out.push("## Tenancy checks: four configured consumers against none");
    out.push("");
    out.push(
      `Two daemons of ${t.poolSize} slots in this run, driven alternately (${t.rounds} rounds of ${t.cyclesPerRound} cycles per client): one without consumers, one with four (tokens, VNI lists, max and reserved quotas, an operator, a uid-matched consumer), leasing as a token consumer with a reservation in force. Both bind leases to the caller (SO_PEERCRED). One getsockopt(SO_PEERCRED): ${round(t.peerCredUs, 2)} µs, once per connection; the per-request checks (token, VNI, quota with a reservation) in-process: ${round(t.checksUs, 2)} µs. Each client alternates request by request between the two daemons.`,
    );
    out.push("");
    out.push("| clients | request p50, none (ms) | request p50, four (ms) | ratio | request p99, none (ms) | request p99, four (ms) | ratio | errors |");
    out.push("|---|---|---|---|---|---|---|---|");
    for (const l of t.levels) {
      out.push(
        `| ${l.clients} | ${round(l.none.requestMs.p50, 3)} | ${round(l.four.requestMs.p50, 3)} | ${round(l.requestP50Ratio, 3)} | ${round(l.none.requestMs.p99, 3)} | ${round(l.four.requestMs.p99, 3)} | ${round(l.requestP99Ratio, 3)} | ${l.errors} |`,
      );
    }
    if (t.error) out.push(`\nError: ${t.error.split("\n")[0]}`);
    out.push("");
  }
  out.push("## Side by side with the peers' per-VM setup");
  out.push("");
  const one = r.lease.plain?.concurrency.find((c) => c.clients === 1);
  out.push("| baseline | N | setup per VM | teardown per VM | root rules added | netslot request (mean) | ×faster | netslot release-ack (mean) | ×faster |");
  out.push("|---|---|---|---|---|---|---|---|---|");
  for (const b of r.baselines) {
    if (b.skipped) {
      out.push(`| ${b.baseline} | ${b.n} | skipped: ${b.skipped.slice(0, 100)} | | | | | | |`);
      continue;
    }
    const rq = one?.requestMs.mean;
    const rl = one?.releaseAckMs.mean;
    out.push(
      `| ${b.baseline} | ${b.n} | ${ms(b.setupMsPerVm, 2)} | ${ms(b.teardownMsPerVm, 2)} | ${b.rootRulesAdded} | ${ms(rq)} | ${rq ? round(b.setupMsPerVm! / rq, 0) : "—"}× | ${ms(rl)} | ${rl ? round(b.teardownMsPerVm! / rl, 0) : "—"}× |`,
    );
  }
  out.push("");
  out.push("## Root footprint and connection setup");
  out.push("");
  out.push(`Root rules (\`nft -j list table inet <prefix>\`): ${r.footprint.rules.map((x) => `N=${x.n}: ${x.count}`).join(", ") || "—"}.`);
  if (r.footprint.acquireAll) {
    const a = r.footprint.acquireAll;
    out.push(
      `Leasing all ${a.n} slots one after another (no release, so no scrub, in between) took ${round(a.seconds, 2)} s` +
        (a.requestMs ? ` (request p50 ${ms(a.requestMs.p50)}, p99 ${ms(a.requestMs.p99)}, max ${ms(a.requestMs.max)})` : "") +
        `; one more request was answered: ${a.exhaustedAnswer ?? "—"}.`,
    );
  }
  const c = r.footprint.connect;
  if (c) {
    out.push("");
    if (c.error) out.push(`Connect test error: ${c.error}`);
    out.push(`| slot | direction | connects | p50 | p99 | max | failures |`);
    out.push(`|---|---|---|---|---|---|---|`);
    for (const [label, run] of [
      ["first", c.first],
      ["last", c.last],
    ] as const) {
      if (!run) continue;
      for (const [dir, d] of [
        ["host → guest", run.hostToGuest],
        ["guest → upstream", run.guestToUpstream],
      ] as const) {
        if (!d) continue;
        out.push(`| ${label} (#${run.slotIndex}, ${run.outsideAddress}) | ${dir} | ${d.ms.n} | ${ms(d.ms.p50)} | ${ms(d.ms.p99)} | ${ms(d.ms.max)} | ${d.failures}${d.firstError ? ` (${d.firstError})` : ""} |`);
      }
    }
  }
  for (const f of r.refills) {
    out.push(`Pool refill ${f.when}: ${f.ok ? `all slots free again after ${round(f.seconds, 1)} s` : `**not refilled** after ${round(f.seconds, 1)} s (${f.pool})`}.`);
    out.push("");
  }
  out.push("");
  out.push("## Data path (iperf3)");
  out.push("");
  const d = r.datapath;
  if (!d) out.push("Not measured.");
  else {
    if (d.error) out.push(`Error: ${d.error}`);
    const g = (x?: { bitsPerSecond: number; retransmits?: number | undefined }) => (x ? `${round(x.bitsPerSecond / 1e9, 3)} Gbit/s${x.retransmits !== undefined ? ` (${x.retransmits} retr.)` : ""}` : "—");
    out.push(`| path | guest → upstream | upstream → guest |`);
    out.push(`|---|---|---|`);
    out.push(`| netslot slot (guest stand-in via taprelay, eBPF NAT, root masquerade) | ${g(d.netslot?.forward)} | ${g(d.netslot?.reverse)} |`);
    out.push(`| plain routed namespace, same taprelay, no NAT | ${g(d.plainRelay?.forward)} | ${g(d.plainRelay?.reverse)} |`);
    out.push(`| plain routed namespace, no relay (ceiling of the host) | ${g(d.plainDirect?.forward)} | ${g(d.plainDirect?.reverse)} |`);
    out.push("");
    out.push(`Ratio netslot / plain (same relay): forward ${round(d.ratioForward ?? NaN, 3)}, reverse ${round(d.ratioReverse ?? NaN, 3)}. ${d.seconds} s per run, MTU ${d.mtu ?? "—"}.`);
  }
  out.push("");
  out.push("## Network profiles");
  out.push("");
  const p = r.profiles;
  if (!p) out.push("Not measured.");
  else {
    if (p.error) out.push(`Error: ${p.error}`);
    out.push(`Pool ${p.poolSize}, ${p.cycles} request/release cycles per profile, interleaved, one client. Target (S15): each profile's request p99 ≤ 2× the p99 without one.`);
    out.push("");
    out.push("| profile | what | request p50 | request p99 | p99 / none | release p99 |");
    out.push("|---|---|---|---|---|---|");
    const none = p.requestMs["none"]?.p99;
    for (const [name, s] of Object.entries(p.requestMs)) {
      const ratio = none === undefined ? undefined : s.p99 / none;
      const judged = name === "none" || ratio === undefined ? "—" : `${round(ratio, 2)}× ${ratio <= 2 ? "✓" : "✗"}`;
      out.push(`| ${name} | ${p.kinds[name] ?? ""} | ${ms(s.p50)} | ${ms(s.p99)} | ${judged} | ${ms(p.releaseMs[name]?.p99)} |`);
    }
    const d = p.datapath;
    if (d) {
      out.push("");
      if (d.error) out.push(`Data path error: ${d.error}`);
      if (d.withPolicy.length) {
        out.push(
          `Data path (S16): iperf3 ${d.seconds} s guest stand-in → upstream, two leases held together (no profile; ${d.policy}, ${p.largeCidrs} CIDRs), ` +
            `${d.repetitions} pairs of runs in alternating order. Target: the median pair ratio ≥ 90 %.`,
        );
        out.push("");
        out.push("| pair | no policy | with policy | ratio |");
        out.push("|---|---|---|---|");
        d.pairRatios.forEach((r, i) => out.push(`| ${i + 1} | ${round(d.none[i]!.bitsPerSecond / 1e9, 3)} Gbit/s | ${round(d.withPolicy[i]!.bitsPerSecond / 1e9, 3)} Gbit/s | ${round(r * 100, 1)} % |`));
        out.push("");
        out.push(`Median pair ratio ${round((d.ratio ?? NaN) * 100, 1)} % (spread ${round(Math.min(...d.pairRatios) * 100, 1)}–${round(Math.max(...d.pairRatios) * 100, 1)} %) ${d.ratio !== undefined && d.ratio >= 0.9 ? "✓" : "✗"}.`);
      }
    }
  }
  out.push("");
  out.push("## Memory and restart");
  out.push("");
  if (r.memory) {
    const mm = r.memory;
    out.push(
      `N=${mm.n}: daemon RSS at ready ${round((mm.daemonRssKbAtReady ?? NaN) / 1024, 1)} MiB, after the lease runs ${round((mm.daemonRssKbAfterLeases ?? NaN) / 1024, 1)} MiB, peak ${round((mm.daemonPeakRssKb ?? NaN) / 1024, 1)} MiB; kernel memory ≈ ${round(mm.kernelKbPerSlot ?? NaN, 1)} KiB per slot (MemAvailable drop minus daemon RSS), slab ${round(mm.slabKbPerSlot ?? NaN, 1)} KiB per slot.`,
    );
  }
  for (const x of r.restart) {
    out.push(
      `- restart after ${x.kind === "sigterm" ? "SIGTERM" : "kill -9"} at N=${x.n}: ${x.start ? `ready in ${round(x.start.wallReadyMs / 1000, 2)} s wall, ${x.start.daemonReadySeconds ?? "—"} s by the daemon; ${x.start.adopted ?? "—"} adopted, ${(x.start.built ?? 0) - (x.start.adopted ?? 0)} rebuilt` : `error: ${x.error}`}${x.stopMs !== undefined ? `; the stop took ${round(x.stopMs, 0)} ms` : ""}.`,
    );
  }
  if (r.errors.length) {
    out.push("");
    out.push("## Errors");
    out.push("");
    for (const e of r.errors) out.push(`- ${e.split("\n")[0]}`);
  }
  out.push("");
  out.push("Charts: ![scale](scale-per-slot.svg) ![boot](boot-timeline.svg) ![lease](lease-latency.svg) ![side by side](side-by-side.svg) ![rules](root-rules.svg) ![connect](connect.svg) ![data path](datapath.svg)");
  out.push("");
  return out.join("\n");
}

/** A resource limit: Infinity (null once through JSON) is "unlimited". */
const lim = (x: number): string => (Number.isFinite(x) ? String(x) : "∞");

/** Kernel memory per slot by /proc/meminfo field, and the daemon's open files, per boot. */
function kernelMemoryLines(boots: BenchResults["boot"]): string[] {
  const withFields = boots.filter((b) => b.memory?.perSlotKb);
  if (withFields.length === 0) return [];
  const fields = Object.keys(withFields[0]!.memory!.perSlotKb!);
  const out = ["", "Kernel memory per slot over each boot: the growth of each `/proc/meminfo` field ÷ N, KiB (MemAvailable and MemFree fall; the rest is where it went). Open files of the daemon at ready against its limit (soft / hard).", ""];
  out.push(`| N | ${fields.join(" | ")} | open files |`);
  out.push(`|---|${fields.map(() => "---|").join("")}---|`);
  for (const b of withFields) {
    const f = b.fds;
    out.push(`| ${b.n} | ${fields.map((k) => String(round(b.memory!.perSlotKb![k] ?? NaN, 1))).join(" | ")} | ${f ? `${f.open} of ${lim(f.softLimit)} / ${lim(f.hardLimit)}` : "—"} |`);
  }
  return out;
}

/** The /16 maximum. */
function scaleSection(r: BenchResults): string[] {
  const sc = r.scale;
  if (!sc) return [];
  const out = ["", `### Scale: a pool of ${sc.n} slots${sc.n === 16384 ? " (the /16 maximum)" : " (a test size)"}`, ""];
  if (!sc.start) return [...out, `Error: ${(sc.error ?? "did not start").split("\n")[0]}`];
  const t = sc.perSlotBuild?.timeline ?? sc.perSlotBuild?.progress;
  out.push(
    `Ready in ${round(sc.start.wallReadyMs / 1000, 2)} s wall (daemon's own ${sc.start.daemonReadySeconds ?? "—"} s, ${round(sc.slotsPerSecondWall ?? NaN, 0)} slots/s); ` +
      `per slot ${ms(t?.firstTenthMsPerSlot, 2)} in the first 10 %, ${ms(t?.lastTenthMsPerSlot, 2)} in the last (${round(t?.ratio ?? NaN, 2)}×); ` +
      `kernel ≈ ${round(sc.memory?.kernelKbPerSlot ?? NaN, 1)} KiB per slot (Slab ${round(sc.memory?.slabKbPerSlot ?? NaN, 1)}); daemon RSS ${sc.rssKbAtReady ? round(sc.rssKbAtReady / 1024, 1) : "—"} MiB; ` +
      `${sc.fds ? `${sc.fds.open} open files (limit ${lim(sc.fds.softLimit)} / ${lim(sc.fds.hardLimit)}); ` : ""}${sc.rootRules ?? "—"} root rules; ` +
      `stop ${sc.stopMs !== undefined ? round(sc.stopMs / 1000, 2) : "—"} s, purge ${sc.purge ? `${round(sc.purge.ms / 1000, 1)} s${sc.purge.leftovers.length ? `, ${sc.purge.leftovers.length} left over` : ""}` : "—"}.`,
  );
  return out;
}

/** The proof of a released slot (bench/proof-cpu.ts measureProof). */
function proofSection(r: BenchResults): string[] {
  const pr = r.proof;
  if (!pr) return [];
  const out = ["## Proving a released slot clean (issue 15, goal 1)", ""];
  if (!pr.result) return [...out, `Error: ${pr.error ?? "no result"}`, ""];
  const x = pr.result;
  const sp = (s: { median: number; p99: number; n: number }) => `${ms(s.median)} | ${ms(s.p99)} | ${s.n}`;
  const ph = (o: Record<string, number>) =>
    Object.entries(o)
      .map(([k, v]) => `${k} ${round(v, 2)}`)
      .join(", ");
  out.push("One scratch slot, proved with nothing changed in between; CPU is user + system of the benchmark's process (`bench/proof-cpu.ts`).");
  out.push("");
  out.push("| what | CPU median | CPU p99 | n |");
  out.push("|---|---|---|---|");
  out.push(`| proof of an untouched slot (fast path ${x.untouched.fastPaths}/${x.untouched.n}) | ${sp(x.untouched)} |`);
  out.push(`| the same, one process scan shared by 8 slots | ${sp(x.untouchedBatched)} |`);
  out.push(`| the scrub's reset before each proof | ${sp(x.reset)} |`);
  out.push(`| full fingerprint (audit, dirty slot) | ${sp(x.full)} |`);
  out.push(`| a sysctl changed while leased: the catching proof (caught ${x.dirty.caught}/${x.dirty.n}) | ${sp(x.dirty)} |`);
  out.push(`| destroy + rebuild instead of a proof (wall median ${ms(x.rebuild.wall.median, 2)}) | ${sp(x.rebuild.cpu)} |`);
  out.push("");
  out.push(`Phases of the untouched proof (median CPU ms): ${ph(x.untouched.phases) || "—"}. Of the full fingerprint: ${ph(x.full.phases) || "—"}.`);
  out.push("");
  return out;
}

/** The recycle window: throughput, answers, the probe, the daemon's CPU and event loop. */
function recycleSection(r: BenchResults): string[] {
  const rc = r.recycle;
  if (!rc) return [];
  const out: string[] = [];
  out.push("## The pool recycling under load (issue 15, goals 2 and 3)");
  out.push("");
  out.push(
    `${rc.clients} SDK clients loop request → release back to back for ${round(rc.seconds, 1)} s on a pool of ${rc.poolSize} (${rc.freeAtStart} free at the start); ` +
      `a \`pool_exhausted\` answer is retried after 5 ms. One more client (the probe) does one request → release every ${rc.probe.intervalMs} ms. ` +
      `Daemon CPU is utime + stime of its process (all threads: API, pool, scrub worker) from \`/proc/PID/stat\`, from the window's start until the scrubs of its releases were done (${round(rc.cpu.drainedAfterSeconds, 1)} s after it${rc.cpu.drained ? "" : ", not drained"}); kernel work on other threads (e.g. namespace cleanup workers) is not in it.`,
  );
  if (rc.freeAtStart < rc.poolSize) {
    out.push("");
    out.push(
      `**The window started on a pool that was not full** (${rc.freeAtStart} of ${rc.poolSize} free${rc.scrubbingAtStart !== undefined ? `, ${rc.scrubbingAtStart} still scrubbing` : ""} after waiting): the scrubs of earlier releases count in its CPU and release → reusable figures.`,
    );
  }
  out.push("");
  out.push("| figure | value |");
  out.push("|---|---|");
  const sv = rc.server;
  const est = (p: HistogramPercentile | undefined) => (p && beyond(p) ? `> ${ms(p.estimateMs, 0)}` : `≈ ${ms(p?.estimateMs, 3)}`);
  const hs = (x: typeof sv.acquire) => (x ? `p50 ${est(x.p50)}, p99 ${bound(x.p99)} (${x.count} observed)` : "—");
  out.push(`| cycles (8 clients) | ${rc.cycles} = **${round(rc.cyclesPerSecond, 0)}/s** |`);
  out.push(`| \`pool_exhausted\` answers | ${rc.exhausted} |`);
  out.push(`| other errors | ${rc.errors}${rc.firstError ? ` (${rc.firstError.split("\n")[0]})` : ""} |`);
  out.push(`| quarantined before → after | ${rc.quarantinedBefore} → ${rc.quarantinedAfter} |`);
  out.push(`| request, 8 clients: p50 / p99 / max | ${ms(rc.requestMs.p50)} / ${ms(rc.requestMs.p99)} / ${ms(rc.requestMs.max)} |`);
  out.push(`| release-ack, 8 clients: p50 / p99 / max | ${ms(rc.releaseAckMs.p50)} / ${ms(rc.releaseAckMs.p99)} / ${ms(rc.releaseAckMs.max)} |`);
  out.push(`| probe request: p50 / p99 / max (${rc.probe.cycles} cycles; ${rc.probe.exhausted} pool_exhausted, ${rc.probe.errors} other errors) | ${ms(rc.probe.requestMs.p50)} / ${ms(rc.probe.requestMs.p99)} / ${ms(rc.probe.requestMs.max)} |`);
  out.push(`| daemon: acquire | ${hs(sv.acquire)} |`);
  out.push(`| daemon: release | ${hs(sv.release)} |`);
  out.push(`| daemon: release → reusable | ${hs(sv.releaseToReusable)} |`);
  out.push(`| daemon: scrub | ${hs(sv.scrub)} |`);
  const e = rc.eventLoopDelayMs;
  out.push(`| daemon: event-loop delay p50 / p90 / p99 / max | ${e ? `${ms(e.p50)} / ${ms(e.p90)} / ${ms(e.p99)} / ${ms(e.max)}` : "not exposed"} |`);
  out.push(`| daemon CPU: window / until drained | ${round(rc.cpu.windowMs / 1000, 2)} s / ${round(rc.cpu.untilDrainedMs / 1000, 2)} s (${round((rc.cpu.windowMs / (rc.seconds * 1000)) * 100, 0)} % of a core in the window) |`);
  out.push(`| daemon CPU per cycle | **${ms(rc.cpu.msPerCycle, 3)}** |`);
  const th = rc.cpu.threads;
  if (th) {
    const t = (g: keyof typeof th) => `${round(th[g].windowMs / 1000, 2)} s / ${round(th[g].untilDrainedMs / 1000, 2)} s`;
    out.push(`| daemon CPU by thread, window / until drained: main · scrub worker · other | ${t("main")} · ${t("scrub")} · ${t("other")} |`);
    out.push(`| scrub thread per cycle; main thread per API request; rejected requests answered; per cycle without them | ${ms(rc.cpu.scrubMsPerCycle, 3)}; ${ms(rc.cpu.mainMsPerRequest, 3)}; ${rc.cpu.rejectedRequests}; ${ms(rc.cpu.msPerServedCycle, 3)} |`);
  }
  out.push("");
  out.push("![recycle throughput](recycle-throughput.svg) ![recycle pool](recycle-pool.svg)");
  out.push("");
  return out;
}

const README_START = "<!-- bench:results (written by npm run bench from a full run; edit bench/lib/report.ts, not this) -->";
const README_END = "<!-- /bench:results -->";

/** README's "Latest results": the target table of a full run, with the key charts. */
export function readmeResults(r: BenchResults): string {
  const m = r.machine;
  const out = [
    `Full run of ${r.startedAt.slice(0, 16).replace("T", " ")} UTC. Machine: ${m.cpuModel}, ${m.cores} cores, ${round(m.memoryMiB / 1024, 1)} GiB, kernel ${m.kernel}, Node ${m.node}, ${m.os}.` +
      (m.loadAverageAtStart ? ` Load average at start ${m.loadAverageAtStart.join(" ")}.` : "") +
      (r.reruns?.length ? ` Re-run later and merged: ${r.reruns.map((x) => `${x.parts.join(", ")} (${x.startedAt.slice(0, 16).replace("T", " ")} UTC)`).join("; ")}.` : "") +
      ` Raw figures and every table: [bench/results/latest.md](bench/results/latest.md).`,
    "",
    "| # | target | goal | measured | ratio | result |",
    "|---|---|---|---|---|---|",
  ];
  for (const t of r.targets) {
    const res = t.pass === null ? "—" : t.pass ? "**pass**" : "**miss**";
    out.push(`| [${t.id}](${t.spec.replace(SPEC, "docs/SPECIFICATION.md")}) | ${t.what} | ${t.target} | ${t.measured}${t.note ? ` (${t.note})` : ""} | ${t.ratio} | ${res} |`);
  }
  out.push("");
  out.push("![Boot: per-slot build time across the pool](bench/results/scale-per-slot.svg)");
  if (r.recycle) out.push("![Recycling the pool: cycles per second](bench/results/recycle-throughput.svg)");
  out.push("![Per-VM setup and teardown: netslot against the peers](bench/results/side-by-side.svg)");
  out.push("![Lease path latency](bench/results/lease-latency.svg)");
  out.push("![Root rule count by pool size](bench/results/root-rules.svg)");
  return out.join("\n");
}

/** Rewrites README's results between its markers; false when the markers are missing. */
export function updateReadme(readme: string, r: BenchResults): boolean {
  const text = fs.readFileSync(readme, "utf8");
  const a = text.indexOf(README_START);
  const b = text.indexOf(README_END);
  if (a < 0 || b < a) return false;
  fs.writeFileSync(readme, `${text.slice(0, a + README_START.length)}\n${readmeResults(r)}\n${text.slice(b)}`);
  return true;
}

export function resultsFileName(r: BenchResults): string {
  return `${r.startedAt.replace(/[:]/g, "").replace(/\.\d+Z$/, "Z")}${r.mode === "quick" ? "-quick" : ""}.json`;
}

/** ms per slot over windows of about `window` slots, from [ms, count] samples. */
export function marginalCost(samples: Array<[number, number]>, window: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let i = 0;
  for (let j = 1; j < samples.length; j++) {
    const [ta, ca] = samples[i]!;
    const [tb, cb] = samples[j]!;
    if (cb - ca >= window) {
      out.push([(ca + cb) / 2, (tb - ta) / (cb - ca)]);
      i = j;
    }
  }
  return out;
}

export function writeCharts(r: BenchResults, dir: string): string[] {
  const written: string[] = [];
  const write = (name: string, svg: string) => {
    fs.writeFileSync(path.join(dir, name), svg);
    written.push(name);
  };
  const one = r.lease.plain?.concurrency.find((c) => c.clients === 1);

  // The scale curve: what one more slot costs as the pool grows (netslot, from the boot
  // timeline), against the peers' per-VM setup at their N.
  {
    const series: Series[] = [];
    for (const b of [...[...r.boot].sort((x, y) => y.n - x.n).slice(0, 1), ...(r.scale ? [r.scale] : [])]) {
      const pts = marginalCost(b.timeline ?? [], Math.max(16, Math.round(b.n / 40)));
      if (pts.length) series.push({ name: `netslot: ms per slot while building (N=${b.n})`, points: pts });
    }
    series.push({
      name: "netslot boot ÷ N (daemon's figure)",
      points: r.boot.filter((b) => b.start?.daemonReadySeconds).map((b) => [b.n, (b.start!.daemonReadySeconds! * 1000) / b.n] as [number, number]),
    });
    for (const name of ["per-vm-shell", "cni-bridge"]) {
      const pts = r.baselines.filter((b) => b.baseline === name && b.setupMsPerVm !== undefined).map((b) => [b.n, b.setupMsPerVm!] as [number, number]);
      if (pts.length) series.push({ name: `${name} setup per VM`, points: pts });
    }
    if (one) {
      const xs = series.flatMap((x) => x.points.map((p) => p[0]));
      if (xs.length) series.push({ name: "netslot request (mean, 1 client)", points: [[Math.min(...xs), one.requestMs.mean], [Math.max(...xs), one.requestMs.mean]], dashed: true });
    }
    write("scale-per-slot.svg", lineChart({ title: "Cost of one more slot vs slots already built", xLabel: "slots (N)", yLabel: "ms per slot (log)", series, logY: true }));
  }
  // Boot timeline.
  {
    const series: Series[] = [...r.boot, ...(r.scale ? [r.scale] : [])]
      .filter((b) => b.timeline && b.timeline.length > 1)
      .map((b) => ({ name: `N=${b.n}`, points: b.timeline!.map(([t, c]) => [t / 1000, c] as [number, number]) }));
    write("boot-timeline.svg", lineChart({ title: "Boot: slot builds started over time (from /run/netns)", xLabel: "seconds since spawn", yLabel: "slots", series }));
  }
  // Lease latency.
  {
    const cs = r.lease.plain?.concurrency ?? [];
    write(
      "lease-latency.svg",
      barChart({
        title: `Lease path latency over the API (pool ${r.lease.plain?.poolSize ?? "—"})`,
        yLabel: "ms (log)",
        categories: cs.map((c) => `${c.clients} client${c.clients > 1 ? "s" : ""}`),
        groups: [
          { name: "request p50", values: cs.map((c) => c.requestMs.p50) },
          { name: "request p99", values: cs.map((c) => c.requestMs.p99) },
          { name: "release-ack p50", values: cs.map((c) => c.releaseAckMs.p50) },
          { name: "release-ack p99", values: cs.map((c) => c.releaseAckMs.p99) },
        ],
        references: [{ name: "1 ms target (1 client)", value: 1 }],
        logY: true,
      }),
    );
  }
  // Side by side.
  {
    const groups = [{ name: "netslot (1 client, mean)", values: [one?.requestMs.mean, one?.releaseAckMs.mean] }];
    for (const b of r.baselines) if (!b.skipped) groups.push({ name: `${b.baseline} N=${b.n}`, values: [b.setupMsPerVm, b.teardownMsPerVm] });
    write(
      "side-by-side.svg",
      barChart({ title: "Per-VM network setup/teardown vs netslot request/release", yLabel: "ms per VM (log)", categories: ["setup / request", "teardown / release"], groups, logY: true }),
    );
  }
  // Root rules.
  {
    const series: Series[] = [{ name: "netslot root rules", points: r.footprint.rules.map((x) => [x.n, x.count]) }];
    for (const name of ["per-vm-shell", "cni-bridge"]) {
      const pts = r.baselines.filter((b) => b.baseline === name && b.rootRulesAdded !== undefined).map((b) => [b.n, b.rootRulesAdded!] as [number, number]);
      if (pts.length) series.push({ name: `${name} root rules added`, points: pts });
    }
    write("root-rules.svg", lineChart({ title: "Root-namespace rules vs pool size", xLabel: "slots (N)", yLabel: "rules (log)", series, logY: true }));
  }
  // Connect.
  {
    const c = r.footprint.connect;
    const runs = [c?.first, c?.last];
    write(
      "connect.svg",
      barChart({
        title: `TCP connect latency, first vs last slot${c ? ` (N=${c.n})` : ""}`,
        yLabel: "ms",
        categories: ["host → guest p50", "host → guest p99", "guest → upstream p50", "guest → upstream p99"],
        groups: runs.map((x, i) => ({
          name: `${i === 0 ? "first" : "last"} slot${x ? ` #${x.slotIndex}` : ""}`,
          values: [x?.hostToGuest?.ms.p50, x?.hostToGuest?.ms.p99, x?.guestToUpstream?.ms.p50, x?.guestToUpstream?.ms.p99],
        })),
      }),
    );
  }
  // Data path.
  {
    const d = r.datapath;
    const g = (x?: { bitsPerSecond: number }) => (x ? x.bitsPerSecond / 1e9 : undefined);
    write(
      "datapath.svg",
      barChart({
        title: "iperf3 throughput",
        yLabel: "Gbit/s",
        categories: ["guest → upstream", "upstream → guest"],
        groups: [
          { name: "netslot slot (relay + eBPF NAT)", values: [g(d?.netslot?.forward), g(d?.netslot?.reverse)] },
          { name: "plain routing (same relay)", values: [g(d?.plainRelay?.forward), g(d?.plainRelay?.reverse)] },
          { name: "plain routing, no relay", values: [g(d?.plainDirect?.forward), g(d?.plainDirect?.reverse)] },
        ],
      }),
    );
  }
  // The recycle window, second by second.
  if (r.recycle?.series.length) {
    const rc = r.recycle;
    const xs = rc.series.map((x) => x.t);
    write(
      "recycle-throughput.svg",
      lineChart({
        title: `Request + release cycles per second, ${rc.clients} clients, pool ${rc.poolSize}`,
        xLabel: "seconds into the window",
        yLabel: "per second",
        series: [
          { name: "cycles/s", points: rc.series.map((x) => [x.t, x.cycles]) },
          { name: "pool_exhausted answers/s", points: rc.series.map((x) => [x.t, x.exhausted]) },
          { name: "daemon CPU, % of a core", points: rc.series.map((x) => [x.t, x.daemonCpuPercent]) },
          { name: "target 1,000/s", points: [[Math.min(...xs), 1000], [Math.max(...xs), 1000]], dashed: true },
        ],
      }),
    );
    write(
      "recycle-pool.svg",
      lineChart({
        title: `Pool state during the recycle window (GET /v1/pool once a second)`,
        xLabel: "seconds into the window",
        yLabel: "slots",
        series: [
          { name: "free", points: rc.series.filter((x) => Number.isFinite(x.free)).map((x) => [x.t, x.free]) },
          { name: "scrubbing", points: rc.series.filter((x) => Number.isFinite(x.scrubbing)).map((x) => [x.t, x.scrubbing]) },
          { name: "leased", points: rc.series.filter((x) => Number.isFinite(x.leased)).map((x) => [x.t, x.leased]) },
          { name: "quarantined", points: rc.series.filter((x) => Number.isFinite(x.quarantined)).map((x) => [x.t, x.quarantined]) },
        ],
      }),
    );
  }
  return written;
}
