// Network profiles in the benchmark: request latency with each profile against no profile
// (same daemon, interleaved cycles), and the data path with a large egress policy loaded
// against none (same slot kind, iperf3 through a guest stand-in). Its own small daemon,
// configured with the profiles through a config file.
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
  /** CIDRs in the "large" profile's allow-list (the data-path policy). */
  largeCidrs: number;
  /** Request → lease and release → acknowledged, per profile ("none": no profile). */
  requestMs: Record<string, Summary>;
  releaseMs: Record<string, Summary>;
  datapath?: { seconds: number; none?: IperfResult; large?: IperfResult; ratio?: number; error?: string };
  error?: string;
}

/** The "large" profile: the upstream plus this many documentation-range /24s and /32s. */
const LARGE = 1000;

function largeAllowList(upstream: string): string[] {
  const out = [`${upstream}/32`];
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
    mirror: { egress: { allow: [`${up.address}/32`] } },
    large: { egress: { allow: largeAllowList(up.address), deny: ["100.64.0.0/28"] } },
  };
  const result: ProfilesBenchResult = { poolSize, cycles, largeCidrs: LARGE, requestMs: {}, releaseMs: {} };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `netslot-bench-profiles-`));
  const unregisterDir = opts.cleanups.add("profiles config", () => fs.rmSync(dir, { recursive: true, force: true }));
  const configFile = path.join(dir, "config.json");
  fs.writeFileSync(configFile, JSON.stringify({ profiles }));
  const daemon = await startBenchDaemon({ prefix: opts.prefix, poolSize, uplink: up.uplink, extraArgs: ["--config", configFile] });
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
    log(`profiles: ${cycles} request/release cycles each for ${names.join(", ")} (pool ${poolSize}; large = ${LARGE} CIDRs)`);
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
      log(`  ${name.padEnd(8)} request p50 ${round(result.requestMs[name].p50)} p99 ${round(result.requestMs[name].p99)} ms; release p99 ${round(result.releaseMs[name].p99)} ms`);
    }

    const seconds = opts.quick ? 3 : 10;
    const d: NonNullable<ProfilesBenchResult["datapath"]> = { seconds };
    result.datapath = d;
    log(`profiles: data path, iperf3 ${seconds} s guest → upstream, no policy vs the large policy`);
    try {
      await refill();
      for (const which of ["none", "large"] as const) {
        const lease = await client.acquire({ ...(which === "large" ? { profile: "large" } : {}), bindToProcess: false, autoRenew: false });
        const guest = await startGuestStandIn({ slotNetnsPath: lease.slot.netns, name: `${opts.prefix}g`, mtu: lease.guest.mtu });
        try {
          d[which] = await iperf3({ clientNetns: guest.netns, serverNetns: up.netns, serverAddress: up.address, port: 5202, seconds });
        } finally {
          await guest.stop();
          await client.release(lease.id);
        }
      }
      d.ratio = d.large!.bitsPerSecond / d.none!.bitsPerSecond;
      log(`  no policy ${round(d.none!.bitsPerSecond / 1e9, 2)} Gbit/s, large policy ${round(d.large!.bitsPerSecond / 1e9, 2)} Gbit/s (${round(d.ratio * 100, 1)} %)`);
    } catch (err) {
      d.error = errorText(err);
      log(`  data path failed: ${d.error.split("\n")[0]}`);
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
