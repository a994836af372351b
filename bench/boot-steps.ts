// Where a slot's build time and kernel memory go as the pool grows (issue 15, goal 4):
// `node dist/bench/boot-steps.js [N=1000] [--no-vtep]`. Builds N slots on one thread on a
// scratch uplink, timing each build step (`buildSlot`'s timings); prints each step's mean
// over the first and the last 10 % of the builds, then the kernel memory per slot
// (/proc/meminfo: Slab, KernelStack, PageTables, Percpu, VmallocUsed) and the slab caches
// that grew most (/proc/slabinfo), and purges.
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { SlotDataplane } from "../src/dataplane/dataplane.js";
import { parseCidr } from "../src/dataplane/topology.js";
import { scratchUplink } from "./lib/util.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const N = Number(process.argv.find((a) => /^\d+$/.test(a)) ?? 1000);
const vtep = !process.argv.includes("--no-vtep");
const prefix = `bs${process.pid % 100000}`;

const KERNEL_FIELDS = ["Slab", "KernelStack", "PageTables", "Percpu", "VmallocUsed"] as const;

function meminfo(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of fs.readFileSync("/proc/meminfo", "latin1").split("\n")) {
    const m = /^(\S+):\s+(\d+)/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

/** Bytes per slab cache: active objects × object size. */
function slabinfo(): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of fs.readFileSync("/proc/slabinfo", "latin1").split("\n").slice(2)) {
    const f = line.split(/\s+/);
    if (f.length > 4) out.set(f[0]!, Number(f[1]) * Number(f[3]));
  }
  return out;
}

const scratch = scratchUplink(prefix);
const dp = SlotDataplane.open({
  prefix,
  linkCidr: parseCidr(scratch.linkCidr),
  uplink: scratch.uplink,
  vtepRemote: vtep ? "198.18.0.1" : undefined,
  vtepPort: 4789,
  bpfObject: path.join(root, "bpf", "nat.o"),
});
try {
  const memBefore = meminfo();
  const slabBefore = slabinfo();
  const perSlot: Array<Record<string, number>> = [];
  const total: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    const timings: Record<string, number> = {};
    const t = performance.now();
    dp.buildSlot(i, timings);
    total.push(performance.now() - t);
    perSlot.push(timings);
  }
  const wall = performance.now() - t0;
  const tenth = Math.max(1, Math.floor(N / 10));
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const first = perSlot.slice(0, tenth);
  const last = perSlot.slice(-tenth);
  process.stdout.write(`${N} slots${vtep ? " with vx0" : ""} on one thread in ${(wall / 1000).toFixed(2)} s; per slot first 10 % ${mean(total.slice(0, tenth)).toFixed(2)} ms, last 10 % ${mean(total.slice(-tenth)).toFixed(2)} ms\n`);
  process.stdout.write("step          first10%  last10%  (ms)\n");
  for (const step of Object.keys(perSlot[0]!)) {
    const f = mean(first.map((s) => s[step] ?? 0));
    const l = mean(last.map((s) => s[step] ?? 0));
    process.stdout.write(`${step.padEnd(12)} ${f.toFixed(3).padStart(8)} ${l.toFixed(3).padStart(8)}\n`);
  }
  // Let RCU callbacks and deferred frees run before reading memory.
  execFileSync("sleep", ["1"]);
  const memAfter = meminfo();
  const slabAfter = slabinfo();
  let kernelKb = 0;
  const parts = KERNEL_FIELDS.map((k) => {
    const d = (memAfter[k] ?? 0) - (memBefore[k] ?? 0);
    kernelKb += d;
    return `${k} ${(d / N).toFixed(1)}`;
  });
  process.stdout.write(`kernel memory per slot: ${(kernelKb / N).toFixed(1)} KiB (${parts.join(", ")}; MemAvailable drop ${(((memBefore.MemAvailable ?? 0) - (memAfter.MemAvailable ?? 0)) / N).toFixed(1)})\n`);
  const grew = [...slabAfter]
    .map(([name, bytes]) => [name, bytes - (slabBefore.get(name) ?? 0)] as const)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 15);
  process.stdout.write(`slab caches, KiB per slot: ${grew.map(([n, b]) => `${n} ${(b / 1024 / N).toFixed(1)}`).join(", ")}\n`);
} finally {
  dp.close();
  const t = performance.now();
  SlotDataplane.purge(prefix);
  process.stdout.write(`purged in ${((performance.now() - t) / 1000).toFixed(2)} s\n`);
  scratch.remove();
}
