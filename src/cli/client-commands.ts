// The client side of the command line: status, lease, release, exec, quarantine release.
// Each returns the process exit code (0 ok, 1 failed, 2 usage) and explains API errors
// with their code, detail and what to do. The token comes from NETSLOT_TOKEN when set.
import { spawn } from "node:child_process";
import * as os from "node:os";
import { NetslotApiError, NetslotClient, NetslotConnectionError } from "../sdk/index.js";
import type { Health, PoolCounts, TenantNetwork } from "../sdk/index.js";

export interface Output {
  write(text: string): unknown;
}

export interface ClientCommandOptions {
  /** The daemon's socket path. */
  socket: string;
  /** Bearer token; default $NETSLOT_TOKEN. */
  token?: string;
  /** Per-request timeout (the SDK's default when omitted). */
  timeoutMs?: number;
  json?: boolean;
  /** Where results go (default process.stdout) and where errors go (default process.stderr). */
  stdout?: Output;
  stderr?: Output;
}

export interface LeaseCommandOptions extends ClientCommandOptions {
  /** Seconds; without it the lease lasts until released. */
  ttl?: number;
  network?: TenantNetwork;
  labels?: Record<string, string>;
}

function clientFor(opts: ClientCommandOptions): NetslotClient {
  const token = opts.token ?? process.env.NETSLOT_TOKEN;
  return new NetslotClient({ socketPath: opts.socket, ...(token ? { token } : {}), ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}) });
}

function out(opts: ClientCommandOptions): Output {
  return opts.stdout ?? process.stdout;
}

function err(opts: ClientCommandOptions): Output {
  return opts.stderr ?? process.stderr;
}

/** Prints an error the way a person can act on it; returns the exit code. */
export function reportError(opts: ClientCommandOptions, error: unknown): number {
  const e = err(opts);
  if (error instanceof NetslotApiError) {
    e.write(`netslot: ${error.code} (HTTP ${error.status}): ${error.detail}\n`);
    if (error.field !== undefined && error.field !== "") e.write(`  field: ${error.field}\n`);
    if (error.retryAfter !== undefined) e.write(`  retry after: ${error.retryAfter} s\n`);
    e.write(`  fix: ${error.fix}\n`);
    return 1;
  }
  if (error instanceof NetslotConnectionError) {
    e.write(`netslot: ${error.message}\n`);
    return 1;
  }
  throw error;
}

async function run(opts: ClientCommandOptions, body: (client: NetslotClient) => Promise<number>): Promise<number> {
  const client = clientFor(opts);
  try {
    return await body(client);
  } catch (error) {
    return reportError(opts, error);
  } finally {
    client.close();
  }
}

/** Health, and when the caller may read it, the pool: per-consumer use and quarantined slots. */
export function formatStatus(health: Health, pool?: PoolCounts): string {
  const p = health.pool;
  const lines = [
    `status: ${health.status}${health.draining ? " (draining: no new leases; netslot undrain ends it)" : ""}`,
    `version: ${health.version}`,
    `pool:   ${p.size} slots: ${p.free} free, ${p.leased} leased, ${p.scrubbing} scrubbing, ${p.quarantined} quarantined, ${p.missing} missing (${p.built} built)`,
  ];
  if (pool && pool.consumers.length > 0) {
    lines.push("consumers:");
    const width = Math.max(...pool.consumers.map((c) => c.name.length));
    for (const c of pool.consumers) {
      lines.push(`  ${c.name.padEnd(width)}  ${c.leased} leased, ${c.reserved} reserved, max ${c.max ?? "none"}`);
    }
  }
  if (pool?.layouts !== undefined && pool.layouts.length > 0) {
    lines.push(`layouts: ${pool.layouts.map((l) => `${l.id} ${l.slots} slots${l.current ? " (current)" : " (migrating)"}`).join(", ")}`);
  }
  if (pool && pool.quarantinedSlots.length > 0) {
    lines.push("quarantined slots (netslot quarantine release N to scrub one again):");
    for (const q of pool.quarantinedSlots) lines.push(`  slot ${q.index}: ${q.reason ?? "(reason shown to operators)"} (since ${q.since})`);
  }
  return `${lines.join("\n")}\n`;
}

/** `netslot status`: health and counts; per-consumer use and quarantined slots when this caller may read the pool. */
export function cmdStatus(opts: ClientCommandOptions): Promise<number> {
  return run(opts, async (client) => {
    const health = await client.health();
    let pool: PoolCounts | undefined;
    try {
      pool = await client.pool();
    } catch (error) {
      // Health needs no token; the pool does. Without one, counts are all there is to show.
      if (!(error instanceof NetslotApiError && error.code === "unauthorized")) throw error;
    }
    out(opts).write(opts.json ? `${JSON.stringify({ ...health, ...(pool ? { detail: pool } : {}) }, null, 2)}\n` : formatStatus(health, pool));
    return 0;
  });
}

