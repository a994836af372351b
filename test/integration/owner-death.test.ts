// Leases bound to a process (ownerPid) end when that process dies: while the daemon runs
// (within a second, via pidfd), and when it died while the daemon was down (at restart).
import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { NetslotApiError } from "../../src/sdk/index.js";
import { daemonSuite, REPO_ROOT, isRoot, waitFor, skipUnless } from "../support/env.js";

const skip = skipUnless(isRoot(), "needs root");
const POOL = 4;

interface Owner {
  child: ChildProcess;
  pid: number;
  ids: string[];
}

describe("owner death", { skip }, () => {
  let scriptDir = "";
  let script = "";
  const owners: Owner[] = [];
  const { prefix, daemon, restart } = daemonSuite({
    poolSize: POOL,
    teardown: () => {
      for (const o of owners) o.child.kill("SIGKILL");
      if (scriptDir) fs.rmSync(scriptDir, { recursive: true, force: true });
    },
  });

  before(() => {
    scriptDir = fs.mkdtempSync(path.join(os.tmpdir(), `netslot-${prefix}-owner-`));
    script = path.join(scriptDir, "owner.mjs");
    // The consumer: two leases bound to its own pid (the SDK's default), ids on stdout, then sleep.
    fs.writeFileSync(
      script,
      `import { NetslotClient } from ${JSON.stringify(path.join(REPO_ROOT, "dist", "src", "sdk", "index.js"))};
const client = new NetslotClient({ socketPath: process.argv[2] });
const ids = [];
for (let i = 0; i < 2; i++) ids.push((await client.acquire({ bindToProcess: true, labels: { owner: "child" } })).id);
process.stdout.write(JSON.stringify(ids) + "\\n");
setInterval(() => {}, 1 << 30);
`,
    );
  });

  /** Starts an owner process and waits for its two lease ids. */
  async function startOwner(): Promise<Owner> {
    const child = spawn(process.execPath, [script, daemon.socket], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const owner: Owner = { child, pid: child.pid!, ids: [] };
    owners.push(owner);
    await waitFor(() => out.includes("\n"), 10_000, { abort: () => child.exitCode !== null }).catch((e: unknown) => {
      throw new Error(`owner process gave no lease ids: ${(e as Error).message}\n${out}${err}`);
    });
    owner.ids = JSON.parse(out.trim()) as string[];
    assert.equal(owner.ids.length, 2);
    return owner;
  }

  async function killOwner(owner: Owner): Promise<number> {
    const gone = new Promise<void>((r) => owner.child.once("exit", () => r()));
    owner.child.kill("SIGKILL");
    await gone;
    return performance.now();
  }

  async function isGone(id: string): Promise<boolean> {
    try {
      await daemon.client.get(id);
      return false;
    } catch (err) {
      if (err instanceof NetslotApiError && err.status === 404) return true;
      throw err;
    }
  }

  async function allFree(): Promise<boolean> {
    const pool = await daemon.client.pool();
    return pool.free === POOL && pool.scrubbing === 0 && pool.leased === 0;
  }

  it("SIGKILL of the owner: its leases are gone and the slots free again within 1 s", async () => {
    const owner = await startOwner();
    for (const id of owner.ids) {
      const lease = await daemon.client.get(id);
      assert.equal(lease.ownerPid, owner.pid);
    }
    assert.equal((await daemon.client.pool()).leased, 2);
    const killedAt = await killOwner(owner);
    await waitFor(async () => (await isGone(owner.ids[0]!)) && (await isGone(owner.ids[1]!)) && (await allFree()), 1000).catch((err: unknown) => {
      throw new Error(`leases of the dead owner still there after 1 s: ${(err as Error).message}`);
    });
    const ms = performance.now() - killedAt;
    assert.ok(ms <= 1000, `took ${ms.toFixed(0)} ms`);
    process.stdout.write(`owner death → slots free again in ${ms.toFixed(0)} ms\n`);
  });

  it("an ownerPid that is no process: 400 invalid_request at /ownerPid", async () => {
    const pidMax = Number(fs.readFileSync("/proc/sys/kernel/pid_max", "utf8"));
    let pid = pidMax - 1;
    while (fs.existsSync(`/proc/${pid}`)) pid--;
    await assert.rejects(
      daemon.client.acquire({ ownerPid: pid, autoRenew: false }),
      (err: unknown) => err instanceof NetslotApiError && err.status === 400 && err.code === "invalid_request" && err.field === "/ownerPid",
    );
    assert.ok(await allFree(), "nothing was leased");
  });

  it("a daemon restart while the owner lives keeps its leases; its death afterwards still ends them", async () => {
    const owner = await startOwner();
    await daemon.kill9();
    await restart();
    for (const id of owner.ids) assert.equal((await daemon.client.get(id)).ownerPid, owner.pid, `lease ${id} kept`);
    // And once more with a clean stop.
    await daemon.stop();
    await restart();
    for (const id of owner.ids) assert.equal((await daemon.client.get(id)).ownerPid, owner.pid, `lease ${id} kept`);
    const killedAt = await killOwner(owner);
    await waitFor(async () => (await isGone(owner.ids[0]!)) && (await isGone(owner.ids[1]!)) && (await allFree()), 1000);
    assert.ok(performance.now() - killedAt <= 1000);
  });

  it("the owner dies while the daemon is down: the restarted daemon ends its leases", async () => {
    const owner = await startOwner();
    await daemon.kill9();
    await killOwner(owner);
    await restart();
    const readyAt = performance.now();
    await waitFor(async () => (await isGone(owner.ids[0]!)) && (await isGone(owner.ids[1]!)) && (await allFree()), 1000);
    process.stdout.write(`dead owner's leases ended ${(performance.now() - readyAt).toFixed(0)} ms after ready\n`);
  });
});
