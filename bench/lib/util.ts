// Small helpers of the benchmark suite: timing, statistics, host facts. Running commands,
// waiting and daemons come from test/support/env.ts, shared with the tests.
// Benchmark support, not the request path: spawning ip/nft/iperf3 here is fine.
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { SlotDataplane } from "../../src/dataplane/dataplane.js";
import { parseCidr } from "../../src/dataplane/topology.js";
import { REPO_ROOT, sleep } from "../../test/support/env.js";

/** Milliseconds since an arbitrary origin, sub-millisecond resolution. */
export const now = (): number => performance.now();

/** A prefix no other run uses: "b" + 5 random [a-z0-9] (netslot allows [a-z][a-z0-9]{0,7}). */
export function benchPrefix(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = randomBytes(5);
  let out = "b";
  for (const b of bytes) out += alphabet.charAt(b % alphabet.length);
  return out;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command asynchronously to completion (never rejects on a non-zero exit). */
export function runAsync(cmd: string, args: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = opts.timeoutMs ? setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs) : undefined;
    child.on("error", (e) => {
      if (timer) clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code) => {
      if (timer) clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
    child.stdin.on("error", () => {});
    child.stdin.end(opts.input ?? "");
  });
}

export interface Summary {
  n: number;
  /** All figures in milliseconds. */
  mean: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export function summarize(values: number[]): Summary {
  const s = [...values].sort((a, b) => a - b);
  const sum = s.reduce((a, b) => a + b, 0);
  return {
    n: s.length,
    mean: s.length ? sum / s.length : NaN,
    min: s[0] ?? NaN,
    p50: percentile(s, 50),
    p90: percentile(s, 90),
    p99: percentile(s, 99),
    max: s[s.length - 1] ?? NaN,
  };
}

export function round(x: number, digits = 3): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** /proc/meminfo in kB. */
export function meminfo(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of fs.readFileSync("/proc/meminfo", "utf8").split("\n")) {
    const m = /^(\w+(?:\(\w+\))?):\s+(\d+)/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

/** VmRSS of a process in kB, or undefined when it is gone. */
export function rssKb(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** /proc/meminfo fields where a slot's kernel memory shows (kB). */
export const KERNEL_MEMINFO_FIELDS = ["MemAvailable", "MemFree", "Slab", "SReclaimable", "SUnreclaim", "KernelStack", "PageTables", "Percpu", "VmallocUsed", "Shmem", "Cached"];

/** Open files of a process and its RLIMIT_NOFILE (soft and hard), or undefined when it is gone. */
export function openFiles(pid: number): { open: number; softLimit: number; hardLimit: number } | undefined {
  try {
    const open = fs.readdirSync(`/proc/${pid}/fd`).length;
    const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(fs.readFileSync(`/proc/${pid}/limits`, "utf8"));
    const lim = (x: string | undefined) => (x === undefined || x === "unlimited" ? Infinity : Number(x));
    return { open, softLimit: lim(m?.[1]), hardLimit: lim(m?.[2]) };
  } catch {
    return undefined;
  }
}

/** VmHWM (peak RSS) of a process in kB. */
export function peakRssKb(pid: number): number | undefined {
  try {
    const m = /VmHWM:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

export interface MachineInfo {
  hostname: string;
  cpuModel: string;
  cores: number;
  memoryMiB: number;
  kernel: string;
  node: string;
  os: string;
  /** Absent in results written before it was recorded. */
  loadAverageAtStart?: number[];
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  let osName = os.type();
  try {
    const m = /^PRETTY_NAME="?([^"\n]+)"?/m.exec(fs.readFileSync("/etc/os-release", "utf8"));
    if (m) osName = m[1]!;
  } catch {
    // keep os.type()
  }
  return {
    hostname: os.hostname(),
    cpuModel: cpus[0]?.model ?? "unknown",
    cores: cpus.length,
    memoryMiB: Math.round(os.totalmem() / 1024 / 1024),
    kernel: os.release(),
    node: process.version,
    os: osName,
    loadAverageAtStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

/**
 * Synchronous cleanup actions, run in reverse order of registration: at the end of a run
 * and from SIGINT/SIGTERM (where nothing asynchronous would get to run).
 */
export class Cleanups {
  private readonly actions: Array<{ label: string; fn: () => void }> = [];

  add(label: string, fn: () => void): () => void {
    const entry = { label, fn };
    this.actions.push(entry);
    return () => {
      const i = this.actions.indexOf(entry);
      if (i >= 0) this.actions.splice(i, 1);
    };
  }

  runAll(log: (msg: string) => void = () => {}): void {
    while (this.actions.length > 0) {
      const { label, fn } = this.actions.pop()!;
      try {
        fn();
      } catch (err) {
        log(`cleanup "${label}" failed: ${(err as Error).message}`);
      }
    }
  }
}

/** Busy fraction of all CPUs over `ms` (from /proc/stat). */
export async function cpuBusy(ms: number): Promise<number> {
  const read = () => {
    const f = fs.readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    const idle = (f[3] ?? 0) + (f[4] ?? 0);
    const total = f.reduce((a, b) => a + b, 0);
    return { idle, total };
  };
  const a = read();
  await sleep(ms);
  const b = read();
  const total = b.total - a.total;
  return total > 0 ? 1 - (b.idle - a.idle) / total : 0;
}

/**
 * Waits until the machine is quiet (CPU busy below `threshold` over one second), at most
 * `maxMs`: deleting namespaces goes on in kernel workers after `ip netns del` returns,
 * and would slow the next measurement. Returns the ms waited and the last busy fraction.
 */
export async function settle(threshold = 0.15, maxMs = 60_000): Promise<{ waitedMs: number; busy: number }> {
  const start = now();
  let busy = 1;
  while (now() - start < maxMs) {
    busy = await cpuBusy(1000);
    if (busy < threshold) break;
  }
  return { waitedMs: now() - start, busy };
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * A scratch uplink for the small cases (boot-steps, and scratchDataplane): a veth named
 * `${prefix}u` (its peer `${prefix}v` left down) and a 10.x.0.0/16 no route on the host
 * uses. `remove()` deletes the pair.
 */
export function scratchUplink(prefix: string): { uplink: string; linkCidr: string; remove(): void } {
  const uplink = `${prefix}u`;
  const routes = execFileSync("ip", ["-4", "route", "show", "table", "all"], { encoding: "utf8" });
  const second = [...Array(150).keys()].map((i) => 100 + i).find((s) => !routes.includes(`10.${s}.`));
  if (second === undefined) throw new Error("no free 10.x.0.0/16");
  execFileSync("ip", ["link", "add", uplink, "type", "veth", "peer", "name", `${prefix}v`]);
  execFileSync("ip", ["link", "set", uplink, "up"]);
  return { uplink, linkCidr: `10.${second}.0.0/16`, remove: () => execFileSync("ip", ["link", "del", uplink]) };
}

/**
 * A dataplane on a scratch uplink for the small cases that build slots themselves
 * (policy-cost, proof-cpu, tap-reset): no slot built yet. `remove()` closes it, purges
 * the prefix and deletes the uplink.
 */
export function scratchDataplane(prefix: string, opts: { vtepRemote?: string } = {}): { dp: SlotDataplane; remove(): void } {
  const scratch = scratchUplink(prefix);
  let dp: SlotDataplane;
  try {
    dp = SlotDataplane.open({
      prefix,
      linkCidr: parseCidr(scratch.linkCidr),
      uplink: scratch.uplink,
      vtepRemote: opts.vtepRemote,
      vtepPort: 4789,
      bpfObject: path.join(REPO_ROOT, "bpf", "nat.o"),
    });
  } catch (err) {
    SlotDataplane.purge(prefix);
    scratch.remove();
    throw err;
  }
  return {
    dp,
    remove() {
      try {
        dp.close();
      } finally {
        SlotDataplane.purge(prefix);
        scratch.remove();
      }
    },
  };
}
