// Many consumers on one real daemon: authorised VNIs, quotas and reservations, the operator
// role (force-release, all leases, drain), a health route that leaks nothing, owners named
// by the kernel (a client in its own PID namespace; ownerPid: 1 refused), a non-root
// consumer recognised by its uid over a --socket-group socket, and the audit log.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { NetslotApiError, NetslotClient, type Lease } from "../../src/sdk/index.js";
import type { ErrorCode } from "../../src/core/errors.js";
import { CLI, REPO_ROOT, createUpstream, isRoot, startDaemon, testPrefix, waitFor, type DaemonHandle, type Upstream, skipUnless } from "../support/env.js";

const skip = skipUnless(isRoot(), "needs root");
const POOL = 6;
const NOBODY = 65534;
const TOKENS = { lambda: "tok-lambda-0123456789", dsql: "tok-dsql-0123456789ab", ops: "tok-ops-0123456789abcd" };
const CONSUMERS = [
  { name: "lambda", token: TOKENS.lambda, vnis: ["100-199", "4242"], quota: { reserved: 1, max: 3 } },
  { name: "dsql", token: TOKENS.dsql, quota: { reserved: 2 }, priority: 1 },
  { name: "ops", token: TOKENS.ops, role: "operator" },
  { name: "batch", uids: [NOBODY], quota: { max: 1 } },
];

async function refused(promise: Promise<unknown>, code: ErrorCode): Promise<NetslotApiError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof NetslotApiError, String(err));
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}`);
}

function rawGet(socketPath: string, urlPath: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: urlPath, agent: false }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

interface ClientRun {
  ok: boolean;
  pid: number;
  lease?: Lease;
  code?: string;
}

describe("tenancy on a real daemon", { skip }, () => {
  const prefix = testPrefix();
  let upstream: Upstream | undefined;
  let daemon: DaemonHandle | undefined;
  let dir = "";
  let script = "";
  const clients: Record<string, NetslotClient> = {};
  const as = (name: keyof typeof TOKENS): NetslotClient => clients[name]!;

  /** Runs the SDK in another process (`wrap` puts it in a PID namespace or under another uid); resolves with its first line. */
  function runClient(wrap: string[], env: Record<string, string>, hold: boolean): Promise<{ result: ClientRun; kill: () => void }> {
    const [cmd, ...args] = [...wrap, process.execPath, script];
    const child = spawn(cmd, args, { env: { ...process.env, SOCK: daemon!.socket, ...(hold ? { HOLD: "1" } : {}), ...env }, stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let errText = "";
    child.stderr.on("data", (d: Buffer) => (errText += d.toString()));
    return new Promise((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        const nl = out.indexOf("\n");
        if (nl >= 0) resolve({ result: JSON.parse(out.slice(0, nl)) as ClientRun, kill: () => child.kill("SIGKILL") });
      });
      child.once("exit", (code) => reject(new Error(`client exited ${code} before answering: ${errText}`)));
    });
  }

  async function allFree(): Promise<void> {
    await waitFor(async () => (await as("ops").pool()).free === POOL, 30_000);
  }

  function auditEvents(): Record<string, unknown>[] {
    return daemon!
      .output()
      .split("\n")
      .filter((line) => line.includes('"msg":"audit"'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  }

  before(async () => {
    upstream = createUpstream(prefix);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), `netslot-${prefix}-tenancy-`));
    fs.chmodSync(dir, 0o755);
    const config = path.join(dir, "config.json");
    fs.writeFileSync(config, JSON.stringify({ consumers: CONSUMERS }));
    script = path.join(dir, "client.mjs");
    fs.writeFileSync(
      script,
      `import { NetslotClient } from ${JSON.stringify(path.join(REPO_ROOT, "dist", "src", "sdk", "index.js"))};
