// Starts netslot daemons for the benchmarks (through test/support's spawnDaemon): a fresh
// prefix and state dir each, progress lines kept (with the time they arrived), a
// fine-grained boot timeline sampled from /run/netns, and a purge afterwards that also
// reports anything purge left behind.
import * as fs from "node:fs";
import * as path from "node:path";
import type { NetslotClient } from "../../src/sdk/index.js";
import { CLI, sh, sleep, spawnDaemon, waitFor, type LogLine } from "../../test/support/env.js";
import { errorText, now } from "./util.js";

export interface DaemonSpec {
  prefix: string;
  poolSize: number;
  uplink: string;
  vtepRemote?: string;
  linkCidr?: string;
  /** Reuse a state dir (restart). */
  stateDir?: string;
  /** Sample /run/netns every few ms during boot for per-slot build times. */
  sampleNetns?: boolean;
  readyTimeoutMs?: number;
  /** More daemon flags (e.g. --config). */
  extraArgs?: string[];
}

export type { LogLine };

export interface BootTimeline {
  /** [ms since spawn, slot namespaces of this prefix seen] */
  samples: Array<[number, number]>;
  intervalMs: number;
}

export interface StartResult {
  /** Spawn until GET /v1/health answered at all. */
  apiUpMs: number | undefined;
  /** Spawn until GET /v1/health said "ready". */
  wallReadyMs: number;
  /** From the daemon's own line "ready: B/T slots (A adopted, X built) in S s". */
  daemonReadySeconds: number | undefined;
  built: number | undefined;
  adopted: number | undefined;
  total: number | undefined;
  readyLine: string | undefined;
  progressLines: LogLine[];
  timeline: BootTimeline | undefined;
}

export interface BenchDaemon {
  readonly spec: DaemonSpec;
  readonly prefix: string;
  readonly stateDir: string;
  readonly socket: string;
  readonly linkCidr: string;
  readonly pid: number;
  readonly client: NetslotClient;
  readonly start: StartResult;
  readonly lines: LogLine[];
  output(): string;
  running(): boolean;
  /** SIGTERM and wait for exit; returns ms until exit. */
  stop(): Promise<number>;
  /** SIGKILL and wait for exit. */
  kill9(): Promise<void>;
}

const READY_RE = /ready: (\d+)\/(\d+) slots \((\d+) adopted, (\d+) built\) in ([\d.]+)s/;
const PROGRESS_RE = /pool (\d+)\/(\d+) \((\d+) adopted\)/;

function slotNamespaceCount(prefix: string): number {
  let n = 0;
  const re = new RegExp(`^${prefix}-\\d+$`);
  try {
    for (const name of fs.readdirSync("/run/netns")) if (re.test(name)) n++;
  } catch {
    // no /run/netns yet
  }
  return n;
}

/**
 * The boot timeline: inotify on /run/netns (a slot's namespace file appears when its
 * build starts), falling back to polling. It reads a directory; the daemon is not involved.
 */
function sampleNetns(prefix: string, t0: number): { samples: Array<[number, number]>; intervalMs: number; stop(): Promise<void> } {
  const samples: Array<[number, number]> = [];
  let intervalMs = 0;
  // An object, not a let: stop() flips it while the polling loop below runs.
  const sampling = { on: true };
  let watcher: fs.FSWatcher | undefined;
  let sampler: Promise<void> = Promise.resolve();
  const seen = new Set<string>();
  const re = new RegExp(`^${prefix}-\\d+$`);
  try {
    watcher = fs.watch("/run/netns", (_event, filename) => {
      if (!sampling.on || typeof filename !== "string" || !re.test(filename) || seen.has(filename)) return;
      seen.add(filename);
      samples.push([now() - t0, seen.size]);
    });
  } catch {
    intervalMs = 10;
    sampler = (async () => {
      let last = -1;
      while (sampling.on) {
        const c = slotNamespaceCount(prefix);
        if (c !== last) {
          samples.push([now() - t0, c]);
          last = c;
        }
        await sleep(intervalMs);
      }
    })();
  }
  return {
    samples,
    get intervalMs() {
      return intervalMs;
    },
    async stop() {
      sampling.on = false;
      watcher?.close();
      await sampler;
    },
  };
}

