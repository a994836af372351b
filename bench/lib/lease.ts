// The lease path over the API, from the SDK: request → lease, release → acknowledged,
// release → slot reusable; at 1, 8 and 64 concurrent clients; sustained cycles per second.
import { NetslotApiError, NetslotClient } from "../../src/sdk/index.js";
import type { TenantNetwork } from "../../src/core/types.js";
import { histogramDelta, histogramSummary, parseHistogram } from "./prom.js";
import { sleep } from "../../test/support/env.js";
import { errorText, now, round, summarize, type Summary } from "./util.js";

export interface ConcurrencyResult {
  clients: number;
  cyclesPerClient: number;
  /** The level hit maxSecondsPerLevel before all cycles ran. */
  cutShort: boolean;
  /** Free slots when the level started. */
  freeAtStart: number;
  /** Client-side: request sent → lease returned. */
  requestMs: Summary;
  /** Client-side: release sent → acknowledged. */
  releaseAckMs: Summary;
  /** Daemon-side histograms for the same cycles (bucketed). */
  server: {
    acquire: ReturnType<typeof histogramSummary> | undefined;
    release: ReturnType<typeof histogramSummary> | undefined;
    releaseToReusable: ReturnType<typeof histogramSummary> | undefined;
    scrub: ReturnType<typeof histogramSummary> | undefined;
  };
  errors: number;
  firstError?: string;
  wallMs: number;
  cyclesPerSecond: number;
}

export interface ReusableResult {
  /** Client-side: release sent → GET /v1/pool shows the free count back (poll resolution ≈ one API call). */
  releaseToReusableMs: Summary;
  cycles: number;
}

export interface SustainedResult {
  clients: number;
  seconds: number;
  cycles: number;
  cyclesPerSecond: number;
  errors: number;
  firstError?: string;
  requestMs: Summary;
  releaseAckMs: Summary;
}

export interface LeasePathResult {
  poolSize: number;
  tenant: TenantNetwork | null;
  concurrency: ConcurrencyResult[];
  reusable: ReusableResult | undefined;
  sustained: SustainedResult | undefined;
  skipped?: string;
  /** Phases that failed; the others' figures stand. */
  errors?: string[];
}

export interface LeasePathOptions {
  socket: string;
  poolSize: number;
  /** cycles per client for each concurrency level */
  plan: Array<{ clients: number; cycles: number }>;
  /** Each level (and the reusable loop) stops early after this long: a slow daemon cannot stall the run. */
  maxSecondsPerLevel: number;
  reusableCycles: number;
  sustainedSeconds: number;
  sustainedClients: number;
  warmupCycles: number;
  tenant?: TenantNetwork;
  log: (msg: string) => void;
}

async function metricsText(client: NetslotClient): Promise<string> {
  try {
    return await client.metrics();
  } catch {
    return "";
  }
}

function serverSide(before: string, after: string) {
  const pick = (name: string) => {
    const a = parseHistogram(after, name);
    if (!a) return undefined;
    return histogramSummary(histogramDelta(parseHistogram(before, name), a));
  };
  return {
    acquire: pick("netslot_acquire_seconds"),
    release: pick("netslot_release_seconds"),
    releaseToReusable: pick("netslot_release_to_reusable_seconds"),
    scrub: pick("netslot_scrub_seconds"),
  };
}

/** Tenant VNIs are handed out per cycle so no two leases share one. */
let vniCounter = 4000 + Math.floor(Math.random() * 100_000);
function requestFor(tenant: TenantNetwork | undefined) {
  return tenant ? { network: { vni: (vniCounter = (vniCounter % 16_000_000) + 1), cidr: tenant.cidr } } : {};
}

async function cycles(
  client: NetslotClient,
  count: number,
  tenant: TenantNetwork | undefined,
  req: number[],
  rel: number[],
  errs: { n: number; first?: string },
  until?: () => boolean,
): Promise<number> {
  let done = 0;
  for (let i = 0; (count === 0 || i < count) && !(until?.() ?? false); i++) {
    try {
      const a = now();
      const lease = await client.acquire(requestFor(tenant));
      const b = now();
      await client.release(lease.id);
      const c = now();
      req.push(b - a);
      rel.push(c - b);
      done++;
    } catch (err) {
      errs.n++;
      errs.first ??= errorText(err);
      // pool_exhausted under 64 clients is possible only if the pool is tiny; back off
      if (err instanceof NetslotApiError && err.retryAfter !== undefined) await sleep(5);
      if (errs.n > 100_000) throw err;
    }
  }
  return done;
}

/** Waits until `want` slots are free or `capMs` passes; returns the free count then. */
async function waitFree(client: NetslotClient, want: number, capMs: number): Promise<number> {
  const deadline = now() + capMs;
  for (;;) {
    const free = (await client.pool()).free;
    if (free >= want || now() >= deadline) return free;
    await sleep(50);
  }
}