/** `netslot drain` / `netslot undrain` (operators): stop or resume granting leases. */
export function cmdDrain(opts: ClientCommandOptions, on: boolean): Promise<number> {
  return run(opts, async (client) => {
    const result = on ? await client.drain() : await client.undrain();
    out(opts).write(
      opts.json
        ? `${JSON.stringify(result)}\n`
        : result.draining
          ? "draining: new leases are refused (503 draining); existing leases run on\n"
          : "not draining: leases are granted\n",
    );
    return 0;
  });
}

/**
 * `netslot lease`: prints the new lease's id (or the whole lease with --json). The lease is
 * not bound to this short-lived process and not renewed: release it with `netslot release`.
 */
export function cmdLease(opts: LeaseCommandOptions): Promise<number> {
  return run(opts, async (client) => {
    const lease = await client.acquire({
      bindToProcess: false,
      autoRenew: false,
      ...(opts.ttl !== undefined ? { ttlSeconds: opts.ttl } : {}),
      ...(opts.network !== undefined ? { network: opts.network } : {}),
      ...(opts.labels !== undefined ? { labels: opts.labels } : {}),
    });
    out(opts).write(opts.json ? `${JSON.stringify(lease, null, 2)}\n` : `${lease.id}\n`);
    return 0;
  });
}

/** `netslot release ID`. */
export function cmdRelease(opts: ClientCommandOptions, id: string): Promise<number> {
  return run(opts, async (client) => {
    await client.release(id);
    out(opts).write(`released ${id}\n`);
    return 0;
  });
}

/**
 * `netslot upgrade [-- DAEMON_FLAGS...]`: the daemon hands over to a new one started from the
 * installed code. Exits 0 once the new daemon serves; non-zero with its error otherwise
 * (the old one then keeps serving).
 */
export function cmdUpgrade(opts: ClientCommandOptions, args: string[]): Promise<number> {
  // A handover adopts the whole pool: allow far longer than an ordinary call.
  return run({ ...opts, timeoutMs: 180_000 }, async (client) => {
    const r = await client.upgrade(args);
    out(opts).write(
      opts.json
        ? `${JSON.stringify(r)}\n`
        : `upgraded: pid ${r.previous.pid} (netslot ${r.previous.version}) -> pid ${r.current.pid} (netslot ${r.current.version}) in ${r.handoverMs.toFixed(0)} ms (requests held ${r.heldMs.toFixed(0)} ms)\n`,
    );
    return 0;
  });
}

/** `netslot quarantine release N`: scrub a quarantined slot again. */
export function cmdQuarantineRelease(opts: ClientCommandOptions, index: number): Promise<number> {
  return run(opts, async (client) => {
    const result = await client.releaseQuarantined(index);
    out(opts).write(opts.json ? `${JSON.stringify(result)}\n` : `slot ${result.index}: ${result.state}\n`);
    return 0;
  });
}

/**
 * `netslot exec ID -- CMD...`: runs CMD in the lease's network namespace
 * (`nsenter --net=<netns> -- CMD...`, needs root) and returns its exit code.
 */
export function cmdExec(opts: ClientCommandOptions, id: string, argv: string[]): Promise<number> {
  if (argv.length === 0) {
    err(opts).write("netslot: usage: netslot exec ID -- CMD...\n");
    return Promise.resolve(2);
  }
  return run(opts, async (client) => {
    const lease = await client.get(id);
    client.close();
    return runInNetns(opts, lease.slot.netns, argv);
  });
}

function runInNetns(opts: ClientCommandOptions, netns: string, argv: string[]): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn("nsenter", [`--net=${netns}`, "--", ...argv], { stdio: "inherit" });
    // The terminal's ^C reaches the child directly; a signal sent to us alone is passed on.
    const forward = (signal: NodeJS.Signals): void => {
      child.kill(signal);
    };
    const signals: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"];
    const onSignal = new Map(signals.map((s) => [s, () => (s === "SIGINT" || s === "SIGQUIT" ? undefined : forward(s))] as const));
    for (const [s, fn] of onSignal) process.on(s, fn);
    const done = (code: number): void => {
      for (const [s, fn] of onSignal) process.off(s, fn);
      resolve(code);
    };
    child.once("error", (error: Error & { code?: string }) => {
      err(opts).write(
        error.code === "ENOENT"
          ? "netslot: nsenter not found; install util-linux\n"
          : `netslot: cannot run nsenter: ${error.message}\n`,
      );
      done(127);
    });
    child.once("exit", (code, signal) => {
      if (code !== null) done(code);
      else done(128 + (signal ? os.constants.signals[signal] : 0));
    });
  });
}