/** Starts a daemon (test/support's spawnDaemon) and waits until it is ready; rejects (after killing it) if it is not. */
export async function startBenchDaemon(spec: DaemonSpec): Promise<BenchDaemon> {
  const daemon = spawnDaemon({
    prefix: spec.prefix,
    poolSize: spec.poolSize,
    uplink: spec.uplink,
    progress: true,
    clientTimeoutMs: 10_000,
    ...(spec.vtepRemote !== undefined ? { vtepRemote: spec.vtepRemote } : {}),
    ...(spec.linkCidr !== undefined ? { linkCidr: spec.linkCidr } : {}),
    ...(spec.stateDir !== undefined ? { stateDir: spec.stateDir } : {}),
    ...(spec.extraArgs !== undefined ? { extraArgs: spec.extraArgs } : {}),
  });
  const { client, lines, spawnedAt: t0 } = daemon;
  const sampler = spec.sampleNetns === true ? sampleNetns(spec.prefix, t0) : undefined;

  let apiUpMs: number | undefined;
  let wallReadyMs: number | undefined;
  try {
    await waitFor(
      async () => {
        if (!fs.existsSync(daemon.socket)) return false;
        const h = await client.health();
        apiUpMs ??= now() - t0;
        if (h.status !== "ready") return false;
        wallReadyMs = now() - t0;
        return true;
      },
      spec.readyTimeoutMs ?? 600_000,
      { intervalMs: 10, abort: () => !daemon.running() },
    );
    // The ready line is written right after the pool turns ready; give it a moment.
    for (let i = 0; i < 100 && !lines.some((l) => READY_RE.test(l.text)); i++) await sleep(10);
  } catch (err) {
    await sampler?.stop();
    await daemon.kill9();
    const exit = daemon.process.exitCode ?? daemon.process.signalCode;
    throw new Error(`daemon ${spec.prefix} (N=${spec.poolSize}) did not become ready (exit ${exit}): ${errorText(err)}\n${daemon.output().slice(-4000)}`, { cause: err });
  }
  await sampler?.stop();

  const readyLine = lines.find((l) => READY_RE.test(l.text));
  const m = readyLine ? READY_RE.exec(readyLine.text) : null;
  const start: StartResult = {
    apiUpMs,
    wallReadyMs: wallReadyMs!,
    daemonReadySeconds: m ? Number(m[5]) : undefined,
    built: m ? Number(m[1]) : undefined,
    total: m ? Number(m[2]) : undefined,
    adopted: m ? Number(m[3]) : undefined,
    readyLine: readyLine?.text,
    progressLines: lines.filter((l) => PROGRESS_RE.test(l.text)),
    timeline: sampler ? { samples: sampler.samples, intervalMs: sampler.intervalMs } : undefined,
  };

  return {
    spec: { ...spec, stateDir: daemon.stateDir, linkCidr: daemon.linkCidr },
    prefix: spec.prefix,
    stateDir: daemon.stateDir,
    socket: daemon.socket,
    linkCidr: daemon.linkCidr,
    pid: daemon.process.pid ?? -1,
    client,
    start,
    lines,
    output: () => daemon.output(),
    running: () => daemon.running(),
    async stop() {
      const s = now();
      await daemon.stop({ killAfterMs: 30_000 });
      return now() - s;
    },
    kill9: () => daemon.kill9(),
  };
}

export interface PurgeResult {
  ms: number;
  ok: boolean;
  output: string;
  /** Objects of the prefix still present after `netslot purge` (and then removed by us). */
  leftovers: string[];
}

/**
 * `netslot purge --prefix P --state-dir DIR`, then a sweep of anything named after P that
 * purge left (namespaces P-n, root links P-n, table inet P, pinned eBPF dir), so a run
 * never leaves objects behind even while purge is incomplete. Only names of our prefix.
 */
