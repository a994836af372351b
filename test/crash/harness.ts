// Crash harness: a mixed workload against a real daemon that is killed over and over, at
// random moments (SIGKILL) and at every named fault point in turn. After each restart it
// checks that nothing acknowledged was lost and nothing leaked, through the API, the store
// and the kernel. Library (runCrashLoop) and CLI:
//   node dist/test/crash/harness.js --kills N [--pool 8] [--seed S] [--workers 4] [--verbose]
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { checkInvariants } from "../../src/pool/invariants.js";
import { FAULT_POINTS, type FaultPoint } from "../../src/core/faults.js";
import { inventory } from "../../src/dataplane/dataplane.js";
import { NetslotApiError, NetslotClient, NetslotConnectionError, type Lease, type TenantNetwork } from "../../src/sdk/index.js";
import { REPO_ROOT, createUpstream, isRoot, sh, startDaemon, testPrefix, type DaemonHandle, type Upstream } from "../support/env.js";

export interface CrashRunOptions {
  /** Kills to do (random SIGKILLs and fault points together). */
  kills: number;
  /** Pool size (default 8). */
  poolSize?: number;
  /** Seed of the pseudo-random choices (default: from the clock; printed in the summary). */
  seed?: number;
  /** Concurrent in-process consumers (default 4). */
  workers?: number;
  /** How long a fault run may take to reach its point before it is killed from outside (default 4000 ms). */
  faultTimeoutMs?: number;
  /** Progress lines; default none. */
  log?: (line: string) => void;
  /** Stop at the first kill that found a violation (default false: keep going, collect all). */
  stopOnViolation?: boolean;
  /** Stops the loop early (cleanup still runs); the CLI aborts on SIGINT. */
  signal?: AbortSignal;
}

export interface Violation {
  /** 1-based number of the kill after which (or during whose workload) it was found. */
  kill: number;
  /** "random", "random-boot" or the fault spec (point@n) of that kill. */
  mode: string;
  what: string;
}

export interface CrashRunResult {
  kills: number;
  randomKills: number;
  faultKills: number;
  /** Fault points that really fired (the daemon killed itself there). */
  faultPointsCovered: FaultPoint[];
  faultPointsMissed: FaultPoint[];
  violations: Violation[];
  restarts: number;
  /** Leases acknowledged (201) and releases acknowledged (204) over the run. */
  acknowledged: number;
  released: number;
  expiredSeen: number;
  ownerDeaths: number;
  seed: number;
  durationMs: number;
  summary: string;
}

// ── deterministic randomness ──────────────────────────────────────────────────────────

class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0 || 1;
  }
  /** mulberry32 */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ── the ledger: what the API acknowledged ─────────────────────────────────────────────

type LeaseFate =
  /** 201 received, no release sent (or the release failed cleanly). */
  | "held"
  /** 204 received: must never come back. */
  | "released"
  /** A release was sent but no answer came (the daemon died): either way is fine. */
  | "release-unknown"
  /** The daemon answered 404 and the lease's acknowledged expiry had passed. */
  | "expired";

interface LedgerEntry {
  id: string;
  slot: number;
  worker: number;
  ttl: number | undefined;
  /** Latest acknowledged expiry (ms since epoch), or null without TTL. Renewals only move it later. */
  expiresAt: number | null;
  network: TenantNetwork | undefined;
  fate: LeaseFate;
  /** When the 204 arrived (Date.now()): a list sent before then may still show the lease. */
  releasedAt?: number;
  /** This lease's TTL is renewed by its worker; others are left to expire. */
  keepAlive: boolean;
}

interface Holder {
  child: ChildProcess;
  pid: number;
  leases: Map<string, number>;
  dead: boolean;
  ready: Promise<void>;
}

/** The script of a child consumer: leases bound to its own pid, then it sleeps until killed. */
function holderScript(): string {
  const sdk = path.join(REPO_ROOT, "dist", "src", "sdk", "index.js");
  return `import { NetslotClient } from ${JSON.stringify(sdk)};
const client = new NetslotClient({ socketPath: process.argv[2], timeoutMs: 5000 });
const n = Number(process.argv[3]);
for (let i = 0; i < n; i++) {
  try {
    const lease = await client.acquire({ bindToProcess: true, autoRenew: false, labels: { holder: String(process.pid) } });
    process.stdout.write(JSON.stringify({ id: lease.id, slot: lease.slot.index }) + "\\n");
  } catch (err) {
    process.stdout.write(JSON.stringify({ error: String(err && err.code ? err.code : err) }) + "\\n");
  }
}
process.stdout.write("ready\\n");
setInterval(() => {}, 1 << 30);
`;
}

