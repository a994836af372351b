// `npm run bench` (root): netslot's benchmark suite. Boots daemons at several pool sizes,
// drives the lease path through the SDK, runs the peers' baselines in the same run, counts
// root rules, times TCP connects and iperf3 through slots, restarts the daemon, and writes
// bench/results/<date>.json, latest.md and SVG charts. Every daemon gets its own prefix and
// is purged afterwards; every namespace created here is deleted, also on failure.
//
//   node dist/bench/run.js [--quick] [--only boot,lease,tenancy,baselines,footprint,datapath,restart,profiles,proof,scale]
//                          [--out DIR]
//   node dist/bench/run.js --merge PART.json --only PARTS [--into FULL.json]
//     (puts the named parts of a partial run into a full run's results and re-renders)
import * as fs from "node:fs";
import * as path from "node:path";
import { NetslotApiError } from "../src/sdk/index.js";
import type { Lease } from "../src/core/types.js";
import { createUpstream, REPO_ROOT, rootRuleCount, sh, sleep, waitFor, type Upstream } from "../test/support/env.js";
import { startGuestStandIn, type GuestStandIn } from "../test/support/guest.js";
import { runBaseline } from "./lib/baselines.js";
import { benchProfiles } from "./profiles.js";
import { measureProof } from "./proof-cpu.js";
import { buildRateFromProgress, buildRateFromTimeline, purgePrefix, startBenchDaemon, type BenchDaemon, type DaemonSpec, type StartResult } from "./lib/daemon.js";
import { measureLeasePath } from "./lib/lease.js";
import { measureRecycle } from "./lib/recycle.js";
import { measureTenancyCost } from "./lib/tenancy.js";
import { connectLatencyFrom, connectLatencyInterleaved, createPlainPath, iperf3, startTcpListener, type Listener } from "./lib/net.js";
import { evaluateTargets, markdown, resultsFileName, updateReadme, writeCharts } from "./lib/report.js";
import type { BenchResults, BootRun, DatapathResult } from "./lib/types.js";
import { benchPrefix, Cleanups, errorText, KERNEL_MEMINFO_FIELDS, machineInfo, meminfo, now, openFiles, peakRssKb, round, rssKb, settle, summarize, percentile } from "./lib/util.js";

const PARTS = ["baselines", "proof", "boot", "lease", "tenancy", "footprint", "datapath", "restart", "profiles", "scale"] as const;
type Part = (typeof PARTS)[number];

const DEFAULT_OUT = path.join(REPO_ROOT, "bench", "results");

interface Args {
  quick: boolean;
  only: Set<Part>;
  out: string;
  /** Re-render latest.md and the charts from an existing results JSON; runs nothing. */
  render?: string;
  /** Pool sizes to boot instead of the mode's (the largest is used for the other parts). */
  sizes?: number[];
  /** Length of the recycle window instead of the mode's (60 s; quick: 10 s). */
  recycleSeconds?: number;
  /** Test only: the scale part boots this many slots instead of 16,384 (then not judged). */
  scaleSize?: number;
  /** A partial run's results whose `only` parts replace those of a full run (`into`). */
  merge?: string;
  into?: string;
}

/** The results fields each part writes (what --merge replaces). */
const PART_FIELDS: Record<Part, Array<keyof BenchResults>> = {
  baselines: ["baselines"],
  proof: ["proof"],
  boot: ["boot", "memory"],
  lease: ["lease", "recycle", "refills"],
  tenancy: ["tenancy"],
  footprint: ["footprint"],
  datapath: ["datapath"],
  restart: ["restart"],
  profiles: ["profiles"],
  scale: ["scale"],
};

