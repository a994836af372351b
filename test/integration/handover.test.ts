// Live handover (`netslot upgrade`) on real slots: a new daemon process takes the listening
// socket, the pool and every lease from the running one while clients cycle leases, a guest
// stand-in on a leased slot pings out and holds a TCP connection. Zero failed requests, at
// most 2 lost pings, nothing rebuilt. A new daemon that cannot start leaves the old serving.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import { CLI, createUpstream, isRoot, nsExec, startDaemon, testPrefix, waitFor, type DaemonHandle, type Upstream, skipUnless } from "../support/env.js";
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
    // The daemon serving now may be a process this test did not start.
    if (daemon) {
      try {
        const pid = daemonPid(daemon.stateDir);
        if (pid !== daemon.process.pid && alive(pid)) process.kill(pid, "SIGKILL");
      } catch {
        // No pid file: nothing else runs.
      }
      await daemon.cleanup();
    }
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
    assert.match(bad.stderr, /--pool-size must be a whole number/, "the new daemon's own error is shown");
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