// ── the run ───────────────────────────────────────────────────────────────────────────

export async function runCrashLoop(opts: CrashRunOptions): Promise<CrashRunResult> {
  if (!isRoot()) throw new Error("the crash harness needs root");
  const started = performance.now();
  const seed = opts.seed ?? (Date.now() % 2 ** 31);
  const rng = new Rng(seed);
  const poolSize = opts.poolSize ?? 8;
  const workerCount = opts.workers ?? 4;
  const faultTimeoutMs = opts.faultTimeoutMs ?? 4000;
  const log = opts.log ?? (() => undefined);
  const prefix = testPrefix();

  const ledger = new Map<string, LedgerEntry>();
  const violations: Violation[] = [];
  const covered = new Set<FaultPoint>();
  const holders: Holder[] = [];
  const deadHolderPids = new Set<number>();
  let killNo = 0;
  let mode = "start";
  let randomKills = 0;
  let faultKills = 0;
  let restarts = 0;
  let acknowledged = 0;
  let released = 0;
  let expiredSeen = 0;
  let ownerDeaths = 0;
  /** Acquires whose answer never came since the last reconcile: each may have left a lease. */
  let ambiguousAcquires = 0;

  const violate = (what: string) => {
    violations.push({ kill: killNo, mode, what });
    log(`VIOLATION (kill ${killNo}, ${mode}): ${what}`);
  };

  let upstream: Upstream | undefined;
  let daemon: DaemonHandle | undefined;
  let stateDir = "";
  let linkCidr = "";
  let socket = "";
  let scriptFile = "";
  /** Every daemon started, so that none outlives the run whatever happens. */
  const daemons: DaemonHandle[] = [];

  /** Starts the daemon on the run's state dir; resolves once it is ready or has exited. */
  const start = async (fault?: string): Promise<"ready" | "exited"> => {
    const env: Record<string, string> = fault ? { NETSLOT_TEST_FAULT: fault } : {};
    daemon = await startDaemon({
      prefix,
      uplink: upstream!.uplink,
      poolSize,
      vtepRemote: upstream!.address,
      ...(stateDir ? { stateDir, linkCidr } : {}),
      env,
      waitReady: false,
    });
    daemons.push(daemon);
    if (!stateDir) {
      stateDir = daemon.stateDir;
      linkCidr = daemon.linkCidr;
      socket = daemon.socket;
      scriptFile = path.join(path.dirname(stateDir), "holder.mjs");
      fs.writeFileSync(scriptFile, holderScript());
    }
    restarts++;
    const d = daemon;
    const probe = new NetslotClient({ socketPath: socket, timeoutMs: 2000 });
    try {
      const deadline = Date.now() + 60_000;
      while (Date.now() < deadline) {
        if (exited(d)) return "exited";
        try {
          if ((await probe.health()).status === "ready") return "ready";
        } catch {
          // Not listening yet.
        }
        await sleep(15);
      }
    } finally {
      probe.close();
    }
    throw new Error(`daemon did not become ready within 60 s\n${d.output().slice(-3000)}`);
  };

  const exited = (d: DaemonHandle) => d.process.exitCode !== null || d.process.signalCode !== null;
  /** The output of a dead daemon, once its pipes are drained ('exit' can come before the last bytes). */
  const finalOutput = async (d: DaemonHandle): Promise<string> => {
    const out = d.process.stdout!;
    const err = d.process.stderr!;
    if (!(out.closed && err.closed)) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 1000);
        d.process.once("close", () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return d.output();
  };
  /** Daemons this harness killed (everything else that died of SIGKILL killed itself at its fault point). */
  const ourKills = new WeakSet<DaemonHandle>();
  const kill9 = async (d: DaemonHandle) => {
    if (!exited(d)) ourKills.add(d);
    await d.kill9();
  };
  /**
   * Whether the armed point fired: the daemon says so on stderr, or it died of a SIGKILL
   * that was not ours (a point on the scrub worker thread dies before its message gets
   * through the main thread's stderr).
   */
  const fired = async (d: DaemonHandle, point: FaultPoint | undefined): Promise<boolean> => {
    if (point === undefined) return false;
    const out = await finalOutput(d);
    return out.includes(`fault point ${point} reached`) || (d.process.signalCode === "SIGKILL" && !ourKills.has(d));
  };
  const waitExit = (d: DaemonHandle, ms: number) =>
    new Promise<boolean>((resolve) => {
      if (exited(d)) { resolve(true); return; }
      const timer = setTimeout(() => resolve(false), ms);
      d.process.once("exit", () => {
        clearTimeout(timer);
        resolve(true);
      });
    });

  // ── workload ────────────────────────────────────────────────────────────────────────

  let stopWorkers = false;

  /** Checks a 404 for a lease we believe held: only its acknowledged expiry passing excuses it. */
  const notFound = (entry: LedgerEntry, sentAt: number, op: string) => {
    if (entry.fate !== "held") return;
    if (entry.expiresAt !== null && entry.expiresAt <= sentAt + 250) {
      entry.fate = "expired";
      expiredSeen++;
      return;
    }
    violate(
      `${op} of acknowledged lease ${entry.id} (slot ${entry.slot}) answered lease_not_found; ` +
        (entry.expiresAt === null ? "it has no TTL" : `its acknowledged expiry is ${new Date(entry.expiresAt).toISOString()}`),
    );
    entry.fate = "expired";
  };

  /** An answered error that no crash can excuse (internal, store_unavailable...). */
  const unexpected = (op: string, err: unknown) => {
    if (err instanceof NetslotApiError) {
      if (err.code === "pool_exhausted" || err.code === "booting") return;
      violate(`${op} answered ${err.status} ${err.code}: ${err.detail}`);
    } else if (!(err instanceof NetslotConnectionError)) {
      violate(`${op} failed: ${(err as Error).message}`);
    }
  };

  interface Profile {
    networkBias: number;
    ttlChance: number;
    /** Leave TTL leases alone (no release, no renew) so they expire while the daemon runs. */
    letExpire: boolean;
  }
  const worker = async (w: number, client: NetslotClient, profile: Profile): Promise<void> => {
    while (!stopWorkers) {
      const mine = [...ledger.values()].filter((e) => e.worker === w && e.fate === "held" && !(profile.letExpire && e.ttl !== undefined));
      const r = rng.next();
      const sentAt = Date.now();
      try {
        if (mine.length < 2 && (r < 0.45 || mine.length === 0)) {
          const ttl = rng.chance(profile.ttlChance) ? (profile.letExpire ? 1 : rng.int(1, 3)) : undefined;
          const network = rng.chance(profile.networkBias) ? { vni: rng.int(100, 5000), cidr: `10.${rng.int(1, 99)}.${rng.int(0, 255)}.0/24` } : undefined;
          let lease: Lease;
          try {
            lease = await client.acquire({
              bindToProcess: rng.chance(0.5),
              autoRenew: false,
              labels: { worker: String(w) },
              ...(ttl !== undefined ? { ttlSeconds: ttl } : {}),
              ...(network ? { network } : {}),
            });
          } catch (err) {
            if (err instanceof NetslotConnectionError) ambiguousAcquires++;
            throw err;
          }
          acknowledged++;
          const clash = [...ledger.values()].find((e) => e.slot === lease.slot.index && e.fate === "held" && !(e.expiresAt !== null && e.expiresAt <= Date.now()));
          if (clash) violate(`lease ${lease.id} was given slot ${lease.slot.index}, which acknowledged lease ${clash.id} still holds`);
          ledger.set(lease.id, {
            id: lease.id,
            slot: lease.slot.index,
            worker: w,
            ttl,
            expiresAt: lease.expiresAt === null ? null : Date.parse(lease.expiresAt),
            network,
            fate: "held",
            keepAlive: ttl !== undefined && rng.chance(0.5),
          });
        } else if (mine.length > 0 && r < 0.7) {
          const entry = rng.pick(mine);
          entry.fate = "release-unknown";
          try {
            await client.release(entry.id);
            entry.fate = "released";
            entry.releasedAt = Date.now();
            released++;
          } catch (err) {
            if (err instanceof NetslotApiError) {
              entry.fate = "held";
              if (err.code === "lease_not_found") notFound(entry, sentAt, "release");
              else throw err;
            } else throw err;
          }
        } else if (mine.length > 0 && r < 0.85) {
          const renewable = mine.filter((e) => e.ttl !== undefined && (e.keepAlive || rng.chance(0.2)));
          const entry = renewable.length > 0 ? rng.pick(renewable) : rng.pick(mine);
          try {
            const lease = await client.renew(entry.id, entry.ttl);
            if (lease.expiresAt !== null) entry.expiresAt = Math.max(entry.expiresAt ?? 0, Date.parse(lease.expiresAt));
          } catch (err) {
            if (err instanceof NetslotApiError && err.code === "lease_not_found") notFound(entry, sentAt, "renew");
            else throw err;
          }
        } else if (mine.length > 0 && r < 0.93) {
          const entry = rng.pick(mine);
          try {
            const lease = await client.get(entry.id);
            if (lease.slot.index !== entry.slot) violate(`lease ${entry.id} moved from slot ${entry.slot} to ${lease.slot.index}`);
          } catch (err) {
            if (err instanceof NetslotApiError && err.code === "lease_not_found") notFound(entry, sentAt, "get");
            else throw err;
          }
        } else {
          const leases = await client.list();
          const seen = new Map<number, string>();
          for (const l of leases) {
            const other = seen.get(l.slot.index);
            if (other) violate(`list shows slot ${l.slot.index} in two leases: ${other} and ${l.id}`);
            seen.set(l.slot.index, l.id);
            const entry = ledger.get(l.id);
            // Another worker's release may have been answered while this list was in flight.
            if (entry?.fate === "released" && entry.releasedAt !== undefined && entry.releasedAt < sentAt) {
              violate(`released lease ${l.id} is listed again`);
            }
          }
        }
      } catch (err) {
        if (err instanceof NetslotConnectionError) return; // The daemon is gone: this epoch is over.
        unexpected("workload", err);
        if (err instanceof NetslotApiError && err.code === "pool_exhausted") await sleep(rng.int(5, 30));
      }
      await sleep(rng.int(0, 15));
    }
  };

  // ── child consumers whose leases are bound to their pid ─────────────────────────────

  const spawnHolder = (n: number): Holder => {
    const child = spawn(process.execPath, [scriptFile, socket, String(n)], { stdio: ["ignore", "pipe", "pipe"] });
    const holder: Holder = { child, pid: child.pid!, leases: new Map(), dead: false, ready: Promise.resolve() };
    holder.ready = new Promise<void>((resolve) => {
      let buf = "";
      child.stdout.on("data", (d: Buffer) => {
        buf += d.toString();
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line === "ready") resolve();
          else {
            try {
              const msg = JSON.parse(line) as { id?: string; slot?: number; error?: string };
              if (msg.id !== undefined && msg.slot !== undefined) holder.leases.set(msg.id, msg.slot);
            } catch {
              // Not ours.
            }
          }
        }
      });
      child.once("exit", () => resolve());
    });
    child.stderr.resume();
    holders.push(holder);
    return holder;
  };

  const killHolder = async (holder: Holder) => {
    if (holder.dead) return;
    holder.dead = true;
    const gone = new Promise<void>((r) => (holder.child.exitCode !== null || holder.child.signalCode !== null ? r() : holder.child.once("exit", () => r())));
    holder.child.kill("SIGKILL");
    await gone;
    deadHolderPids.add(holder.pid);
    ownerDeaths++;
  };

  // ── checks after a restart ──────────────────────────────────────────────────────────

  const checkAll = async (checkClient: NetslotClient) => {
    let client = checkClient;
    // Settle: reconciliation scrubs, expiry of overdue leases and owner-death releases run
    // now. Quiet twice, 150 ms apart (the daemon's timers get their turn), within 20 s (a
    // rebuild per scrubbed slot can take a while on a loaded machine).
    const settleStart = Date.now();
    const settleDeadline = settleStart + 20_000;
    let pool = await client.pool();
    let quietOnce = false;
    for (;;) {
      if (pool.scrubbing === 0 && pool.missing === 0) {
        if (quietOnce) break;
        quietOnce = true;
        await sleep(150);
      } else {
        if (Date.now() > settleDeadline) break;
        await sleep(25);
      }
      pool = await client.pool();
    }
    // Counts and the list are two requests: an expiry may fall between them, so read both
    // again until they agree.
    let listed = await client.list();
    for (let i = 0; i < 5 && pool.leased !== listed.length; i++) {
      await sleep(50);
      pool = await client.pool();
      listed = await client.list();
    }
    const sum = pool.free + pool.leased + pool.scrubbing + pool.quarantined + pool.missing;
    if (sum !== pool.size || pool.size !== poolSize) violate(`pool counts do not add up: ${JSON.stringify({ ...pool, quarantinedSlots: undefined })}`);
    if (pool.scrubbing !== 0) {
      const d = daemon!;
      violate(`${pool.scrubbing} slot(s) still scrubbing ${((Date.now() - settleStart) / 1000).toFixed(1)} s after restart; daemon log:\n${d.output().slice(-1500)}`);
    }
    if (pool.missing !== 0) violate(`${pool.missing} slot(s) missing ${((Date.now() - settleStart) / 1000).toFixed(1)} s after restart`);
    if (pool.quarantined !== 0) violate(`${pool.quarantined} slot(s) quarantined: ${JSON.stringify(pool.quarantinedSlots)}`);
    if (pool.leased !== listed.length) violate(`pool says ${pool.leased} leased, the lease list has ${listed.length}`);

    const now = Date.now();
    const listedIds = new Set(listed.map((l) => l.id));
    const bySlot = new Map<number, string>();
    for (const l of listed) {
      const other = bySlot.get(l.slot.index);
      if (other) violate(`slot ${l.slot.index} is in two leases: ${other} and ${l.id}`);
      bySlot.set(l.slot.index, l.id);
      if (l.expiresAt !== null && Date.parse(l.expiresAt) < now - 1500) violate(`lease ${l.id} expired at ${l.expiresAt} but is still there after restart`);
      if (l.ownerPid !== undefined && deadHolderPids.has(l.ownerPid)) violate(`lease ${l.id} of dead owner ${l.ownerPid} is still there`);
      const entry = ledger.get(l.id);
      if (entry?.fate === "released") violate(`lease ${l.id} released with 204 came back after restart`);
      if (entry && entry.slot !== l.slot.index) violate(`lease ${l.id} moved from slot ${entry.slot} to ${l.slot.index}`);
    }
    // Expected: acknowledged, not released, acknowledged expiry still ahead (with room for the check itself).
    const expected: string[] = [];
    for (const e of ledger.values()) {
      if (e.fate !== "held") continue;
      if (e.expiresAt !== null && e.expiresAt <= now + 250) continue;
      expected.push(e.id);
      if (!listedIds.has(e.id)) violate(`acknowledged lease ${e.id} (slot ${e.slot}, expiry ${e.expiresAt === null ? "none" : new Date(e.expiresAt).toISOString()}) is missing from the list`);
      try {
        const got = await client.get(e.id);
        if (got.slot.index !== e.slot) violate(`lease ${e.id} is on slot ${got.slot.index}, acknowledged on ${e.slot}`);
        if ((got.network?.vni ?? 0) !== (e.network?.vni ?? 0)) violate(`lease ${e.id} lost its tenant network`);
      } catch (err) {
        if (err instanceof NetslotConnectionError) throw err;
        violate(`acknowledged lease ${e.id} cannot be read back: ${(err as Error).message}`);
      }
    }
    for (const h of holders) {
      for (const [id, slot] of h.leases) {
        if (h.dead) {
          if (listedIds.has(id)) violate(`lease ${id} of killed owner ${h.pid} survived`);
        } else {
          expected.push(id);
          if (!listedIds.has(id)) violate(`lease ${id} (slot ${slot}) of live owner ${h.pid} is missing`);
        }
      }
    }
    const known = new Set([...ledger.keys(), ...holders.flatMap((h) => [...h.leases.keys()])]);
    const holderPids = new Set(holders.map((h) => h.pid));
    const unknown = listed.filter((l) => !known.has(l.id) && !(l.ownerPid !== undefined && holderPids.has(l.ownerPid)));
    if (unknown.length > ambiguousAcquires) {
      violate(`${unknown.length} lease(s) nobody acknowledged (${unknown.map((l) => l.id).join(", ")}), but only ${ambiguousAcquires} acquire(s) went unanswered`);
    }

    // Store and kernel. The daemon's own timers may change the store between two reads of
    // the check: a problem counts only when it shows in three checks in a row.
    let problems: string[] = [];
    for (let attempt = 0; attempt < 3; attempt++) {
      const exp = expected.filter((id) => {
        const e = ledger.get(id);
        return !e || e.expiresAt === null || e.expiresAt > Date.now() + 250;
      });
      problems = checkInvariants({ prefix, stateDir, linkCidr, expectLeases: exp });
      const kernel = inventory(prefix);
      if (kernel.namespaces.size !== poolSize) problems.push(`kernel has ${kernel.namespaces.size} slot namespaces for a pool of ${poolSize}`);
      if (kernel.hostLinks.size !== poolSize) problems.push(`kernel has ${kernel.hostLinks.size} host veths for a pool of ${poolSize}`);
      if (problems.length === 0) break;
      await sleep(200);
    }
    for (const p of problems) violate(`check: ${p}`);
    // checkInvariants is synchronous and can take seconds on a loaded machine: the daemon
    // may meanwhile have closed our idle keep-alive connections (EPIPE on the next write).
    checkClient.close();
    client = new NetslotClient({ socketPath: socket, timeoutMs: 5000 });

    try {
      // Reconcile the ledger with what is there: orphans of unanswered acquires are released,
      // releases that got no answer are finished.
      for (const l of unknown) {
        try {
          await client.release(l.id);
        } catch (err) {
          if (err instanceof NetslotConnectionError) throw err;
        }
      }
      ambiguousAcquires = 0;
      for (const e of ledger.values()) {
        if (e.fate === "release-unknown") {
          if (!listedIds.has(e.id)) e.fate = "released";
          else {
            try {
              await client.release(e.id);
              e.fate = "released";
            } catch (err) {
              if (err instanceof NetslotApiError && err.code === "lease_not_found") e.fate = "released";
              else if (err instanceof NetslotConnectionError) throw err;
              else violate(`release of ${e.id} failed: ${(err as Error).message}`);
            }
          }
        } else if (e.fate === "held" && e.expiresAt !== null && e.expiresAt <= Date.now() && !listedIds.has(e.id)) {
          e.fate = "expired";
          expiredSeen++;
        }
      }
      // Drop settled entries except released ones (checked for resurrection at every restart).
      for (const [id, e] of ledger) if (e.fate === "expired") ledger.delete(id);
    } finally {
      client.close();
    }
  };

  // ── one kill ────────────────────────────────────────────────────────────────────────

  /** Removes the kernel objects of a few slots while the daemon is down, so the next boot builds. */
  const loseSlots = (count: number): number => {
    const chosen = new Set<number>();
    while (chosen.size < Math.min(count, poolSize)) chosen.add(rng.int(0, poolSize - 1));
    for (const i of chosen) {
      sh("ip", ["link", "del", `${prefix}-${i}`], { allowFail: true });
      sh("ip", ["netns", "del", `${prefix}-${i}`], { allowFail: true });
    }
    return chosen.size;
  };

  const faultCount = (point: FaultPoint, built: number): number => {
    if (point.startsWith("boot.") || point === "shutdown.before-close" || point === "expire.before") return 1;
    if (point.startsWith("build.")) return rng.int(1, Math.max(1, built));
    return rng.int(1, 3);
  };

  let faultTurn = 0;
  /** Kills since the last check: a check's violations are put on them. */
  let unchecked: string[] = [];
  /** Checks the state the last kills left; false when the armed fault point fired meanwhile. */
  const runChecks = async (armed?: FaultPoint): Promise<boolean> => {
    const saved = mode;
    mode = unchecked.length > 0 ? `state after ${unchecked.join(" + ")}` : "first start";
    const c = new NetslotClient({ socketPath: socket, timeoutMs: 5000 });
    const d = daemon!;
    try {
      await checkAll(c);
      return true;
    } catch (err) {
      if (err instanceof NetslotConnectionError && (await waitExit(d, 1000)) && (await fired(d, armed))) {
        // The checks' own releases (or the boot's scrubs) reached the armed point: a kill like any other.
        return false;
      }
      violate(`checks failed to run: ${(err as Error).message}`);
      return true;
    } finally {
      c.close();
      mode = saved;
      unchecked = [];
    }
  };

  try {
    upstream = createUpstream(prefix);
    if ((await start()) !== "ready") throw new Error(`first start failed:\n${daemon!.output()}`);
    await runChecks();
    // Each round starts with the daemon down; this one stops cleanly (SIGTERM).
    await daemon!.stop();
    if (daemon!.process.exitCode !== 0) violate(`SIGTERM stop exited with ${daemon!.process.exitCode ?? daemon!.process.signalCode}`);

    while (killNo < opts.kills && !opts.signal?.aborted) {
      const fault = killNo % 2 === 1 ? FAULT_POINTS[faultTurn++ % FAULT_POINTS.length]! : undefined;
      const randomBoot = !fault && rng.chance(0.1);
      // The daemon is down here: owners may die, slots may be lost, as on a real host.
      let lost = 0;
      if (fault === "boot.mid-build" || fault?.startsWith("build.") || randomBoot || rng.chance(0.08)) lost = loseSlots(rng.int(1, 3));
      for (const h of holders) if (!h.dead && rng.chance(0.3)) await killHolder(h);

      const spec = fault ? `${fault}@${faultCount(fault, lost)}` : undefined;
      killNo++;
      mode = spec ?? (randomBoot ? "random-boot" : "random");
      const label = `kill ${killNo} (${mode}${lost ? `, ${lost} slot(s) lost before` : ""})`;
      const d0 = Date.now();

      if (randomBoot) {
        // SIGKILL while booting (building the lost slots).
        const startP = start();
        await sleep(rng.int(20, 400));
        await kill9(daemon!);
        await startP.catch(() => undefined);
        randomKills++;
        unchecked.push(label);
        log(`${label}: ${Date.now() - d0} ms`);
        continue;
      }

      const state = await start(spec);
      if (state === "exited") {
        const d = daemon!;
        if (await fired(d, fault)) {
          covered.add(fault!);
          faultKills++;
        } else violate(`daemon exited during boot without reaching its fault point: ${d.output().slice(-2000)}`);
        unchecked.push(`${label} at boot`);
        log(`${label}: at boot, ${Date.now() - d0} ms`);
        continue;
      }

      // Ready: check the state the previous kill(s) left behind.
      const d = daemon!;
      const t0 = Date.now();
      if (!(await runChecks(fault))) {
        covered.add(fault!);
        faultKills++;
        unchecked.push(`${label} during checks`);
        log(`${label}: fired during the checks, ${Date.now() - d0} ms`);
        continue;
      }
      const tChecks = Date.now() - t0;
      if (opts.stopOnViolation && violations.length > 0) break;

      // Workload, and the kill.
      stopWorkers = false;
      const clients = Array.from({ length: workerCount }, () => new NetslotClient({ socketPath: socket, timeoutMs: 5000 }));
      const profile: Profile = {
        networkBias: fault === "acquire.after-tenant" ? 0.6 : 0.15,
        ttlChance: fault === "expire.before" ? 0.9 : 0.45,
        letExpire: fault === "expire.before",
      };
      const running = clients.map((c, w) => worker(w, c, profile));
      if (holders.filter((h) => !h.dead).length < 2 && rng.chance(0.35)) spawnHolder(rng.int(1, 2));
      let how = "";
      if (!fault) {
        const delay = rng.chance(0.15) ? rng.int(0, 40) : rng.int(40, 1500);
        if (await waitExit(d, delay)) violate(`daemon died with no fault armed: ${(await finalOutput(d)).slice(-2000)}`);
        else {
          const live = holders.filter((h) => !h.dead);
          if (live.length > 0 && rng.chance(0.25)) {
            // An owner dies while the daemon runs (its leases end before or across the kill).
            const h = rng.pick(live);
            await h.ready;
            await killHolder(h);
            await sleep(rng.int(0, 300));
          }
          await kill9(d);
        }
        randomKills++;
        how = `after ${delay} ms`;
      } else {
        if (fault === "shutdown.before-close") {
          await sleep(rng.int(50, 600));
          d.process.kill("SIGTERM");
        }
        const selfKilled = await waitExit(d, faultTimeoutMs);
        if (!selfKilled) await kill9(d);
        if (await fired(d, fault)) {
          covered.add(fault);
          faultKills++;
          how = "fired";
        } else {
          randomKills++;
          how = `not reached in ${faultTimeoutMs} ms: killed from outside`;
          if (selfKilled) violate(`daemon died without reaching ${fault}: ${d.output().slice(-2000)}`);
        }
      }
      stopWorkers = true;
      await Promise.all(running);
      for (const c of clients) c.close();
      unchecked.push(label);
      log(`${label}: ${how}, ${Date.now() - d0} ms (start ${t0 - d0}, checks ${tChecks}), ledger ${ledger.size}`);
      if (opts.stopOnViolation && violations.length > 0) break;
    }

    // Final restart and check.
    mode = "final";
    if ((await start()) !== "ready") violate(`final start failed: ${daemon!.output().slice(-2000)}`);
    else {
      await runChecks();
      mode = "final";
      const c = new NetslotClient({ socketPath: socket, timeoutMs: 5000 });
      try {
        // Kill every holder: their leases must end while the daemon runs.
        for (const h of holders) await killHolder(h);
        await sleep(300);
        await checkAll(new NetslotClient({ socketPath: socket, timeoutMs: 5000 }));
        // Release everything and check the pool comes back whole.
        for (const l of await c.list()) await c.release(l.id).catch((err: unknown) => violate(`final release of ${l.id}: ${(err as Error).message}`));
        const deadline = Date.now() + 20_000;
        let pool = await c.pool();
        while (pool.free !== poolSize && Date.now() < deadline) {
          await sleep(25);
          pool = await c.pool();
        }
        if (pool.free !== poolSize) violate(`after releasing everything the pool has ${pool.free}/${poolSize} free: ${JSON.stringify(pool)}`);
        const problems = checkInvariants({ prefix, stateDir, linkCidr, expectLeases: [] });
        for (const p of problems) violate(`final check: ${p}`);
      } finally {
        c.close();
      }
    }
  } finally {
    stopWorkers = true;
    for (const h of holders) if (!h.dead) h.child.kill("SIGKILL");
    for (const d of daemons) await d.kill9();
    await daemon?.cleanup();
    upstream?.remove();
  }

  const missed = FAULT_POINTS.filter((p) => !covered.has(p));
  const durationMs = performance.now() - started;
  const summary =
    `crash harness: kills=${killNo} (random ${randomKills}, fault ${faultKills}), restarts=${restarts}, ` +
    `fault points covered ${covered.size}/${FAULT_POINTS.length}${missed.length ? ` (missed: ${missed.join(", ")})` : ""}, ` +
    `violations=${violations.length}, leases acknowledged=${acknowledged}, releases acknowledged=${released}, ` +
    `expired=${expiredSeen}, owner deaths=${ownerDeaths}, pool=${poolSize}, seed=${seed}, ${(durationMs / 1000).toFixed(1)} s`;
  return {
    kills: killNo,
    randomKills,
    faultKills,
    faultPointsCovered: [...covered],
    faultPointsMissed: missed,
    violations,
    restarts,
    acknowledged,
    released,
    expiredSeen,
    ownerDeaths,
    seed,
    durationMs,
    summary,
  };
}