export function purgePrefix(prefix: string, stateDir: string): PurgeResult {
  if (!/^b[a-z0-9]{5}$/.test(prefix)) throw new Error(`refusing to purge a prefix the bench did not make: ${prefix}`);
  const s = now();
  let ok = true;
  let output: string;
  try {
    output = sh(process.execPath, [CLI, "purge", "--prefix", prefix, "--state-dir", stateDir], { timeoutMs: 600_000 });
  } catch (err) {
    ok = false;
    output = errorText(err);
  }
  const ms = now() - s;
  const leftovers: string[] = [];
  const slotRe = new RegExp(`^${prefix}-\\d+$`);
  try {
    for (const name of fs.readdirSync("/run/netns")) {
      if (slotRe.test(name)) {
        leftovers.push(`netns ${name}`);
        sh("ip", ["netns", "del", name], { allowFail: true });
      }
    }
  } catch {
    // no /run/netns
  }
  try {
    const links = JSON.parse(sh("ip", ["-j", "link", "show"])) as Array<{ ifname: string }>;
    for (const l of links) {
      if (slotRe.test(l.ifname)) {
        leftovers.push(`link ${l.ifname}`);
        sh("ip", ["link", "del", l.ifname], { allowFail: true });
      }
    }
  } catch {
    // ignore
  }
  if (sh("nft", ["list", "table", "inet", prefix], { allowFail: true }).trim() !== "") {
    leftovers.push(`table inet ${prefix}`);
    sh("nft", ["delete", "table", "inet", prefix], { allowFail: true });
  }
  const pin = `/sys/fs/bpf/netslot/${prefix}`;
  for (const entry of fs.existsSync("/sys/fs/bpf/netslot") ? fs.readdirSync("/sys/fs/bpf/netslot") : []) {
    if (entry === prefix || entry.startsWith(`${prefix}.`)) {
      leftovers.push(`bpf ${pin}`);
      fs.rmSync(`/sys/fs/bpf/netslot/${entry}`, { recursive: true, force: true });
    }
  }
  fs.rmSync(path.dirname(stateDir), { recursive: true, force: true });
  return { ms, ok, output: output.trim(), leftovers };
}

/**
 * Per-slot build time over the first and the last 10% of a boot, from the namespace
 * timeline: slot k's namespace appears when slot k starts, so the time between the
 * (k)th and (k+m)th appearance over m is the per-slot time of those m slots.
 */
export function buildRateFromTimeline(timeline: BootTimeline, n: number): {
  firstTenthMsPerSlot: number;
  lastTenthMsPerSlot: number;
  ratio: number;
  resolutionMs: number;
} | undefined {
  const s = timeline.samples;
  if (s.length < 3 || n < 20) return undefined;
  /** First time the count reached at least c. */
  const at = (c: number): number | undefined => s.find(([, count]) => count >= c)?.[0];
  const tenth = Math.max(2, Math.round(n / 10));
  const t0 = at(1);
  const t1 = at(1 + tenth);
  const t2 = at(n - tenth);
  const t3 = at(n);
  if (t0 === undefined || t1 === undefined || t2 === undefined || t3 === undefined) return undefined;
  const first = (t1 - t0) / tenth;
  const last = (t3 - t2) / tenth;
  return { firstTenthMsPerSlot: first, lastTenthMsPerSlot: last, ratio: last / first, resolutionMs: timeline.intervalMs };
}

/** The same ratio from the daemon's once-a-second progress lines (coarse; a cross-check). */
export function buildRateFromProgress(lines: LogLine[], n: number): { firstTenthMsPerSlot: number; lastTenthMsPerSlot: number; ratio: number } | undefined {
  const pts = lines
    .map((l) => {
      const m = PROGRESS_RE.exec(l.text);
      return m ? ([l.t, Number(m[1])] as [number, number]) : undefined;
    })
    .filter((p): p is [number, number] => p !== undefined);
  if (pts.length < 4) return undefined;
  // Linear interpolation of the time the built count crossed c.
  const timeAt = (c: number): number | undefined => {
    for (let i = 1; i < pts.length; i++) {
      const [ta, ca] = pts[i - 1]!;
      const [tb, cb] = pts[i]!;
      if (cb >= c && ca <= c) return cb === ca ? tb : ta + ((c - ca) / (cb - ca)) * (tb - ta);
    }
    return undefined;
  };
  const tenth = n / 10;
  const a = timeAt(0);
  const b = timeAt(tenth);
  const c = timeAt(n - tenth);
  const d = timeAt(n);
  if (a === undefined || b === undefined || c === undefined || d === undefined) return undefined;
  const first = (b - a) / tenth;
  const last = (d - c) / tenth;
  return { firstTenthMsPerSlot: first, lastTenthMsPerSlot: last, ratio: last / first };
}
