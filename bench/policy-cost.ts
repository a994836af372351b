// Where the time of applying a large egress policy at request time goes (issue 13):
// `node dist/bench/policy-cost.js [N=100]`. One scratch slot on a scratch uplink; allow-
// lists of 1 to 1,000 CIDRs (the last is the profiles benchmark's "large" list). For each:
// what a request does now (setEgressPolicy: one eBPF map entry naming the profile, whose
// CIDRs the shared trie got once, at start, also timed) and what the scrub does (delete the
// entry); beside it, what a request did before (the same CIDRs as nftables set elements in
// one nfnetlink transaction into the slot's set, encoding and commit timed apart, then
// flushed as the scrub did).
import { SLOT_TABLE, parseCidr } from "../src/dataplane/topology.js";
import { egressPolicy, policyCidrs, profileId } from "../src/core/profiles.js";
import { addSetElements, ipv4IntervalElements, NFPROTO_INET } from "../src/kernel/nftsets.js";
import { withNetns } from "../src/kernel/netns.js";
import { nftRun } from "../src/kernel/nft.js";
import { scratchDataplane } from "./lib/util.js";

const N = Number(process.argv[2] ?? 100);
const scratch = scratchDataplane(`pk${process.pid % 100000}`);
const { dp } = scratch;
const BEFORE_SET = "policy_cost_before";
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
  // The interval set the policy's CIDRs went into before (a scratch copy of it).
  withNetns(netns, () => nftRun(`add set inet ${SLOT_TABLE} ${BEFORE_SET} { type ipv4_addr; flags interval; }\n`));
  for (const size of [1, 10, 100, 1000]) {
    const parsed = egressPolicy({ egress: { allow: allowList(size), deny: ["100.64.0.0/28"] } })!;
    const policy = { ...parsed, id: profileId(`cost${size}`) };
    const l0 = performance.now();
    dp.loadEgressPolicies(policyCidrs(policy.id, policy));
    const load = performance.now() - l0;
    const t = { apply: [] as number[], remove: [] as number[], encode: [] as number[], txn: [] as number[], cpu: [] as number[], flush: [] as number[] };
    for (let i = 0; i < N; i++) {
      const a = performance.now();
      dp.setEgressPolicy(0, policy);
      const b = performance.now();
      dp.setEgressPolicy(0, undefined);
      const c = performance.now();
      // Before: the CIDRs as elements of the slot's interval set, one nfnetlink transaction.
      const elements = [{ table: SLOT_TABLE, set: BEFORE_SET, elements: ipv4IntervalElements(policy.allow!.map((x) => parseCidr(x))) }];
      const d = performance.now();
      const c0 = process.cpuUsage();
      withNetns(netns, () => addSetElements(NFPROTO_INET, elements));
      const cpu = process.cpuUsage(c0);
      const e = performance.now();
      withNetns(netns, () => nftRun(`flush set inet ${SLOT_TABLE} ${BEFORE_SET}\n`));
      const f = performance.now();
      t.apply.push(b - a);
      t.remove.push(c - b);
      t.encode.push(d - c);
      t.txn.push(e - d);
      t.cpu.push((cpu.user + cpu.system) / 1000);
      t.flush.push(f - e);
    }
    process.stdout.write(
      `allow ${size} CIDRs + deny 1 (N=${N}), ms:\n` +
        `  now:    request (eBPF entry) ${fmt(t.apply)}; release (delete) ${fmt(t.remove)}; trie written once at start ${load.toFixed(3)}\n` +
        `  before: nft encode ${fmt(t.encode)}; enter netns + transaction ${fmt(t.txn)} (CPU ${fmt(t.cpu)}); scrub flush ${fmt(t.flush)}\n`,
    );
  }
  dp.loadEgressPolicies([]);
} finally {
  scratch.remove();
}