/** Violations grouped for a failure message: what, at which kill, which fault point. */
export function formatViolations(violations: Violation[], limit = 40): string {
  const lines = violations.slice(0, limit).map((v) => `  kill ${v.kill} [${v.mode}]: ${v.what}`);
  if (violations.length > limit) lines.push(`  … and ${violations.length - limit} more`);
  return lines.join("\n");
}

// ── CLI ───────────────────────────────────────────────────────────────────────────────

function parseArgs(argv: string[]): CrashRunOptions & { verbose: boolean } {
  const out: CrashRunOptions & { verbose: boolean } = { kills: 20, verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = () => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 0) throw new Error(`${a} takes a whole number`);
      return v;
    };
    if (a === "--kills") out.kills = val();
    else if (a === "--pool") out.poolSize = val();
    else if (a === "--seed") out.seed = val();
    else if (a === "--workers") out.workers = val();
    else if (a === "--stop-on-violation") out.stopOnViolation = true;
    else if (a === "--verbose" || a === "-v") out.verbose = true;
    else throw new Error(`unknown argument ${a}; usage: harness.js --kills N [--pool 8] [--seed S] [--workers 4] [--stop-on-violation] [--verbose]`);
  }
  return out;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = parseArgs(process.argv.slice(2));
  const abort = new AbortController();
  process.once("SIGINT", () => {
    process.stderr.write("crash harness: interrupted; finishing this kill and cleaning up\n");
    abort.abort();
  });
  runCrashLoop({ ...args, signal: abort.signal, log: args.verbose ? (l) => process.stderr.write(l + "\n") : (l) => (l.startsWith("VIOLATION") ? process.stderr.write(l + "\n") : undefined) }).then(
    (r) => {
      if (r.violations.length > 0) process.stdout.write(`violations:\n${formatViolations(r.violations, 200)}\n`);
      process.stdout.write(r.summary + "\n");
      process.exitCode = r.violations.length > 0 ? 1 : 0;
    },
    (err: unknown) => {
      process.stderr.write(`crash harness: ${(err as Error).stack ?? String(err)}\n`);
      process.exitCode = 2;
    },
  );
}
