// The adversarial hygiene run: N cycles of lease → a tenant changes one thing in the slot
// (or nothing) → release → wait until the slot is reusable. Prints scrub+verify latency
// (release acknowledged → slot free again) and how many cycles ended clean, rebuilt or
// quarantined. Usage (root): node dist/bench/adversarial.js [--cycles 1000] [--pool 8]
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { createUpstream, startDaemon, testPrefix, waitFor } from "../test/support/env.js";

type Tamper = [string, (ns: string) => void];

function inSlot(ns: string, ...cmd: string[]): void {
  spawnSync("ip", ["netns", "exec", ns, ...cmd], { stdio: "ignore" });
}

const TAMPERS: Tamper[] = [
  ["none", () => undefined],
  ["nft rule", (ns) => inSlot(ns, "nft", "add rule inet netslot forward accept")],
  ["nft table", (ns) => inSlot(ns, "nft", "add table ip tenant")],
  ["route", (ns) => inSlot(ns, "ip", "route", "add", "10.99.0.0/16", "dev", "tap0")],
  ["policy rule", (ns) => inSlot(ns, "ip", "rule", "add", "from", "169.254.0.21", "table", "77")],
  ["address", (ns) => inSlot(ns, "ip", "addr", "add", "169.254.0.26/30", "dev", "tap0")],
  ["neighbour", (ns) => inSlot(ns, "ip", "neigh", "add", "169.254.0.21", "lladdr", "02:00:00:00:00:99", "dev", "tap0", "nud", "permanent")],
  ["qdisc", (ns) => inSlot(ns, "tc", "qdisc", "add", "dev", "tap0", "root", "pfifo")],
  ["sysctl", (ns) => inSlot(ns, "sysctl", "-qw", "net.ipv4.conf.tap0.rp_filter=2")],
  ["mtu", (ns) => inSlot(ns, "ip", "link", "set", "tap0", "mtu", "1280")],
  ["mac", (ns) => inSlot(ns, "ip", "link", "set", "tap0", "address", "02:00:00:00:00:42")],
  ["extra link", (ns) => inSlot(ns, "ip", "link", "add", "evil0", "type", "veth", "peer", "name", "evil1")],
  ["tc filter removed", (ns) => inSlot(ns, "tc", "filter", "del", "dev", "eth0", "egress")],
];

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const flag = (name: string, fallback: number) => {
    const i = args.indexOf(name);
    return i >= 0 ? Number(args[i + 1]) : fallback;
  };
  const cycles = flag("--cycles", 1000);
  const poolSize = flag("--pool", 8);
  const prefix = testPrefix();
  const upstream = createUpstream(prefix);
  const daemon = await startDaemon({ prefix, uplink: upstream.uplink, poolSize, vtepRemote: "198.18.0.9" });
  const latencies: number[] = [];
  const byTamper = new Map<string, number>();
  const cleanLatencies: number[] = [];
  try {
    for (let i = 0; i < cycles; i++) {
      await waitFor(async () => (await daemon.client.pool()).free > 0, 10_000);
      const lease = await daemon.client.acquire({ bindToProcess: false, autoRenew: false });
      const [name, tamper] = TAMPERS[i % TAMPERS.length]!;
      tamper(path.basename(lease.slot.netns));
      byTamper.set(name, (byTamper.get(name) ?? 0) + 1);
      const freeBefore = (await daemon.client.pool()).free;
      const t = performance.now();
      await daemon.client.release(lease.id);
      // Reusable: the slot is back in the free count (or quarantined).
      for (;;) {
        const p = await daemon.client.pool();
        if (p.free > freeBefore || p.quarantinedSlots.some((q) => q.index === lease.slot.index)) break;
        await new Promise((r) => setImmediate(r));
      }
      latencies.push(performance.now() - t);
      if (name === "none") cleanLatencies.push(performance.now() - t);
    }
    const metrics = await daemon.client.metrics();
    const outcome = (o: string) => Number(new RegExp(`netslot_scrub_outcomes_total\\{outcome="${o}"\\} (\\d+)`).exec(metrics)?.[1] ?? 0);
    latencies.sort((a, b) => a - b);
    cleanLatencies.sort((a, b) => a - b);
    const pool = await daemon.client.pool();
    console.log(
      JSON.stringify(
        {
          cycles,
          poolSize,
          tampers: Object.fromEntries(byTamper),
          outcomes: { clean: outcome("clean"), rebuilt: outcome("rebuilt"), quarantined: outcome("quarantined") },
          releaseToReusableMs: { p50: percentile(latencies, 50), p90: percentile(latencies, 90), p99: percentile(latencies, 99), max: latencies.at(-1) },
          untouchedReleaseToReusableMs: { p50: percentile(cleanLatencies, 50), p99: percentile(cleanLatencies, 99) },
          quarantinedAtEnd: pool.quarantined,
        },
        null,
        2,
      ),
    );
  } finally {
    await daemon.cleanup();
    upstream.remove();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
