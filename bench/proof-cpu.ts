// What it costs to prove an untouched released slot clean (issue 15, goal 1: ≤ 1 ms CPU
// median): `node dist/bench/proof-cpu.js [N]`. One scratch slot on a scratch uplink,
// fingerprinted N times with nothing changed in between; prints the process CPU (user +
// system) per proof, median and p99, and the median wall time of each phase.
import { execFileSync } from "node:child_process";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { SlotDataplane } from "../src/dataplane/dataplane.js";
import { diffFingerprints } from "../src/dataplane/fingerprint.js";
import { parseCidr } from "../src/dataplane/topology.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const N = Number(process.argv[2] ?? 200);
const prefix = `pc${process.pid % 100000}`;
const uplink = `${prefix}u`;
const routes = execFileSync("ip", ["-4", "route", "show", "table", "all"], { encoding: "utf8" });
const second = [...Array(150).keys()].map((i) => 100 + i).find((s) => !routes.includes(`10.${s}.`));
if (second === undefined) throw new Error("no free 10.x.0.0/16");
execFileSync("ip", ["link", "add", uplink, "type", "veth", "peer", "name", `${prefix}v`]);
execFileSync("ip", ["link", "set", uplink, "up"]);
const dp = SlotDataplane.open({
  prefix,
  linkCidr: parseCidr(`10.${second}.0.0/16`),
  uplink,
  vtepRemote: undefined,
  vtepPort: 4789,
  bpfObject: path.join(root, "bpf", "nat.o"),
});
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
try {
  dp.buildSlot(0);
  const golden = dp.fingerprint(0);
  const cpu: number[] = [];
  const phases = new Map<string, number[]>();
  for (let i = 0; i < N; i++) {
    const timings: Record<string, number> = {};
    const c0 = process.cpuUsage();
    const fp = dp.fingerprint(0, timings);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1000);
    for (const [k, v] of Object.entries(timings)) phases.set(k, [...(phases.get(k) ?? []), v]);
    const d = diffFingerprints(golden, fp);
    if (d.length > 0) throw new Error(`untouched slot differs: ${d.join("; ")}`);
  }
  const phaseText = (cpuPhases: boolean) =>
    [...phases]
      .filter(([k]) => k.startsWith("cpu ") === cpuPhases)
      .map(([k, v]) => `${k.replace(/^cpu /, "")} ${pct(v, 0.5).toFixed(2)}`)
      .join(", ");
  process.stdout.write(`proof of an untouched slot: CPU median ${pct(cpu, 0.5).toFixed(2)} ms, p99 ${pct(cpu, 0.99).toFixed(2)} ms (N=${N})\n`);
  process.stdout.write(`  phases, median CPU ms: ${phaseText(true)}\n  phases, median wall ms: ${phaseText(false)}\n`);
} finally {
  dp.close();
  SlotDataplane.purge(prefix);
  execFileSync("ip", ["link", "del", uplink]);
}
