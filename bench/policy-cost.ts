// Where the time of applying a large egress policy at request time goes (issue 13):
// `node dist/bench/policy-cost.js [N=100]`. One scratch slot on a scratch uplink; the
// "large" allow-list of the profiles benchmark (1,000 CIDRs) applied and scrubbed N times,
// each phase timed on its own: encoding in JS, the nfnetlink transaction (kernel insert +
// commit), and the scrub's flush; and the same for smaller lists, to see how it scales.
import { execFileSync } from "node:child_process";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { SlotDataplane } from "../src/dataplane/dataplane.js";
import { parseCidr } from "../src/dataplane/topology.js";
import { egressPolicy } from "../src/core/profiles.js";
import { egressPolicyElements, clearEgressPolicyScript } from "../src/dataplane/ruleset.js";
import { addSetElements, NFPROTO_INET } from "../src/kernel/nftsets.js";
import { withNetns } from "../src/kernel/netns.js";
import { nftRun } from "../src/kernel/nft.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const N = Number(process.argv[2] ?? 100);
const prefix = `pk${process.pid % 100000}`;
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
const fmt = (xs: number[]) => `median ${pct(xs, 0.5).toFixed(3)} p99 ${pct(xs, 0.99).toFixed(3)}`;

function allowList(n: number): string[] {
  const out = ["192.0.2.1/32"];
  for (let i = 0; out.length < n; i++) out.push(`100.${64 + (i >> 8)}.${i & 255}.0/24`);
  return out;
}

try {
  dp.buildSlot(0);
  const netns = dp.addressing(0).netnsPath;
  for (const size of [1, 10, 100, 1000]) {
    const policy = egressPolicy({ egress: { allow: allowList(size), deny: ["100.64.0.0/28"] } })!;
    const t = { encode: [] as number[], txn: [] as number[], whole: [] as number[], flush: [] as number[], cpu: [] as number[] };
    for (let i = 0; i < N; i++) {
      const a = performance.now();
      const elements = egressPolicyElements(policy);
      const b = performance.now();
      const c0 = process.cpuUsage();
      withNetns(netns, () => addSetElements(NFPROTO_INET, elements));
      const c = process.cpuUsage(c0);
      const d = performance.now();
      withNetns(netns, () => nftRun(clearEgressPolicyScript()));
      const e = performance.now();
      dp.setEgressPolicy(0, policy);
      const f = performance.now();
      withNetns(netns, () => nftRun(clearEgressPolicyScript()));
      t.encode.push(b - a);
      t.txn.push(d - b);
      t.cpu.push((c.user + c.system) / 1000);
      t.flush.push(e - d);
      t.whole.push(f - e);
    }
    process.stdout.write(
      `allow ${size} CIDRs + deny 1 (N=${N}), ms: setEgressPolicy ${fmt(t.whole)}; encode ${fmt(t.encode)}; ` +
        `enter netns + transaction ${fmt(t.txn)} (CPU ${fmt(t.cpu)}); scrub flush ${fmt(t.flush)}\n`,
    );
  }
} finally {
  dp.close();
  SlotDataplane.purge(prefix);
  execFileSync("ip", ["link", "del", uplink]);
}
