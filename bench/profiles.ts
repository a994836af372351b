// Network profiles in the benchmark: request latency with each profile kind against no
// profile (same daemon, interleaved cycles), and the data path with a 1,000-CIDR egress
// policy loaded against none (two leases held together, iperf3 through guest stand-ins,
// alternated pairs). Its own small daemon, configured with the profiles through a config file.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { Upstream } from "../test/support/env.js";
import { startGuestStandIn } from "../test/support/guest.js";
import { purgePrefix, startBenchDaemon } from "./lib/daemon.js";
import { iperf3, type IperfResult } from "./lib/net.js";
import { Cleanups, errorText, now, round, summarize, type Summary } from "./lib/util.js";

export interface ProfilesBenchResult {
  poolSize: number;
  cycles: number;
  /** CIDRs in the "mirror" profile's allow-list (also the data-path policy). */
  largeCidrs: number;
  /** What each profile is, by name. */
  kinds: Record<string, string>;
  /** Request → lease and release → acknowledged, per profile ("none": no profile). */
  requestMs: Record<string, Summary>;
  releaseMs: Record<string, Summary>;
  datapath?: ProfilesDatapath;
  error?: string;
}

/** iperf3 guest → upstream on two leases held together, one with the policy, runs alternated. */
export interface ProfilesDatapath {
  seconds: number;
  /** Pairs of runs (one each way round, the order alternating). */
  repetitions: number;
  /** The profile loaded on the policy lease. */
  policy: string;
  none: IperfResult[];
  withPolicy: IperfResult[];
  /** withPolicy / none of each pair. */
  pairRatios: number[];
  /** Median of the pair ratios: the figure judged (S16). */
  ratio?: number;
  error?: string;
}

/** The "mirror" profile: the upstream plus documentation-range /24s, overlapping /16s and a deny inside. */
const LARGE = 1000;

function largeAllowList(upstream: string): string[] {
  const out = [`${upstream}/32`, "100.80.0.0/16", "100.80.7.0/24"];
  for (let i = 0; out.length < LARGE; i++) out.push(`100.${64 + (i >> 8)}.${i & 255}.0/24`);
  return out;
}

