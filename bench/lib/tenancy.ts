// What the tenancy checks cost a request: two daemons of the same size in the same run, one
// without consumers and one with four configured (tokens, a VNI list, max and reserved
// quotas, an operator, a uid-matched consumer), driven alternately round by round with the
// same SDK calls (lease bound to the caller, release). Each client alternates request by
// request between the two daemons, so load from elsewhere on the machine hits both alike.
// A round leases a batch, then releases it, and both pools are full again before the next:
// the scrubs a release starts (CPU on a worker thread) never overlap the requests timed.
// The figure is the request latency of the configured daemon against the unconfigured one;
// the checks' own CPU time (identify, admit, VNI) is also timed in-process. SO_PEERCRED is read on every
// connection by both daemons, so its cost is timed on its own (one getsockopt per accepted
// connection; keep-alive clients connect once).
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { peerCred } from "../../src/kernel/libc.js";
import { checkNetwork, ConsumerDirectory, type ConsumerConfig } from "../../src/tenancy/consumers.js";
import { Quotas } from "../../src/tenancy/quotas.js";
import { NetslotClient } from "../../src/sdk/index.js";
import { startBenchDaemon, purgePrefix, type BenchDaemon } from "./daemon.js";
import { sleep } from "../../test/support/env.js";
import { errorText, now, round, summarize, type Summary } from "./util.js";

const TOKENS = {
  lambda: "bench-lambda-0123456789abcdef",
  dsql: "bench-dsql-0123456789abcdef00",
  ops: "bench-ops-0123456789abcdef000",
};

const RESERVED = 8;

/** The issue's example, scaled to the pool: four consumers, reservations well under the pool. */
function fourConsumers(poolSize: number): unknown[] {
  return [
    { name: "lambda", token: TOKENS.lambda, vnis: ["100-199", "4242"], quota: { reserved: RESERVED, max: poolSize } },
    { name: "dsql", token: TOKENS.dsql, quota: { reserved: RESERVED }, priority: 1 },
    { name: "ops", token: TOKENS.ops, role: "operator" },
    { name: "batch", uids: [65534], quota: { max: 4 } },
  ];
}

export interface TenancyLevel {
  clients: number;
  /** Daemon without consumers. */
  none: { requestMs: Summary; releaseAckMs: Summary };
  /** Daemon with four consumers, requests as "lambda" (token, quota and reservation checked). */
  four: { requestMs: Summary; releaseAckMs: Summary };
  /** four / none. */
  requestP50Ratio: number;
  requestP99Ratio: number;
  errors: number;
  firstError?: string;
}

export interface TenancyCostResult {
  poolSize: number;
  rounds: number;
  /** At most; a round takes no more than 3/4 of the pool (released slots are scrubbing). */
  cyclesPerRound: number;
  levels: TenancyLevel[];
  /** One getsockopt(SO_PEERCRED) through the libc binding, microseconds (median of 20 batches of 1,000). */
  peerCredUs: number;
  /** The per-request checks in-process (identify by token, admit with a reservation, VNI), microseconds. */
  checksUs: number;
  error?: string;
}

export interface TenancyCostOptions {
  prefixes: [string, string];
  uplink: string;
  poolSize: number;
  rounds: number;
  cyclesPerRound: number;
  levels: number[];
  log: (msg: string) => void;
  /** Registers an emergency stop (the run's cleanups); returns its unregister. */
  register: (name: string, fn: () => void) => () => void;
}