export async function measureLeasePath(opts: LeasePathOptions): Promise<LeasePathResult> {
  const result: LeasePathResult = { poolSize: opts.poolSize, tenant: opts.tenant ?? null, concurrency: [], reusable: undefined, sustained: undefined };
  const probe = new NetslotClient({ socketPath: opts.socket });
  try {
    // Does the daemon take this kind of request at all?
    try {
      const lease = await probe.acquire(requestFor(opts.tenant));
      await probe.release(lease.id);
    } catch (err) {
      result.skipped = `the daemon refused the request: ${errorText(err)}`;
      return result;
    }
    // Warm both sides up (JIT, SQLite pages, connection).
    {
      const errs = { n: 0 } as { n: number; first?: string };
      await cycles(probe, opts.warmupCycles, opts.tenant, [], [], errs);
    }

    for (const { clients, cycles: perClient } of opts.plan) {
      const cs = Array.from({ length: clients }, () => new NetslotClient({ socketPath: opts.socket }));
      try {
        // One request per client first, so each has its connection before the clock starts.
        await Promise.all(cs.map((c) => c.health()));
        // Start each level with the pool full (earlier releases still scrubbing), within reason.
        const freeAtStart = await waitFree(probe, opts.poolSize, opts.maxSecondsPerLevel * 2000);
        const before = await metricsText(probe);
        const req: number[] = [];
        const rel: number[] = [];
        const errs = { n: 0 } as { n: number; first?: string };
        const t = now();
        const deadline = t + opts.maxSecondsPerLevel * 1000;
        const counts = await Promise.all(cs.map((c) => cycles(c, perClient, opts.tenant, req, rel, errs, () => now() >= deadline)));
        const wallMs = now() - t;
        const cutShort = counts.some((n) => n < perClient);
        await sleep(100); // last scrubs finish before the snapshot
        const after = await metricsText(probe);
        const r: ConcurrencyResult = {
          freeAtStart,
          clients,
          cyclesPerClient: perClient,
          cutShort,
          requestMs: summarize(req),
          releaseAckMs: summarize(rel),
          server: serverSide(before, after),
          errors: errs.n,
          ...(errs.first ? { firstError: errs.first } : {}),
          wallMs,
          cyclesPerSecond: (req.length / wallMs) * 1000,
        };
        result.concurrency.push(r);
        opts.log(
          `  ${clients} client(s) × ${perClient}: request p50 ${round(r.requestMs.p50)} p99 ${round(r.requestMs.p99)} ms; ` +
            `release-ack p50 ${round(r.releaseAckMs.p50)} p99 ${round(r.releaseAckMs.p99)} ms; ${round(r.cyclesPerSecond, 0)} cycles/s` +
            (errs.n ? `; ${errs.n} errors (${errs.first})` : "") +
            (cutShort ? `; cut short after ${opts.maxSecondsPerLevel} s (${req.length} cycles)` : "") +
            (r.server.scrub?.p50 ? `; daemon scrub p50 ≈ ${round(r.server.scrub.p50.estimateMs, 2)} ms` : ""),
        );
      } finally {
        for (const c of cs) c.close();
      }
    }

    // Release → reusable, seen from outside: the free count is back where it was.
    if (opts.reusableCycles > 0) {
      try {
        await waitFree(probe, opts.poolSize, opts.maxSecondsPerLevel * 2000);
        const samples: number[] = [];
        const deadline = now() + opts.maxSecondsPerLevel * 1000;
        for (let i = 0; i < opts.reusableCycles && now() < deadline; i++) {
          const freeBefore = (await probe.pool()).free;
          let lease;
          try {
            lease = await probe.acquire(requestFor(opts.tenant));
          } catch (err) {
            if (err instanceof NetslotApiError && err.code === "pool_exhausted") {
              await sleep(20);
              continue;
            }
            throw err;
          }
          const t = now();
          await probe.release(lease.id);
          while ((await probe.pool()).free < freeBefore) {
            if (now() > deadline + 60_000) throw new Error("a released slot did not come back to the pool within 60 s");
          }
          samples.push(now() - t);
        }
        result.reusable = { releaseToReusableMs: summarize(samples), cycles: samples.length };
        opts.log(`  release → reusable (client-side poll): p50 ${round(result.reusable.releaseToReusableMs.p50)} p99 ${round(result.reusable.releaseToReusableMs.p99)} ms`);
      } catch (err) {
        (result.errors ??= []).push(`release → reusable: ${errorText(err)}`);
        opts.log(`  release → reusable failed: ${errorText(err)}`);
      }
    }

    if (opts.sustainedSeconds > 0) {
      const cs = Array.from({ length: opts.sustainedClients }, () => new NetslotClient({ socketPath: opts.socket }));
      try {
        await Promise.all(cs.map((c) => c.health()));
        await waitFree(probe, opts.poolSize, opts.maxSecondsPerLevel * 2000);
        const req: number[] = [];
        const rel: number[] = [];
        const errs = { n: 0 } as { n: number; first?: string };
        const t = now();
        const end = t + opts.sustainedSeconds * 1000;
        const counts = await Promise.all(cs.map((c) => cycles(c, 0, opts.tenant, req, rel, errs, () => now() >= end)));
        const wall = now() - t;
        const total = counts.reduce((a, b) => a + b, 0);
        result.sustained = {
          clients: opts.sustainedClients,
          seconds: wall / 1000,
          cycles: total,
          cyclesPerSecond: (total / wall) * 1000,
          errors: errs.n,
          ...(errs.first ? { firstError: errs.first } : {}),
          requestMs: summarize(req),
          releaseAckMs: summarize(rel),
        };
        opts.log(
          `  sustained, ${opts.sustainedClients} clients for ${round(wall / 1000, 1)} s: ${round(result.sustained.cyclesPerSecond, 0)} cycles/s` +
            (errs.n ? `; ${errs.n} errors (${errs.first})` : ""),
        );
      } catch (err) {
        (result.errors ??= []).push(`sustained: ${errorText(err)}`);
        opts.log(`  sustained run failed: ${errorText(err)}`);
      } finally {
        for (const c of cs) c.close();
      }
    }
    return result;
  } finally {
    probe.close();
  }
}
