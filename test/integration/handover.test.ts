// Live handover (`netslot upgrade`) on real slots: a new daemon process takes the listening
// socket, the pool and every lease from the running one while clients cycle leases, a guest
// stand-in on a leased slot pings out and holds a TCP connection. Zero failed requests, at
// most 2 lost pings, nothing rebuilt. A new daemon that cannot start leaves the old serving.
// Keep-alive clients (the 0.1.0 SDK among them) that idle between requests see no failure
// across repeated handovers whose old daemon is kept busy for seconds (a large pool's).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { cleanupServing, CLI, REPO_ROOT, createUpstream, isRoot, nsExec, sh, startDaemon, testPrefix, waitFor, type DaemonHandle, type Upstream, skipUnless } from "../support/env.js";
import { run, startGuestStandIn, type GuestStandIn } from "../support/guest.js";
import { NetslotClient } from "../../src/sdk/index.js";
import type { Lease, UpgradeResult } from "../../src/core/types.js";
import { packageVersion } from "../../src/core/version.js";
import { pidFilePath } from "../../src/daemon/pidfile.js";

const skip = skipUnless(isRoot(), "needs root");

function daemonPid(stateDir: string): number {
  return Number(fs.readFileSync(pidFilePath(stateDir), "utf8").trim());
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Identity of a slot's kernel objects: the namespace's inode and tap0's ifindex change when it is rebuilt. */
function slotIdentity(netnsPath: string): string {
  const ino = fs.statSync(netnsPath).ino;
  const tap = JSON.parse(nsExec(netnsPath.split("/").pop()!, ["ip", "-j", "link", "show", "tap0"])) as Array<{ ifindex: number }>;
  return `${ino}/${tap[0]!.ifindex}`;
}

interface Load {
  stop(): Promise<{ ok: number; failures: string[] }>;
}

/** `clients` SDK clients (keep-alive) cycling acquire → release, plus one polling on a fresh connection each time. */
function startLoad(socket: string, clients: number): Load {
  let running = true;
  let ok = 0;
  const failures: string[] = [];
  const loops = Array.from({ length: clients }, async (_, i) => {
    const client = new NetslotClient({ socketPath: socket });
    try {
      while (running) {
        try {
          const lease = await client.acquire({ autoRenew: false, labels: { load: String(i) } });
          await client.release(lease.id);
          ok += 2;
        } catch (err) {
          const e = err as Error & { code?: string };
          // An exhausted pool is the daemon working as designed under this load, not a failure.
          if (e.code === "pool_exhausted") await new Promise((r) => setTimeout(r, 20));
          else failures.push(`client ${i}: ${e.message}`);
        }
      }
    } finally {
      client.close();
    }
  });
  const fresh = (async () => {
    while (running) {
      const client = new NetslotClient({ socketPath: socket });
      try {
        await client.pool();
        ok++;
      } catch (err) {
        failures.push(`fresh connection: ${(err as Error).message}`);
      } finally {
        client.close();
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  return {
    async stop() {
      running = false;
      await Promise.all([...loops, fresh]);
      return { ok, failures };
    },
  };
}

/** The part of an SDK (this one or 0.1.0) the keep-alive load uses. */
interface AnySdkClient {
  acquire(opts: { autoRenew: false; labels?: Record<string, string> }): Promise<{ id: string }>;
  release(id: string): Promise<unknown>;
  close(): void;
}

/** The 0.1.0 SDK, unpacked as an installed package and loaded by its name (as compat.test.ts does). */
async function loadOldSdk(dir: string): Promise<new (opts: { socketPath: string }) => AnySdkClient> {
  const installed = path.join(dir, "node_modules", "netslot");
  fs.mkdirSync(installed, { recursive: true });
  sh("tar", ["-xzf", path.join(REPO_ROOT, "test", "fixtures", "netslot-0.1.0.tgz"), "-C", installed, "--strip-components=1"]);
  fs.writeFileSync(path.join(dir, "consumer.mjs"), 'export * from "netslot";\n');
  const sdk = (await import(pathToFileURL(path.join(dir, "consumer.mjs")).href)) as { NetslotClient: new (opts: { socketPath: string }) => AnySdkClient };
  return sdk.NetslotClient;
}

/**
 * Keep-alive clients that pause 3.5–6.5 s between requests, so that their connections sit
 * idle across the daemon's keep-alive timeout (5 s) at every phase of a handover; the 0.1.0
 * SDK keeps idle connections until the daemon closes them.
 */
function startIdleLoad(clients: Array<{ name: string; client: AnySdkClient }>): Load {
  let running = true;
  let ok = 0;
  const failures: string[] = [];
  const loops = clients.map(async ({ name, client }, i) => {
    const pause = () => new Promise((r) => setTimeout(r, 3_500 + Math.random() * 3_000));
    while (running) {
      try {
        const lease = await client.acquire({ autoRenew: false, labels: { idle: String(i) } });
        await pause();
        await client.release(lease.id);
        ok += 2;
      } catch (err) {
        const e = err as Error & { code?: string };
        // An exhausted pool is an answer too (and the connection's next reuse follows).
        if (e.code === "pool_exhausted") ok++;
        else failures.push(`${name}: ${e.message}`);
      }
      await pause();
    }
  });
  return {
    async stop() {
      running = false;
      await Promise.all(loops);
      return { ok, failures };
    },
  };
}

/** A TCP echo server in the upstream namespace. */
function startEchoServer(netns: string, port: number): ChildProcess {
  const script = `require("net").createServer((s) => { s.on("error", () => {}); s.pipe(s); }).listen(${port}, "0.0.0.0", () => console.log("ready"));`;
  return spawn("ip", ["netns", "exec", netns, process.execPath, "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
}

/** Runs in the guest: one TCP connection, a line every 100 ms for `ms`; exit 0 only if it stayed up and every line came back. */
function tcpHoldScript(address: string, port: number, ms: number): string {
  return `
const s = require("net").connect(${port}, "${address}");
let sent = 0, got = 0, done = false;
s.on("data", (d) => { got += d.length; });
s.on("error", (e) => { if (!done) { console.log("error " + e.message); process.exit(1); } });
s.on("close", () => { if (!done) { console.log("closed early after " + sent + " lines"); process.exit(1); } });
s.on("connect", () => {
  const t = setInterval(() => { s.write("x\\n"); sent += 2; }, 100);
  setTimeout(() => { clearInterval(t); setTimeout(() => { done = true; console.log("sent " + sent + " got " + got); s.end(); process.exit(got === sent ? 0 : 1); }, 1000); }, ${ms});
});`;
}

describe("handover: netslot upgrade", { skip }, () => {
  const prefix = testPrefix();
  const POOL = 12;
  let upstream: Upstream;
  let daemon: DaemonHandle;
  let client: NetslotClient;
  let guest: GuestStandIn | undefined;
  let echo: ChildProcess | undefined;

  before(async () => {
    upstream = createUpstream(prefix);
    daemon = await startDaemon({ prefix, uplink: upstream.uplink, poolSize: POOL });
    client = new NetslotClient({ socketPath: daemon.socket });
  });

  after(async () => {
    client?.close();
    await guest?.stop();
    echo?.kill("SIGKILL");
    await cleanupServing(daemon);
    upstream?.remove();
  });

  async function upgrade(args: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
    return run([process.execPath, CLI, "upgrade", "--json", "--socket", daemon.socket, ...(args.length ? ["--", ...args] : [])], { timeoutMs: 180_000 });
  }

  it("a new daemon that cannot start leaves the old one serving, and the command fails with its error", async () => {
    const pid = daemon.process.pid!;
    const held = await client.acquire({ autoRenew: false });
    const bad = await upgrade(["--pool-size", "many"]);
    assert.notEqual(bad.code, 0, bad.stdout);
    assert.match(bad.stderr, /upgrade_failed/);
    assert.match(bad.stderr, /--pool-size:? must be a whole number/, "the new daemon's own error is shown");
    const fixed = await upgrade(["--socket", "/tmp/elsewhere.sock"]);
    assert.notEqual(fixed.code, 0);
    assert.match(fixed.stderr, /--socket cannot change in an upgrade/);
    assert.equal(daemonPid(daemon.stateDir), pid, "the old daemon still owns the state dir");
    assert.equal(daemon.process.exitCode, null);
    assert.equal((await client.health()).status, "ready");
    assert.ok((await client.list()).some((l) => l.id === held.id), "its leases are untouched");
    await client.withSlot({ autoRenew: false }, () => undefined);
    await client.release(held.id);
  });

  it("hands over under load: zero failed requests, every lease adopted, nothing rebuilt, the guest keeps its network", async (t) => {
    const leased: Lease = await client.acquire({ autoRenew: false, bindToProcess: false, labels: { keep: "yes" } });
    const other = await client.acquire({ autoRenew: false });
    const free = other.slot;
    await client.release(other.id);
    await waitFor(async () => (await client.pool()).free === POOL - 1, 30_000);
    const before = { leased: slotIdentity(leased.slot.netns), free: slotIdentity(free.netns) };

    guest = await startGuestStandIn({ slotNetnsPath: leased.slot.netns, name: `${prefix}-g`, mtu: leased.guest.mtu });
    echo = startEchoServer(upstream.netns, 9000);
    await new Promise<void>((resolve) => echo!.stdout!.once("data", () => resolve()));
    // ~40 pings at 0.2 s and a TCP connection across the whole handover.
    const ping = guest.exec(["ping", "-n", "-i", "0.2", "-w", "9", "-W", "1", upstream.address], { timeoutMs: 20_000 });
    const tcp = guest.exec([process.execPath, "-e", tcpHoldScript(upstream.address, 9000, 7_000)], { timeoutMs: 20_000 });

    const load = startLoad(daemon.socket, 4);
    await new Promise((r) => setTimeout(r, 1_500));
    const oldPid = daemon.process.pid!;
    const oldExited = new Promise<void>((resolve) => daemon.process.once("exit", () => resolve()));
    const result = await upgrade();
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}\n${daemon.output().slice(-3000)}`);
    const r = JSON.parse(result.stdout) as UpgradeResult;
    assert.equal(r.previous.pid, oldPid);
    assert.notEqual(r.current.pid, oldPid);
    assert.equal(r.current.version, packageVersion());
    await new Promise((r2) => setTimeout(r2, 1_500));
    const { ok, failures } = await load.stop();
    assert.deepEqual(failures.slice(0, 10), [], `no request failed (${failures.length} did)\n${daemon.output().slice(-4000)}`);
    assert.ok(ok > 50, `the load ran (${ok} requests)`);

    assert.equal(daemonPid(daemon.stateDir), r.current.pid, "the new daemon owns the state dir");
    await Promise.race([oldExited, new Promise((_, reject) => setTimeout(() => reject(new Error("the old daemon did not exit")), 40_000))]);
    assert.equal(daemon.process.exitCode, 0, "the old daemon exits cleanly");
    assert.ok(alive(r.current.pid));

    const health = await client.health();
    assert.equal(health.status, "ready");
    assert.equal(health.pool.size, POOL);
    const kept = await client.get(leased.id);
    assert.deepEqual(kept.labels, { keep: "yes" });
    assert.equal(kept.slot.index, leased.slot.index);
    assert.equal(slotIdentity(leased.slot.netns), before.leased, "the leased slot was adopted, not rebuilt");
    assert.equal(slotIdentity(free.netns), before.free, "free slots were adopted, not rebuilt");
    assert.match(daemon.output(), /took over from pid/);

    const pinged = await ping;
    const m = /(\d+) packets transmitted, (\d+) received/.exec(pinged.stdout);
    assert.ok(m, pinged.stdout + pinged.stderr);
    const lost = Number(m[1]) - Number(m[2]);
    assert.ok(Number(m[1]) >= 30, pinged.stdout);
    assert.ok(lost <= 2, `lost ${lost} of ${m[1]} pings:\n${pinged.stdout}`);
    t.diagnostic(`handover ${r.handoverMs.toFixed(0)} ms, requests held ${r.heldMs.toFixed(0)} ms; ${ok} requests by 5 clients, none failed; guest lost ${lost} of ${m[1]} pings`);
    const held = await tcp;
    assert.equal(held.code, 0, `the TCP connection survived: ${held.stdout}${held.stderr}`);
    await client.release(leased.id);
  });
});

describe("handover: idle keep-alive clients, the 0.1.0 SDK among them, with the old daemon busy", { skip }, () => {
  const prefix = testPrefix();
  const POOL = 8;
  /** The old daemon's event loop blocked this long in each handoff (NETSLOT_TEST_HANDOVER_HOLD_MS). */
  const HOLD_MS = 6_000;
  let upstream: Upstream;
  let daemon: DaemonHandle;
  let dir: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "netslot-handover-"));
    upstream = createUpstream(prefix);
    daemon = await startDaemon({ prefix, uplink: upstream.uplink, poolSize: POOL, env: { NETSLOT_TEST_HANDOVER_HOLD_MS: String(HOLD_MS) } });
  });

  after(async () => {
    await cleanupServing(daemon);
    upstream?.remove();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("three handovers in a row: no request fails, every old daemon exits once its clients are gone", async (t) => {
    const OldClient = await loadOldSdk(dir);
    const clients = [
      ...Array.from({ length: 14 }, (_, i) => ({ name: `sdk ${i}`, client: new NetslotClient({ socketPath: daemon.socket }) })),
      ...Array.from({ length: 10 }, (_, i) => ({ name: `0.1.0 sdk ${i}`, client: new OldClient({ socketPath: daemon.socket }) })),
    ];
    const load = startIdleLoad(clients);
    const results: UpgradeResult[] = [];
    try {
      await new Promise((r) => setTimeout(r, 5_000));
      for (let i = 0; i < 3; i++) {
        const result = await run([process.execPath, CLI, "upgrade", "--json", "--socket", daemon.socket], { timeoutMs: 180_000 });
        assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}\n${daemon.output().slice(-3000)}`);
        results.push(JSON.parse(result.stdout) as UpgradeResult);
        await new Promise((r) => setTimeout(r, 4_000));
      }
      await new Promise((r) => setTimeout(r, 4_000));
    } finally {
      const { ok, failures } = await load.stop();
      for (const c of clients) c.client.close();
      assert.deepEqual(failures.slice(0, 10), [], `no request failed (${failures.length} did)\n${daemon.output().slice(-4000)}`);
      assert.ok(ok > 40, `the load ran (${ok} requests)`);
      t.diagnostic(`${ok} requests by ${clients.length} keep-alive clients (10 on the 0.1.0 SDK) across 3 handovers, none failed; held ${results.map((r) => r.heldMs.toFixed(0)).join("/")} ms`);
    }
    for (const r of results) assert.ok(r.heldMs >= HOLD_MS, `requests were held ${r.heldMs} ms`);
    // Each old daemon leaves once its clients dropped their idle connections (announced 5 s).
    for (const r of results) await waitFor(() => !alive(r.previous.pid), 30_000);
    assert.equal(daemonPid(daemon.stateDir), results[2]!.current.pid);
  });
});