export async function benchProfiles(opts: {
  up: Upstream;
  prefix: string;
  quick: boolean;
  cleanups: Cleanups;
  log: (msg: string) => void;
}): Promise<ProfilesBenchResult> {
  const { up, log } = opts;
  const poolSize = 64;
  const cycles = opts.quick ? 150 : 500;
  const profiles = {
    isolated: { egress: { allow: [] } },
    mirror: { egress: { allow: largeAllowList(up.address), deny: ["100.64.0.0/28", "100.80.7.128/25"] } },
    bandwidth: { bandwidth: { egressMbit: 1000, ingressMbit: 1000 } },
    domains: { egress: { allowDomains: ["deb.example.org", "*.pkg.example.org"] } },
  };
  const kinds: Record<string, string> = {
    none: "no profile",
    isolated: "allow nothing",
    mirror: `${LARGE}-CIDR allow-list with overlaps and denies inside`,
    bandwidth: "egress and ingress token buckets",
    domains: "allowDomains (DNS forwarder admissions)",
  };
  const result: ProfilesBenchResult = { poolSize, cycles, largeCidrs: LARGE, kinds, requestMs: {}, releaseMs: {} };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `netslot-bench-profiles-`));
  const unregisterDir = opts.cleanups.add("profiles config", () => fs.rmSync(dir, { recursive: true, force: true }));
  const configFile = path.join(dir, "config.json");
  fs.writeFileSync(configFile, JSON.stringify({ profiles }));
  const daemon = await startBenchDaemon({ prefix: opts.prefix, poolSize, uplink: up.uplink, extraArgs: ["--config", configFile, "--dns-upstream", up.address] });
  const unregister = opts.cleanups.add(`daemon ${daemon.prefix}`, () => {
    void daemon.kill9();
    purgePrefix(daemon.prefix, daemon.stateDir);
  });
  const client = daemon.client;
  const refill = async () => {
    const deadline = now() + 30_000;
    while ((await client.pool()).free < poolSize && now() < deadline) await new Promise((r) => setTimeout(r, 10));
  };
  try {
    // Interleaved: every profile sees the same machine load.
    const names = ["none", ...Object.keys(profiles)];
    const req = new Map(names.map((n) => [n, [] as number[]]));
    const rel = new Map(names.map((n) => [n, [] as number[]]));
    log(`profiles: ${cycles} request/release cycles each for ${names.join(", ")} (pool ${poolSize}; mirror = ${LARGE} CIDRs)`);
    for (let warm = 0; warm < 20; warm++) await client.release((await client.acquire({ bindToProcess: false, autoRenew: false })).id);
    for (let i = 0; i < cycles; i++) {
      if ((await client.pool()).free < names.length + 2) await refill();
      for (const name of names) {
        const a = now();
        const lease = await client.acquire({ ...(name === "none" ? {} : { profile: name }), bindToProcess: false, autoRenew: false });
        const b = now();
        await client.release(lease.id);
        rel.get(name)!.push(now() - b);
        req.get(name)!.push(b - a);
      }
    }
    for (const name of names) {
      result.requestMs[name] = summarize(req.get(name)!);
      result.releaseMs[name] = summarize(rel.get(name)!);
      const ratio = result.requestMs[name].p99 / result.requestMs["none"]!.p99;
      log(`  ${name.padEnd(9)} request p50 ${round(result.requestMs[name].p50)} p99 ${round(result.requestMs[name].p99)} ms (${round(ratio, 2)}× none); release p99 ${round(result.releaseMs[name].p99)} ms`);
    }

    const seconds = opts.quick ? 3 : 10;
    const repetitions = opts.quick ? 3 : 6;
    const d: ProfilesDatapath = { seconds, repetitions, policy: "mirror", none: [], withPolicy: [], pairRatios: [] };
    result.datapath = d;
    log(`profiles: data path, iperf3 ${seconds} s guest → upstream, ${repetitions} pairs alternated: no policy vs mirror (${LARGE} CIDRs)`);
    const held: Array<{ lease: Awaited<ReturnType<typeof client.acquire>>; guest: Awaited<ReturnType<typeof startGuestStandIn>> }> = [];
    try {
      await refill();
      // Two leases at once, so each pair sees the same machine; the order alternates to cancel drift.
      for (const [i, profile] of [undefined, "mirror"].entries()) {
        const lease = await client.acquire({ ...(profile ? { profile } : {}), bindToProcess: false, autoRenew: false });
        const guest = await startGuestStandIn({ slotNetnsPath: lease.slot.netns, name: `${opts.prefix}g${i}`, mtu: lease.guest.mtu });
        held.push({ lease, guest });
      }
      const run = (which: number) => iperf3({ clientNetns: held[which]!.guest.netns, serverNetns: up.netns, serverAddress: up.address, port: 5202, seconds });
      for (let r = 0; r < repetitions; r++) {
        const [first, second] = r % 2 === 0 ? [0, 1] : [1, 0];
        const a = await run(first);
        const b = await run(second);
        const none = first === 0 ? a : b;
        const withPolicy = first === 0 ? b : a;
        d.none.push(none);
        d.withPolicy.push(withPolicy);
        d.pairRatios.push(withPolicy.bitsPerSecond / none.bitsPerSecond);
      }
      const sorted = [...d.pairRatios].sort((x, y) => x - y);
      d.ratio = sorted.length % 2 ? sorted[sorted.length >> 1]! : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2;
      const gbit = (xs: IperfResult[]) => xs.map((x) => round(x.bitsPerSecond / 1e9, 2)).join(", ");
      log(`  no policy ${gbit(d.none)} Gbit/s; mirror ${gbit(d.withPolicy)} Gbit/s; pair ratios ${d.pairRatios.map((x) => `${round(x * 100, 1)} %`).join(", ")}; median ${round(d.ratio * 100, 1)} %`);
    } catch (err) {
      d.error = errorText(err);
      log(`  data path failed: ${d.error.split("\n")[0]}`);
    } finally {
      for (const h of held) {
        await h.guest.stop();
        await client.release(h.lease.id);
      }
    }
  } catch (err) {
    result.error = errorText(err);
  } finally {
    await daemon.stop();
    purgePrefix(daemon.prefix, daemon.stateDir);
    unregister();
    fs.rmSync(dir, { recursive: true, force: true });
    unregisterDir();
  }
  return result;
}