/** getsockopt(SO_PEERCRED) timed on an accepted unix connection of this process. */
async function timePeerCred(): Promise<number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "netslot-bench-peercred-"));
  const sock = path.join(dir, "s");
  const server = net.createServer();
  try {
    const accepted = new Promise<net.Socket>((resolve) => server.once("connection", resolve));
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    const client = net.connect(sock);
    const conn = await accepted;
    const fd = (conn as unknown as { _handle: { fd: number } })._handle.fd;
    const batches: number[] = [];
    for (let b = 0; b < 20; b++) {
      const t = now();
      for (let i = 0; i < 1000; i++) peerCred(fd);
      batches.push(((now() - t) * 1000) / 1000);
    }
    client.destroy();
    conn.destroy();
    return summarize(batches).p50;
  } finally {
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The checks a configured daemon adds to a lease request, timed in-process (µs per request). */
function timeChecks(poolSize: number): number {
  const directory = new ConsumerDirectory(fourConsumers(poolSize) as ConsumerConfig[], poolSize);
  const quotas = new Quotas(directory);
  const header = `Bearer ${TOKENS.lambda}`;
  const peer = { pid: process.pid, uid: 0, gid: 0 };
  const leased = (name: string) => (name === "lambda" ? 3 : 0);
  const batches: number[] = [];
  for (let b = 0; b < 20; b++) {
    const t = now();
    for (let i = 0; i < 1000; i++) {
      const consumer = directory.identify(header, peer)!;
      checkNetwork(consumer, 150);
      quotas.admit(consumer.name, poolSize, leased);
    }
    batches.push(now() - t); // ms per 1,000 = µs per request
  }
  return summarize(batches).p50;
}

async function waitFree(client: NetslotClient, want: number, capMs: number): Promise<void> {
  const deadline = now() + capMs;
  while ((await client.pool()).free < want && now() < deadline) await sleep(50);
}

export async function measureTenancyCost(opts: TenancyCostOptions): Promise<TenancyCostResult> {
  const result: TenancyCostResult = { poolSize: opts.poolSize, rounds: opts.rounds, cyclesPerRound: opts.cyclesPerRound, levels: [], peerCredUs: NaN, checksUs: NaN };
  result.peerCredUs = await timePeerCred();
  result.checksUs = timeChecks(opts.poolSize);
  opts.log(`  SO_PEERCRED: ${round(result.peerCredUs, 2)} µs per getsockopt (once per connection); checks per request ${round(result.checksUs, 2)} µs`);
  const configDir = fs.mkdtempSync(path.join(os.tmpdir(), "netslot-bench-tenancy-"));
  const config = path.join(configDir, "config.json");
  fs.writeFileSync(config, JSON.stringify({ consumers: fourConsumers(opts.poolSize) }));
  const daemons: BenchDaemon[] = [];
  const unregisters: (() => void)[] = [];
  try {
    for (const [i, prefix] of opts.prefixes.entries()) {
      const d = await startBenchDaemon({ prefix, poolSize: opts.poolSize, uplink: opts.uplink, ...(i === 1 ? { extraArgs: ["--config", config] } : {}) });
      daemons.push(d);
      unregisters.push(
        opts.register(`daemon ${prefix}`, () => {
          try {
            process.kill(d.pid, "SIGKILL");
          } catch {
            // already gone
          }
          purgePrefix(d.prefix, d.stateDir);
        }),
      );
    }
    const [plain, four] = daemons as [BenchDaemon, BenchDaemon];
    const admin = { none: plain.client, four: new NetslotClient({ socketPath: four.socket, token: TOKENS.ops }) };
    try {
      for (const clients of opts.levels) {
        const lat = { none: { req: [] as number[], rel: [] as number[] }, four: { req: [] as number[], rel: [] as number[] } };
        const errs = { n: 0, first: undefined as string | undefined };
        const pools = {
          none: Array.from({ length: clients }, () => new NetslotClient({ socketPath: plain.socket })),
          four: Array.from({ length: clients }, () => new NetslotClient({ socketPath: four.socket, token: TOKENS.lambda })),
        };
        try {
          // Connections first, and a warm-up for both (JIT, SQLite pages).
          for (const kind of ["none", "four"] as const) {
            await Promise.all(pools[kind].map((c) => c.health()));
            await waitFree(admin[kind], opts.poolSize, 10_000);
            for (let i = 0; i < 20; i++) await pools[kind][0]!.release((await pools[kind][0]!.acquire({ autoRenew: false })).id);
          }
          // A batch never reaches the slots reserved for dsql.
          const perClient = Math.max(1, Math.min(opts.cyclesPerRound, Math.floor((opts.poolSize - 2 * RESERVED) / clients)));
          for (let r = 0; r < opts.rounds; r++) {
            // Which daemon goes first alternates by round and request.
            const order = r % 2 === 0 ? (["none", "four"] as const) : (["four", "none"] as const);
            await waitFree(admin.none, opts.poolSize, 30_000);
            await waitFree(admin.four, opts.poolSize, 30_000);
            await Promise.all(
              Array.from({ length: clients }, async (_, k) => {
                const held = { none: [] as string[], four: [] as string[] };
                for (let i = 0; i < perClient; i++) {
                  for (const kind of i % 2 === 0 ? order : ([order[1], order[0]] as const)) {
                    try {
                      const a = now();
                      held[kind].push((await pools[kind][k]!.acquire({ autoRenew: false })).id);
                      lat[kind].req.push(now() - a);
                    } catch (err) {
                      errs.n++;
                      errs.first ??= errorText(err);
                    }
                  }
                }
                for (const kind of order) {
                  for (const id of held[kind]) {
                    const b = now();
                    await pools[kind][k]!.release(id);
                    lat[kind].rel.push(now() - b);
                  }
                }
              }),
            );
          }
        } finally {
          for (const c of [...pools.none, ...pools.four]) c.close();
        }
        const none = { requestMs: summarize(lat.none.req), releaseAckMs: summarize(lat.none.rel) };
        const fourS = { requestMs: summarize(lat.four.req), releaseAckMs: summarize(lat.four.rel) };
        const level: TenancyLevel = {
          clients,
          none,
          four: fourS,
          requestP50Ratio: fourS.requestMs.p50 / none.requestMs.p50,
          requestP99Ratio: fourS.requestMs.p99 / none.requestMs.p99,
          errors: errs.n,
          ...(errs.first ? { firstError: errs.first } : {}),
        };
        result.levels.push(level);
        opts.log(
          `  ${clients} client(s): request p50 ${round(none.requestMs.p50, 3)} → ${round(fourS.requestMs.p50, 3)} ms (×${round(level.requestP50Ratio, 3)}), ` +
            `p99 ${round(none.requestMs.p99, 3)} → ${round(fourS.requestMs.p99, 3)} ms (×${round(level.requestP99Ratio, 3)}); ` +
            `${none.requestMs.n}+${fourS.requestMs.n} cycles${errs.n ? `; ${errs.n} errors (${errs.first})` : ""}`,
        );
      }
    } finally {
      admin.four.close();
    }
  } catch (err) {
    result.error = errorText(err);
    opts.log(`  tenancy cost: ${result.error.split("\n")[0]}`);
  } finally {
    for (const d of daemons) {
      await d.stop();
      try {
        purgePrefix(d.prefix, d.stateDir);
      } catch (err) {
        opts.log(`  purge of ${d.prefix} failed: ${errorText(err)}`);
      }
    }
    for (const u of unregisters) u();
    fs.rmSync(configDir, { recursive: true, force: true });
  }
  return result;
}