function parseArgs(argv: string[]): Args {
  let quick = false;
  let only: Set<Part> | undefined;
  let out = DEFAULT_OUT;
  let render: string | undefined;
  let sizes: number[] | undefined;
  let recycleSeconds: number | undefined;
  let scaleSize: number | undefined;
  let merge: string | undefined;
  let into: string | undefined;
  let onlyGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--quick") quick = true;
    else if (a === "--only" || a.startsWith("--only=")) {
      const v = a.includes("=") ? a.slice(7) : argv[++i];
      const parts = (v ?? "").split(",").filter(Boolean);
      for (const p of parts) if (!(PARTS as readonly string[]).includes(p)) throw new Error(`--only: unknown part "${p}" (${PARTS.join(", ")})`);
      only = new Set(parts as Part[]);
      onlyGiven = true;
    } else if (a === "--out" || a.startsWith("--out=")) {
      out = path.resolve(a.includes("=") ? a.slice(6) : argv[++i]!);
    } else if (a === "--sizes" || a.startsWith("--sizes=")) {
      const v = a.includes("=") ? a.slice(8) : argv[++i];
      sizes = (v ?? "").split(",").map(Number);
      if (sizes.length === 0 || sizes.some((n) => !Number.isInteger(n) || n < 2)) throw new Error("--sizes takes whole numbers ≥ 2, e.g. 250,1000");
      sizes.sort((x, y) => x - y);
    } else if (a === "--recycle-seconds" || a.startsWith("--recycle-seconds=")) {
      const v = Number(a.includes("=") ? a.slice(18) : argv[++i]);
      if (!(v > 0)) throw new Error("--recycle-seconds takes a number of seconds > 0");
      recycleSeconds = v;
    } else if (a === "--scale-size" || a.startsWith("--scale-size=")) {
      const v = Number(a.includes("=") ? a.slice(13) : argv[++i]);
      if (!Number.isInteger(v) || v < 2 || v > 16384) throw new Error("--scale-size takes a whole number from 2 to 16,384");
      scaleSize = v;
    } else if (a === "--render" || a.startsWith("--render=")) {
      render = path.resolve(a.includes("=") ? a.slice(9) : argv[++i]!);
    } else if (a === "--merge" || a.startsWith("--merge=")) {
      merge = path.resolve(a.includes("=") ? a.slice(8) : argv[++i]!);
    } else if (a === "--into" || a.startsWith("--into=")) {
      into = path.resolve(a.includes("=") ? a.slice(7) : argv[++i]!);
    } else if (a === "--help" || a === "-h") {
      process.stdout.write(
        "usage: node dist/bench/run.js [--quick] [--only " + PARTS.join(",") + "] [--sizes N,N,…] [--out DIR] [--render RESULTS.json]\n" +
          "       node dist/bench/run.js --merge PART.json --only PARTS [--into FULL.json]\n",
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (merge && !onlyGiven) throw new Error("--merge needs --only: the parts to take from the partial run");
  if (into && !merge) throw new Error("--into goes with --merge");
  // The scale part (16,384 slots) runs in a full run, or when asked for by name.
  only ??= new Set<Part>(PARTS.filter((p) => !(quick && p === "scale")));
  return { quick, only, out, ...(render ? { render } : {}), ...(sizes ? { sizes } : {}), ...(recycleSeconds ? { recycleSeconds } : {}), ...(scaleSize ? { scaleSize } : {}), ...(merge ? { merge } : {}), ...(into ? { into } : {}) };
}

/** The newest full run's results in `dir` (file names sort by start time). */
function newestFullRun(dir: string): string {
  const files = fs.readdirSync(dir).filter((f) => /^\d{4}-.*\.json$/.test(f)).sort().reverse();
  for (const f of files) {
    const file = path.join(dir, f);
    if ((JSON.parse(fs.readFileSync(file, "utf8")) as BenchResults).mode === "full") return file;
  }
  throw new Error(`no full run's results in ${dir}`);
}

/**
 * Puts the named parts of a partial run into a full run's results (rewritten in place,
 * with a note of what was re-run, when, at which commit) and re-renders latest.md, the
 * charts and the README table from them.
 */
function mergeRun(args: Args & { merge: string }): number {
  const into = args.into ?? newestFullRun(args.out);
  const full = JSON.parse(fs.readFileSync(into, "utf8")) as BenchResults;
  const part = JSON.parse(fs.readFileSync(args.merge, "utf8")) as BenchResults;
  const parts = [...args.only];
  const target = full as unknown as Record<string, unknown>;
  const source = part as unknown as Record<string, unknown>;
  for (const p of parts) for (const field of PART_FIELDS[p]) target[field] = source[field];
  full.errors = [...full.errors, ...part.errors.map((e) => `(re-run of ${parts.join(", ")}) ${e}`)];
  full.reruns = [
    // Merging the same partial run again replaces its note.
    ...(full.reruns ?? []).filter((x) => x.startedAt !== part.startedAt),
    {
      parts,
      startedAt: part.startedAt,
      durationSeconds: part.durationSeconds ?? NaN,
      ...(part.git ? { git: part.git } : {}),
      ...(part.machine.loadAverageAtStart ? { loadAverageAtStart: part.machine.loadAverageAtStart } : {}),
    },
  ];
  full.targets = evaluateTargets(full);
  fs.writeFileSync(into, JSON.stringify(full, null, 2) + "\n");
  fs.writeFileSync(path.join(args.out, "latest.md"), markdown(full));
  writeCharts(full, args.out);
  writeReadme(full, args.out);
  log(`merged ${parts.join(", ")} of ${path.basename(args.merge)} into ${path.basename(into)}; rendered latest.md and charts`);
  return 0;
}

/** How long to wait for a quiet CPU before a measurement (set from the mode in main). */
let settleMaxMs = 60_000;
/** --vtep-remote of every daemon: an address of the run's upstream namespace. */
let vtepAddress: string | undefined;

const log = (msg: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);

function stripStart(s: StartResult): Omit<StartResult, "timeline" | "progressLines"> {
  const { timeline: _t, progressLines: _p, ...rest } = s;
  return rest;
}

/** At most `max` points, always keeping the first and the last. */
function downsample<T>(xs: T[], max: number): T[] {
  if (xs.length <= max) return xs;
  const step = (xs.length - 1) / (max - 1);
  return Array.from({ length: max }, (_, i) => xs[Math.round(i * step)]!);
}

function gitInfo(): { commit: string; dirty: boolean } | undefined {
  try {
    const commit = sh("git", ["-C", REPO_ROOT, "rev-parse", "HEAD"]).trim();
    const dirty = sh("git", ["-C", REPO_ROOT, "status", "--porcelain", "--untracked-files=no"]).trim() !== "";
    return { commit, dirty };
  } catch {
    return undefined;
  }
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (args.merge) return mergeRun({ ...args, merge: args.merge });
  if (args.render) {
    const results = JSON.parse(fs.readFileSync(args.render, "utf8")) as BenchResults;
    results.targets = evaluateTargets(results);
    fs.writeFileSync(args.render, JSON.stringify(results, null, 2) + "\n");
    fs.writeFileSync(path.join(args.out, "latest.md"), markdown(results));
    writeCharts(results, args.out);
    log(`rendered latest.md and charts in ${args.out} from ${args.render}`);
    writeReadme(results, args.out);
    return 0;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write("bench: run as root (it creates namespaces and starts daemons)\n");
    return 2;
  }
  const q = args.quick;
  settleMaxMs = q ? 10_000 : 60_000;
  const bootSizes = args.sizes ?? (q ? [16, 250, 1000] : [16, 250, 1000, 4000]);
  const maxN = bootSizes[bootSizes.length - 1]!;
  const baselineSizes = q ? [100, 250] : [250, 1000];
  const started = new Date();
  const t0 = now();
  const results: BenchResults = {
    schema: 1,
    mode: q ? "quick" : "full",
    startedAt: started.toISOString(),
    machine: machineInfo(),
    git: gitInfo(),
    client: "netslot SDK (NetslotClient, HTTP/1.1 keep-alive over the unix socket)",
    sizes: { boot: bootSizes, lease: maxN, baselines: baselineSizes },
    baselines: [],
    boot: [],
    lease: {},
    footprint: { rules: [] },
    restart: [],
    refills: [],
    targets: [],
    errors: [],
  };
  const fail = (where: string, err: unknown) => {
    const msg = `${where}: ${errorText(err)}`;
    results.errors.push(msg);
    log(`ERROR ${msg.split("\n")[0]}`);
  };

  const cleanups = new Cleanups();
  const onSignal = (sig: NodeJS.Signals) => {
    log(`${sig}: cleaning up`);
    cleanups.runAll(log);
    process.exit(130);
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  const runPrefix = benchPrefix();
  let upstream: Upstream | undefined;
  try {
    upstream = createUpstream(runPrefix);
    const up = upstream;
    cleanups.add("upstream", () => up.remove());
    // The VTEP is a second address of the upstream namespace: netslot keeps guests away
    // from the VTEP, and the guests' traffic goes to the first one.
    vtepAddress = up.address.replace(/\.2$/, ".3");
    sh("ip", ["-n", up.netns, "addr", "add", `${vtepAddress}/24`, "dev", "eth0"]);
    log(`run prefix ${runPrefix}; upstream ${up.netns} (${up.address}, VTEP ${vtepAddress}) behind ${up.uplink}`);

    // ── 3. baselines ────────────────────────────────────────────────────────────────
    if (args.only.has("baselines")) {
      for (const n of baselineSizes) {
        for (const script of ["per-vm-shell", "cni-bridge"] as const) {
          await settle(0.15, settleMaxMs);
          log(`baseline ${script} N=${n}`);
          const r = await runBaseline(script, n);
          results.baselines.push(r);
          log(r.skipped ? `  skipped: ${r.skipped.split("\n")[0]}` : `  setup ${round(r.setupMsPerVm!, 2)} ms/VM, teardown ${round(r.teardownMsPerVm!, 2)} ms/VM, +${r.rootRulesAdded} root rules`);
        }
      }
    }

    // ── proof of a released slot: CPU per proof on a scratch slot (issue 15, goal 1) ──
    if (args.only.has("proof")) {
      const n = q ? 100 : 200;
      const rebuilds = q ? 10 : 20;
      await settle(0.15, settleMaxMs);
      log(`proof of a released slot, ${n} proofs of each kind, ${rebuilds} rebuilds`);
      results.proof = { n, rebuilds };
      try {
        const pr = measureProof({ n, rebuilds });
        results.proof.result = pr;
        log(
          `  untouched: CPU median ${round(pr.untouched.median, 3)} ms, p99 ${round(pr.untouched.p99, 3)} ms (fast path ${pr.untouched.fastPaths}/${pr.untouched.n}); ` +
            `batched ${round(pr.untouchedBatched.median, 3)} ms; reset ${round(pr.reset.median, 3)} ms; full ${round(pr.full.median, 2)} ms; rebuild ${round(pr.rebuild.cpu.median, 2)} ms CPU`,
        );
      } catch (err) {
        results.proof.error = errorText(err);
        fail("proof", err);
      }
    }

    // ── 8. network profiles (own small daemon, before the big ones) ────────────────
    if (args.only.has("profiles")) {
      await settle(0.15, settleMaxMs);
      try {
        results.profiles = await benchProfiles({ up, prefix: benchPrefix(), quick: q, cleanups, log });
        if (results.profiles.error) fail("profiles", new Error(results.profiles.error));
        if (results.profiles.datapath?.error) fail("profiles data path", new Error(results.profiles.datapath.error));
      } catch (err) {
        fail("profiles", err);
      }
    }

    // ── tenancy: the checks' cost, four configured consumers against none ─────────
    if (args.only.has("tenancy")) {
      const n = Math.min(maxN, q ? 256 : 1000);
      await settle(0.15, settleMaxMs);
      log(`tenancy checks, two daemons of ${n} slots (no consumers / four consumers)`);
      results.tenancy = await measureTenancyCost({
        prefixes: [benchPrefix(), benchPrefix()],
        uplink: up.uplink,
        poolSize: n,
        rounds: q ? 8 : 16,
        cyclesPerRound: q ? 150 : 500,
        levels: [1, 8],
        log,
        register: (name, fn) => cleanups.add(name, fn),
      });
      if (results.tenancy.error) fail("tenancy", results.tenancy.error);
    }

    // ── 1. boot sweep (and 4. rule count, 6. memory) ──────────────────────────────
    const needDaemonAfter = ["lease", "footprint", "datapath", "restart"].some((p) => args.only.has(p as Part));
    const sizes = args.only.has("boot") || args.only.has("footprint") ? bootSizes : needDaemonAfter ? [maxN] : [];
    let kept: { daemon: BenchDaemon; unregister: () => void } | undefined;
    for (const n of sizes) {
      const keep = n === maxN && needDaemonAfter;
      const r = await bootOne(n, up, keep, cleanups, results);
      results.boot.push(r.run);
      if (r.kept) kept = r.kept;
    }
    const rules = results.boot.filter((b) => b.rootRules !== undefined).map((b) => ({ n: b.n, count: b.rootRules! }));
    results.footprint.rules = rules;
    results.footprint.identical = rules.length > 1 ? new Set(rules.map((x) => x.count)).size === 1 : undefined;

    if (kept) {
      let daemon: BenchDaemon | undefined = kept.daemon;
      let unregister = kept.unregister;
      const big = results.boot.find((b) => b.n === maxN)!;
      results.memory = {
        n: maxN,
        daemonRssKbAtReady: big.rssKbAtReady,
        kernelKbPerSlot: big.memory?.kernelKbPerSlot,
        slabKbPerSlot: big.memory?.slabKbPerSlot,
      };
      try {
        // ── 4. lease every slot; connect latency on the first and the last ────────
        if (args.only.has("footprint") || args.only.has("datapath")) {
          await footprintAndDatapath(daemon, maxN, up, runPrefix, q, args, cleanups, results, fail);
        }
        // ── 2. lease path ───────────────────────────────────────────────────────────
        if (args.only.has("lease")) {
          const plan = q
            ? [
                { clients: 1, cycles: 500 },
                { clients: 8, cycles: 100 },
                { clients: 64, cycles: 20 },
              ]
            : [
                { clients: 1, cycles: 2000 },
                { clients: 8, cycles: 500 },
                { clients: 64, cycles: 60 },
              ];
          await waitForRefill(daemon.client, maxN, results, fail, "before the lease path");
          await settle(0.15, settleMaxMs);
          log(`lease path, pool ${maxN}, no tenant network`);
          try {
            results.lease.plain = await measureLeasePath({
              socket: daemon.socket,
              poolSize: maxN,
              plan,
              reusableCycles: q ? 200 : 500,
              // The sustained figure comes from the recycle window below.
              sustainedSeconds: 0,
              sustainedClients: 8,
              warmupCycles: 200,
              maxSecondsPerLevel: q ? 8 : 30,
              log,
            });
          } catch (err) {
            fail("lease path", err);
            results.lease.error = errorText(err);
          }
          // ── the pool recycling under load: 8 clients for 60 s, one probe client ──
          await waitForRefill(daemon.client, maxN, results, fail, "before the recycle window");
          await settle(0.15, settleMaxMs);
          const recycleSeconds = args.recycleSeconds ?? (q ? 10 : 60);
          log(`recycle: 8 clients × ${recycleSeconds} s on ${maxN} slots, one probe client every 10 ms`);
          try {
            results.recycle = await measureRecycle({
              socket: daemon.socket,
              pid: daemon.pid,
              poolSize: maxN,
              clients: 8,
              seconds: recycleSeconds,
              probeIntervalMs: 10,
              settleSeconds: Math.max(60, maxN / 20),
              log,
            });
          } catch (err) {
            fail("recycle window", err);
          }
          await waitForRefill(daemon.client, maxN, results, fail, "before the tenant lease path");
          log(`lease path, pool ${maxN}, with a tenant network`);
          if (!daemon.spec.vtepRemote) {
            results.lease.tenant = { poolSize: maxN, tenant: null, concurrency: [], reusable: undefined, sustained: undefined, skipped: "the daemon runs without --vtep-remote" };
          } else {
            try {
              results.lease.tenant = await measureLeasePath({
                socket: daemon.socket,
                poolSize: maxN,
                plan: q
                  ? [
                      { clients: 1, cycles: 300 },
                      { clients: 8, cycles: 50 },
                    ]
                  : [
                      { clients: 1, cycles: 1000 },
                      { clients: 8, cycles: 200 },
                      { clients: 64, cycles: 30 },
                    ],
                reusableCycles: q ? 100 : 300,
                sustainedSeconds: q ? 3 : 10,
                sustainedClients: 8,
                warmupCycles: 50,
                maxSecondsPerLevel: q ? 5 : 20,
                tenant: { vni: 1, cidr: "10.77.0.0/16" },
                log,
              });
              if (results.lease.tenant.skipped) log(`  skipped: ${results.lease.tenant.skipped}`);
            } catch (err) {
              fail("lease path with tenant network", err);
            }
          }
          results.memory.daemonRssKbAfterLeases = rssKb(daemon.pid);
        }
        results.memory.daemonPeakRssKb = peakRssKb(daemon.pid);

        // ── 7. restart ──────────────────────────────────────────────────────────────
        if (args.only.has("restart")) {
          for (const kind of ["sigterm", "kill9"] as const) {
            await settle(0.15, settleMaxMs);
            log(`restart after ${kind}, N=${maxN}`);
            let stopMs: number | undefined;
            const s = now();
            if (kind === "sigterm") stopMs = await daemon.stop();
            else {
              await daemon.kill9();
              stopMs = now() - s;
            }
            unregister();
            try {
              const spec: DaemonSpec = { ...daemon.spec, sampleNetns: false };
              const next = await startBenchDaemon(spec);
              daemon = next;
              unregister = cleanups.add(`daemon ${next.prefix}`, emergencyStop(next));
              results.restart.push({ kind, n: maxN, stopMs, start: stripStart(next.start) });
              log(`  ready in ${round(next.start.wallReadyMs / 1000, 2)} s wall (${next.start.daemonReadySeconds ?? "?"} s daemon), ${next.start.adopted ?? "?"} adopted`);
            } catch (err) {
              results.restart.push({ kind, n: maxN, stopMs, error: errorText(err) });
              fail(`restart after ${kind}`, err);
              // The old state still has to go.
              const p = purgePrefix(daemon.prefix, daemon.stateDir);
              if (p.leftovers.length) log(`  purge left ${p.leftovers.length} objects`);
              unregister = () => {};
              daemon = undefined;
              break;
            }
          }
        }
      } finally {
        if (daemon) {
          log(`stopping and purging ${daemon.prefix}`);
          const stopMs = await daemon.stop();
          const p = purgePrefix(daemon.prefix, daemon.stateDir);
          unregister();
          big.stopMs ??= stopMs;
          big.purge = p;
          log(`  purge ${round(p.ms / 1000, 2)} s${p.ok ? "" : ` FAILED: ${p.output.split("\n")[0]}`}${p.leftovers.length ? `; swept ${p.leftovers.length} leftovers (${p.leftovers.slice(0, 3).join(", ")})` : ""}`);
        }
      }
    }

    // ── the /16 maximum: 16,384 slots (issue 15, goal 4), last: nothing else runs then ──
    if (args.only.has("scale")) {
      const n = args.scaleSize ?? 16384;
      log(`scale: a pool of ${n} slots${n === 16384 ? " (the /16 maximum)" : " (test size, not judged)"}`);
      const r = await bootOne(n, up, false, cleanups, results, 900_000);
      results.scale = r.run;
    }
  } catch (err) {
    fail("run", err);
  } finally {
    cleanups.runAll(log);
  }

  results.finishedAt = new Date().toISOString();
  results.durationSeconds = (now() - t0) / 1000;
  results.targets = evaluateTargets(results);
  fs.mkdirSync(args.out, { recursive: true });
  const jsonFile = path.join(args.out, resultsFileName(results));
  fs.writeFileSync(jsonFile, JSON.stringify(results, null, 2) + "\n");
  fs.writeFileSync(path.join(args.out, "latest.md"), markdown(results));
  const charts = writeCharts(results, args.out);
  writeReadme(results, args.out);
  log(`wrote ${path.relative(process.cwd(), jsonFile)}, latest.md and ${charts.length} charts in ${path.relative(process.cwd(), args.out) || "."}`);
  for (const t of results.targets) log(`  ${t.id.padEnd(4)} ${t.pass === null ? "  —  " : t.pass ? "pass " : "MISS "} ${t.what}: ${t.measured} (goal ${t.target})`);
  return results.errors.length ? 1 : 0;
}

/** README's "Latest results" follow a full run written to the committed results directory. */
function writeReadme(results: BenchResults, out: string): void {
  if (results.mode !== "full" || path.resolve(out) !== DEFAULT_OUT) return;
  const readme = path.join(REPO_ROOT, "README.md");
  log(updateReadme(readme, results) ? "README.md: latest results rewritten" : "README.md: no bench:results markers; left alone");
}

/**
 * Waits until every slot is free again (released slots are scrubbed first), allowing 50 ms
 * per slot; on timeout records how far the pool got.
 */
async function waitForRefill(
  client: BenchDaemon["client"],
  n: number,
  results: BenchResults,
  fail: (where: string, err: unknown) => void,
  when: string,
): Promise<boolean> {
  const t = now();
  try {
    await waitFor(async () => (await client.pool()).free === n, Math.max(60_000, n * 50), { intervalMs: 100 });
    results.refills.push({ when, seconds: (now() - t) / 1000, ok: true });
    log(`  pool refilled ${when} in ${round((now() - t) / 1000, 1)} s`);
    return true;
  } catch (err) {
    const p = await client.pool().catch(() => undefined);
    const state = p ? `free ${p.free}, leased ${p.leased}, scrubbing ${p.scrubbing}, quarantined ${p.quarantined}, missing ${p.missing}` : "pool unreadable";
    results.refills.push({ when, seconds: (now() - t) / 1000, ok: false, pool: state });
    fail(`pool refill ${when} (${state})`, err);
    return false;
  }
}

/** Synchronous last resort for a daemon: SIGKILL and sweep its prefix. */
function emergencyStop(d: BenchDaemon): () => void {
  return () => {
    try {
      process.kill(d.pid, "SIGKILL");
    } catch {
      // gone
    }
    purgePrefix(d.prefix, d.stateDir);
  };
}

async function bootOne(
  n: number,
  up: Upstream,
  keep: boolean,
  cleanups: Cleanups,
  results: BenchResults,
  readyTimeoutMs?: number,
): Promise<{ run: BootRun; kept?: { daemon: BenchDaemon; unregister: () => void } }> {
  const prefix = benchPrefix();
  const run: BootRun = { n, prefix };
  log(`boot N=${n} (prefix ${prefix})`);
  // Let the previous teardown (kernel netns cleanup runs on after purge) settle first.
  const quiet = await settle(0.15, settleMaxMs);
  run.settle = quiet;
  const memBefore = meminfo();
  let daemon: BenchDaemon;
  const spec: DaemonSpec = { prefix, poolSize: n, uplink: up.uplink, vtepRemote: vtepAddress, sampleNetns: true, ...(readyTimeoutMs ? { readyTimeoutMs } : {}) };
  try {
    daemon = await startBenchDaemon(spec);
  } catch (err) {
    // Sweep whatever the failed start left, then try once more without tunnels.
    purgePrefix(prefix, fs.mkdtempSync("/tmp/netslot-bench-failed-") + "/state");
    results.errors.push(`boot N=${n} with --vtep-remote: ${errorText(err).split("\n")[0]}`);
    log(`  failed with --vtep-remote (${errorText(err).split("\n")[0]}); trying without`);
    try {
      daemon = await startBenchDaemon({ ...spec, vtepRemote: undefined });
    } catch (err2) {
      purgePrefix(prefix, fs.mkdtempSync("/tmp/netslot-bench-failed-") + "/state");
      run.error = errorText(err2);
      results.errors.push(`boot N=${n}: ${run.error.split("\n")[0]}`);
      log(`  failed: ${run.error.split("\n").slice(0, 3).join(" | ")}`);
      return { run };
    }
  }
  const unregister = cleanups.add(`daemon ${prefix}`, emergencyStop(daemon));
  run.linkCidr = daemon.linkCidr;
  run.vtepRemote = daemon.spec.vtepRemote;
  const s = daemon.start;
  run.start = stripStart(s);
  run.progressLines = s.progressLines;
  if (s.timeline) {
    run.timeline = downsample(s.timeline.samples, 500);
    run.timelineResolutionMs = s.timeline.intervalMs;
  }
  const built = (s.built ?? n) - (s.adopted ?? 0);
  run.slotsPerSecondWall = (built / s.wallReadyMs) * 1000;
  if (s.daemonReadySeconds) run.slotsPerSecondDaemon = built / s.daemonReadySeconds;
  run.perSlotBuild = {
    ...(s.timeline ? { timeline: buildRateFromTimeline(s.timeline, n) } : {}),
    progress: buildRateFromProgress(s.progressLines, n),
  };
  try {
    run.rootRules = rootRuleCount(prefix);
  } catch (err) {
    results.errors.push(`root rules N=${n}: ${errorText(err)}`);
  }
  run.rssKbAtReady = rssKb(daemon.pid);
  run.fds = openFiles(daemon.pid);
  await sleep(300);
  const memAfter = meminfo();
  const rss = rssKb(daemon.pid) ?? 0;
  const availDrop = (memBefore.MemAvailable ?? 0) - (memAfter.MemAvailable ?? 0);
  const slab = (memAfter.Slab ?? 0) - (memBefore.Slab ?? 0);
  run.memory = {
    memAvailableDeltaKb: availDrop,
    slabDeltaKb: slab,
    slabUnreclaimDeltaKb: (memAfter.SUnreclaim ?? 0) - (memBefore.SUnreclaim ?? 0),
    daemonRssKb: rss,
    kernelKbPerSlot: (availDrop - rss) / n,
    slabKbPerSlot: slab / n,
    // Where the kernel's share goes, per slot: the /proc/meminfo fields that hold it.
    perSlotKb: Object.fromEntries(KERNEL_MEMINFO_FIELDS.filter((f) => f in memAfter).map((f) => [f, round(((memAfter[f] ?? 0) - (memBefore[f] ?? 0)) / n, 2)])),
  };
  const tl = run.perSlotBuild.timeline ?? run.perSlotBuild.progress;
  log(
    `  ready in ${round(s.wallReadyMs / 1000, 2)} s wall, ${s.daemonReadySeconds ?? "?"} s daemon (${round(run.slotsPerSecondWall, 0)} slots/s); ` +
      `per slot first 10% ${tl ? round(tl.firstTenthMsPerSlot, 2) : "?"} ms, last 10% ${tl ? round(tl.lastTenthMsPerSlot, 2) : "?"} ms; ` +
      `${run.rootRules ?? "?"} root rules; RSS ${round(rss / 1024, 1)} MiB; kernel ≈ ${round(run.memory.kernelKbPerSlot, 1)} KiB/slot`,
  );
  if (keep) return { run, kept: { daemon, unregister } };
  run.stopMs = await daemon.stop();
  run.purge = purgePrefix(prefix, daemon.stateDir);
  unregister();
  log(`  stopped in ${round(run.stopMs, 0)} ms; purged in ${round(run.purge.ms / 1000, 2)} s${run.purge.ok ? "" : ` (purge FAILED: ${run.purge.output.split("\n")[0]})`}${run.purge.leftovers.length ? `; swept ${run.purge.leftovers.length} leftovers` : ""}`);
  return { run };
}

async function footprintAndDatapath(
  daemon: BenchDaemon,
  n: number,
  up: Upstream,
  runPrefix: string,
  quick: boolean,
  args: Args,
  cleanups: Cleanups,
  results: BenchResults,
  fail: (where: string, err: unknown) => void,
): Promise<void> {
  const client = daemon.client;
  const held: Lease[] = [];
  let first: Lease | undefined;
  let last: Lease | undefined;
  const guests: GuestStandIn[] = [];
  const listeners: Listener[] = [];
  try {
    // Lease the whole pool: the first and the last slot are then both ours.
    log(`leasing all ${n} slots to reach the first and the last`);
    const t = now();
    const each: number[] = [];
    for (let i = 0; i < n; i++) {
      const a = now();
      const lease = await client.acquire({});
      each.push(now() - a);
      held.push(lease);
      if (lease.slot.index === 0) first = lease;
      if (lease.slot.index === n - 1) last = lease;
    }
    const seconds = (now() - t) / 1000;
    let exhaustedAnswer: string | undefined;
    try {
      const extra = await client.acquire({});
      held.push(extra);
      exhaustedAnswer = `a lease (unexpected): slot ${extra.slot.index}`;
    } catch (err) {
      exhaustedAnswer = err instanceof NetslotApiError ? `${err.status} ${err.code}` : errorText(err);
    }
    results.footprint.acquireAll = { n, seconds, requestMs: summarize(each), exhaustedAnswer };
    log(`  ${round(seconds, 2)} s (request p50 ${round(percentile(each.sort((x, y) => x - y), 50))} ms, p99 ${round(percentile(each, 99))} ms); one more: ${exhaustedAnswer}`);
    // Keep only the two we need.
    const keepIds = new Set([first?.id, last?.id]);
    for (const l of held.filter((l) => !keepIds.has(l.id))) await client.release(l.id);
    held.splice(0, held.length, ...held.filter((l) => keepIds.has(l.id)));
    if (!first || !last) throw new Error(`did not get slots 0 and ${n - 1}`);

    const mtu = first.guest.mtu;
    const startGuest = async (lease: Lease, name: string) => {
      const g = await startGuestStandIn({ slotNetnsPath: lease.slot.netns, name, mtu });
      guests.push(g);
      cleanups.add(`guest ${name}`, () => sh("ip", ["netns", "del", name], { allowFail: true }));
      return g;
    };
    const gFirst = await startGuest(first, `${runPrefix}g0`);
    const gLast = await startGuest(last, `${runPrefix}g1`);

    if (args.only.has("footprint")) {
      const count = quick ? 300 : 1000;
      results.footprint.connect = { n, count };
      try {
        listeners.push(await startTcpListener(gFirst.netns, 8080));
        listeners.push(await startTcpListener(gLast.netns, 8080));
        listeners.push(await startTcpListener(up.netns, 8081));
        log(`connect latency host → guest, slots 0 and ${n - 1}, ${count} each (interleaved)`);
        // Warm the path (ARP, route cache) before measuring.
        await connectLatencyInterleaved({ host: first.slot.outsideAddress, port: 8080 }, { host: last.slot.outsideAddress, port: 8080 }, 20);
        const [a, b] = await connectLatencyInterleaved({ host: first.slot.outsideAddress, port: 8080 }, { host: last.slot.outsideAddress, port: 8080 }, count);
        results.footprint.connect.first = { slotIndex: first.slot.index, outsideAddress: first.slot.outsideAddress, hostToGuest: a };
        results.footprint.connect.last = { slotIndex: last.slot.index, outsideAddress: last.slot.outsideAddress, hostToGuest: b };
        log(`  first p50 ${round(a.ms.p50)} p99 ${round(a.ms.p99)} ms (${a.failures} failed); last p50 ${round(b.ms.p50)} p99 ${round(b.ms.p99)} ms (${b.failures} failed)`);
        log(`connect latency guest → upstream, ${count} each`);
        for (const [g, r] of [
          [gFirst, results.footprint.connect.first],
          [gLast, results.footprint.connect.last],
        ] as const) {
          try {
            r.guestToUpstream = await connectLatencyFrom(g.netns, up.address, 8081, count);
            log(`  slot ${r.slotIndex}: p50 ${round(r.guestToUpstream.ms.p50)} p99 ${round(r.guestToUpstream.ms.p99)} ms (${r.guestToUpstream.failures} failed${r.guestToUpstream.firstError ? `: ${r.guestToUpstream.firstError}` : ""})`);
          } catch (err) {
            fail(`guest → upstream connects, slot ${r.slotIndex}`, err);
          }
        }
      } catch (err) {
        results.footprint.connect.error = errorText(err);
        fail("connect latency", err);
      }
    }

    if (args.only.has("datapath")) {
      const seconds = quick ? 3 : 10;
      const d: DatapathResult = { seconds, mtu };
      results.datapath = d;
      log(`data path: iperf3 ${seconds} s each way, netslot slot vs plain routing`);
      try {
        d.netslot = {
          forward: await iperf3({ clientNetns: gFirst.netns, serverNetns: up.netns, serverAddress: up.address, port: 5201, seconds }),
          reverse: await iperf3({ clientNetns: gFirst.netns, serverNetns: up.netns, serverAddress: up.address, port: 5201, seconds, reverse: true }),
        };
        log(`  netslot: ${round(d.netslot.forward!.bitsPerSecond / 1e9, 2)} / ${round(d.netslot.reverse!.bitsPerSecond / 1e9, 2)} Gbit/s`);
      } catch (err) {
        d.error = errorText(err);
        fail("iperf3 through netslot", err);
      }
      const plainName = `${runPrefix}pl`;
      const plain = createPlainPath(plainName, mtu);
      const unregPlain = cleanups.add("plain path", () => plain.remove());
      try {
        const pg = await startGuestStandIn({
          slotNetnsPath: `/run/netns/${plain.netns}`,
          name: `${runPrefix}pg`,
          mtu,
          ip: { address: plain.guestAddress, prefixLength: 30, gateway: plain.guestGateway },
        });
        const unregPg = cleanups.add("plain guest", () => sh("ip", ["netns", "del", pg.netns], { allowFail: true }));
        try {
          d.plainRelay = {
            forward: await iperf3({ clientNetns: pg.netns, serverNetns: up.netns, serverAddress: up.address, port: 5201, seconds }),
            reverse: await iperf3({ clientNetns: pg.netns, serverNetns: up.netns, serverAddress: up.address, port: 5201, seconds, reverse: true }),
          };
        } finally {
          await pg.stop();
          unregPg();
        }
        d.plainDirect = {
          forward: await iperf3({ clientNetns: plain.netns, serverNetns: up.netns, serverAddress: up.address, port: 5201, seconds }),
          reverse: await iperf3({ clientNetns: plain.netns, serverNetns: up.netns, serverAddress: up.address, port: 5201, seconds, reverse: true }),
        };
        log(`  plain (relay): ${round(d.plainRelay.forward!.bitsPerSecond / 1e9, 2)} / ${round(d.plainRelay.reverse!.bitsPerSecond / 1e9, 2)} Gbit/s; plain (direct): ${round(d.plainDirect.forward!.bitsPerSecond / 1e9, 2)} / ${round(d.plainDirect.reverse!.bitsPerSecond / 1e9, 2)} Gbit/s`);
        if (d.netslot?.forward && d.plainRelay.forward) d.ratioForward = d.netslot.forward.bitsPerSecond / d.plainRelay.forward.bitsPerSecond;
        if (d.netslot?.reverse && d.plainRelay.reverse) d.ratioReverse = d.netslot.reverse.bitsPerSecond / d.plainRelay.reverse.bitsPerSecond;
      } catch (err) {
        d.error = (d.error ? `${d.error}; ` : "") + errorText(err);
        fail("iperf3 plain path", err);
      } finally {
        plain.remove();
        unregPlain();
      }
    }
  } finally {
    for (const l of listeners) await l.stop().catch(() => undefined);
    for (const g of guests) await g.stop().catch(() => undefined);
    for (const l of held) await client.release(l.id).catch(() => undefined);
    // Every slot back in the pool before the next measurement.
    await waitForRefill(client, n, results, fail, "after the footprint run");
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