const client = new NetslotClient({ socketPath: process.env.SOCK, ...(process.env.TOKEN ? { token: process.env.TOKEN } : {}) });
try {
  const lease = await client.acquire(JSON.parse(process.env.REQ ?? "{}"));
  process.stdout.write(JSON.stringify({ ok: true, pid: process.pid, lease }) + "\\n");
} catch (e) {
  process.stdout.write(JSON.stringify({ ok: false, pid: process.pid, code: e.code ?? String(e) }) + "\\n");
}
if (process.env.HOLD) process.stdin.resume();
else client.close();
`,
      { mode: 0o644 },
    );
    daemon = await startDaemon({
      prefix,
      uplink: upstream.uplink,
      poolSize: POOL,
      vtepRemote: upstream.address,
      extraArgs: ["--config", config, "--socket-group", String(NOBODY)],
    });
    // The socket's directory is the test's own temp dir: let `nobody` reach the socket in it.
    fs.chmodSync(path.dirname(daemon.socket), 0o755);
    for (const name of Object.keys(TOKENS) as (keyof typeof TOKENS)[]) {
      clients[name] = new NetslotClient({ socketPath: daemon.socket, token: TOKENS[name] });
    }
    await allFree();
  });

  after(async () => {
    for (const c of Object.values(clients)) c.close();
    await daemon?.cleanup();
    upstream?.remove();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("refuses reservations larger than the pool: one line, exit non-zero", () => {
    const bad = path.join(dir, "bad.json");
    fs.writeFileSync(bad, JSON.stringify({ consumers: [{ name: "a", token: TOKENS.lambda, quota: { reserved: 5 } }, { name: "b", token: TOKENS.dsql, quota: { reserved: 4 } }] }));
    const r = spawnSync(process.execPath, [CLI, "daemon", "--config", bad, "--pool-size", "8", "--prefix", `${prefix}x`], { encoding: "utf8" });
    assert.notEqual(r.status, 0);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, /reserve 9 slots in total, more than the pool's 8/);
  });

  it("a VNI outside the consumer's list is refused and the pool is unchanged", async () => {
    const before = await as("ops").pool();
    await refused(as("lambda").acquire({ network: { vni: 200, cidr: "10.50.0.0/16" } }), "network_forbidden");
    await refused(as("dsql").acquire({ network: { vni: 150, cidr: "10.50.0.0/16" } }), "network_forbidden");
    const after = await as("ops").pool();
    assert.deepEqual([after.free, after.leased, after.scrubbing], [before.free, before.leased, before.scrubbing]);
    const lease = await as("lambda").acquire({ network: { vni: 4242, cidr: "10.50.0.0/16" } });
    assert.equal(lease.network?.vni, 4242);
    await as("lambda").release(lease.id);
    await allFree();
  });

  it("max caps a consumer (429 quota_exceeded) and reserved slots stay for their consumer", async () => {
    const lambda = [];
    for (let i = 0; i < 3; i++) lambda.push(await as("lambda").acquire({ labels: { n: String(i) } }));
    const over = await refused(as("lambda").acquire(), "quota_exceeded");
    assert.equal(over.status, 429);
    assert.ok(over.retryAfter !== undefined && over.retryAfter >= 1);
    // 3 free, 2 of them reserved for dsql: ops (no reservation) gets one, then pool_exhausted.
    const ops = await as("ops").acquire();
    const exhausted = await refused(as("ops").acquire(), "pool_exhausted");
    assert.match(exhausted.detail, /reserved for other consumers/);
    assert.equal((await as("ops").pool()).free, 2);
    const dsql = [await as("dsql").acquire(), await as("dsql").acquire()];
    const usage = Object.fromEntries((await as("ops").pool()).consumers.map((c) => [c.name, c]));
    assert.deepEqual(usage["lambda"], { name: "lambda", leased: 3, reserved: 1, max: 3 });
    assert.deepEqual(usage["dsql"], { name: "dsql", leased: 2, reserved: 2, max: null });
    // A consumer sees only its own use.
    assert.deepEqual(
      (await as("dsql").pool()).consumers.map((c) => c.name),
      ["dsql"],
    );
    for (const l of [...lambda, ...dsql]) await (l.consumer === "lambda" ? as("lambda") : as("dsql")).release(l.id);
    await as("ops").release(ops.id);
    await allFree();
  });

  it("waiting requests (waitSeconds) are served by priority as slots return; a wait that runs out answers the refusal", async () => {
    const lambda = [await as("lambda").acquire(), await as("lambda").acquire(), await as("lambda").acquire()];
    const held = [await as("dsql").acquire(), await as("dsql").acquire(), await as("ops").acquire()];
    assert.equal((await as("ops").pool()).free, 0);
    const t = Date.now();
    await refused(as("lambda").acquire({ waitSeconds: 1 }), "quota_exceeded");
    assert.ok(Date.now() - t >= 900, "it waited");
    const order: string[] = [];
    // ops (priority 0) asks first, dsql (priority 1) second: dsql is served first.
    const opsWait = as("ops")
      .acquire({ waitSeconds: 20 })
      .then((l) => (order.push("ops"), l));
    await new Promise((r) => setTimeout(r, 100));
    const dsqlWait = as("dsql")
      .acquire({ waitSeconds: 20 })
      .then((l) => (order.push("dsql"), l));
    await new Promise((r) => setTimeout(r, 100));
    await as("lambda").release(lambda[0]!.id);
    const first = await dsqlWait;
    assert.deepEqual(order, ["dsql"]);
    await as("lambda").release(lambda[1]!.id);
    const second = await opsWait;
    assert.deepEqual(order, ["dsql", "ops"]);
    for (const l of [first, second, ...held]) await (l.consumer === "dsql" ? as("dsql") : as("ops")).release(l.id);
    await as("lambda").release(lambda[2]!.id);
    await allFree();
  });

  it("consumers get 403 on operator routes; the operator's force-release works and is remembered", async () => {
    const lease = await as("lambda").acquire();
    await refused(as("lambda").list({ all: true }), "forbidden");
    await refused(as("lambda").releaseQuarantined(0), "forbidden");
    await refused(as("lambda").drain(), "forbidden");
    await refused(as("lambda").undrain(), "forbidden");
    await refused(as("dsql").release(lease.id), "lease_not_found");
    assert.ok((await as("ops").list({ all: true })).some((l) => l.id === lease.id));
    await as("ops").release(lease.id);
    const gone = await refused(as("lambda").get(lease.id), "lease_not_found");
    assert.equal(gone.ended?.cause, "force_released");
    assert.equal(gone.ended?.by, "ops");
    const notTheirs = await refused(as("dsql").get(lease.id), "lease_not_found");
    assert.equal(notTheirs.ended, undefined, "another consumer learns nothing about the lease");
    const force = auditEvents().find((e) => e["event"] === "force_release" && e["lease"] === lease.id);
    assert.ok(force, daemon!.output());
    assert.equal(force["consumer"], "lambda");
    assert.equal(force["by"], "ops");
    assert.equal(typeof force["slot"], "number");
    assert.ok(auditEvents().some((e) => e["event"] === "grant" && e["lease"] === lease.id && e["consumer"] === "lambda"));
    await allFree();
  });

  it("drain: new leases get 503 draining while existing ones run on; undrain", async () => {
    const held = await as("dsql").acquire();
    assert.deepEqual(await as("ops").drain(), { draining: true });
    const draining = await refused(as("lambda").acquire(), "draining");
    assert.equal(draining.status, 503);
    assert.ok(draining.retryAfter !== undefined);
    assert.equal((await as("dsql").get(held.id)).id, held.id);
    assert.equal((await as("ops").health()).draining, true);
    const cli = spawnSync(process.execPath, [CLI, "undrain", "--socket", daemon!.socket], { encoding: "utf8", env: { ...process.env, NETSLOT_TOKEN: TOKENS.ops } });
    assert.equal(cli.status, 0, cli.stderr);
    const status = spawnSync(process.execPath, [CLI, "status", "--socket", daemon!.socket], { encoding: "utf8", env: { ...process.env, NETSLOT_TOKEN: TOKENS.ops } });
    assert.match(status.stdout, /^ {2}dsql +1 leased, 2 reserved, max none$/m, status.stdout);
    await as("dsql").release(held.id);
    await as("lambda").release((await as("lambda").acquire()).id);
    assert.ok(auditEvents().some((e) => e["event"] === "drain" && e["by"] === "ops"));
    await allFree();
  });

  it("unauthenticated health answers status and counts only", async () => {
    const res = await rawGet(daemon!.socket, "/v1/health");
    assert.equal(res.status, 200);
    const health = JSON.parse(res.body) as Record<string, unknown>;
    assert.deepEqual(Object.keys(health).sort(), ["draining", "pool", "status", "version"]);
    assert.deepEqual(Object.keys(health["pool"] as object).sort(), ["built", "free", "leased", "missing", "quarantined", "scrubbing", "size"]);
    for (const secret of ["lambda", "dsql", "reason", "pid"]) assert.doesNotMatch(res.body, new RegExp(secret));
    assert.equal((await rawGet(daemon!.socket, "/v1/pool")).status, 401);
  });

  it("owner caller from its own PID namespace binds the kernel's pid; the lease ends when it exits; ownerPid 1 is refused", async () => {
    await refused(as("lambda").acquire({ ownerPid: 1 }), "owner_forbidden");
    const { result, kill } = await runClient(["unshare", "--pid", "--fork", "--kill-child"], { TOKEN: TOKENS.lambda }, true);
    try {
      assert.ok(result.ok, JSON.stringify(result));
      assert.equal(result.pid, 1, "the client is pid 1 of its own namespace");
      const ownerPid = result.lease!.ownerPid!;
      assert.notEqual(ownerPid, 1);
      // The host pid the daemon bound is that very process: its NSpid ends in 1.
      assert.match(fs.readFileSync(`/proc/${ownerPid}/status`, "utf8"), new RegExp(`^NSpid:\\s+${ownerPid}\\s+1$`, "m"));
      assert.equal((await as("lambda").get(result.lease!.id)).ownerPid, ownerPid);
      process.kill(ownerPid, "SIGKILL");
      await waitFor(async () => {
        try {
          await as("lambda").get(result.lease!.id);
          return false;
        } catch (err) {
          return err instanceof NetslotApiError && err.ended?.cause === "owner_exited";
        }
      }, 10_000);
      assert.ok(auditEvents().some((e) => e["event"] === "owner_exit" && e["lease"] === result.lease!.id));
    } finally {
      kill();
    }
    await allFree();
  });

  it("a non-root consumer matched by uid leases over the socket without a token", async () => {
    const { result } = await runClient(["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups"], {}, false);
    assert.ok(result.ok, JSON.stringify(result));
    assert.equal(result.lease!.consumer, "batch");
    assert.equal(result.lease!.ownerPid, result.pid);
    // Its process has exited: the lease it was bound to ends.
    await waitFor(async () => (await as("ops").list({ all: true })).every((l) => l.id !== result.lease!.id), 10_000);
    const socket = fs.statSync(daemon!.socket);
    assert.equal(socket.gid, NOBODY);
    assert.equal(socket.mode & 0o777, 0o660);
    await allFree();
  });
});
