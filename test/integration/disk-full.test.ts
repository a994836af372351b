// The daemon with its state dir on a full filesystem (a small tmpfs filled with dd): a new
// lease cannot be committed, so it is refused with 503 store_unavailable; nothing leaks,
// the daemon stays up, and once space is back everything works again.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { checkInvariants } from "../../src/pool/invariants.js";
import { openApiDocument } from "../../src/api/openapi.js";
import { raw as rawRequest, ResponseChecker } from "../support/api-check.js";
import { NetslotApiError, type Lease, type PoolCounts } from "../../src/sdk/index.js";
import { REPO_ROOT, createUpstream, isRoot, sh, startDaemon, testPrefix, waitFor, type DaemonHandle, type Upstream, skipUnless } from "../support/env.js";

const skip = skipUnless(isRoot(), "needs root (mount)");
const POOL = 4;

interface RawAnswer {
  status: number;
  contentType: string | undefined;
  retryAfter: string | undefined;
  body: Record<string, unknown>;
}

// Every raw answer is also checked against the OpenAPI document: this file is where
// store_unavailable is provoked on a real daemon (test/integration/api-schema.test.ts counts on it).
const checker = new ResponseChecker(openApiDocument());

/** One request over the unix socket, answer unparsed by the SDK, checked against the document. */
async function raw(socketPath: string, method: string, urlPath: string, body?: unknown): Promise<RawAnswer> {
  const res = await rawRequest(socketPath, method, urlPath, body === undefined ? {} : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  checker.check(method, urlPath, res);
  return {
    status: res.status,
    contentType: res.headers["content-type"],
    retryAfter: res.headers["retry-after"],
    body: (res.json ?? {}) as Record<string, unknown>,
  };
}

/** 64 labels of 250 characters: every lease needs several new WAL pages. */
function bigLabels(tag: string): Record<string, string> {
  return Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`k${i}`, `${tag}-${"x".repeat(240)}`]));
}

function counts(p: PoolCounts): string {
  return JSON.stringify({ free: p.free, leased: p.leased, scrubbing: p.scrubbing, quarantined: p.quarantined, missing: p.missing });
}

describe("disk full under the state dir", { skip }, () => {
  const prefix = testPrefix();
  let upstream: Upstream | undefined;
  let daemon: DaemonHandle | undefined;
  let mnt = "";
  let mounted = false;
  let filler = "";
  let held: Lease;
  let ownerDir = "";
  let owner: ChildProcess | undefined;
  let ownerLease = "";

  before(async () => {
    mnt = fs.mkdtempSync(path.join(os.tmpdir(), `netslot-${prefix}-fs-`));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=4m,mode=0700", `${prefix}-tmpfs`, mnt]);
    mounted = true;
    filler = path.join(mnt, "filler");
    upstream = createUpstream(prefix);
    // startDaemon puts the socket next to the state dir: both live on the tmpfs, in a
    // directory cleanup() may remove (the mount point itself cannot be removed).
    fs.mkdirSync(path.join(mnt, "run"));
    daemon = await startDaemon({ prefix, uplink: upstream.uplink, poolSize: POOL, stateDir: path.join(mnt, "run", "state") });
  });

  after(async () => {
    owner?.kill("SIGKILL");
    if (ownerDir) fs.rmSync(ownerDir, { recursive: true, force: true });
    try {
      await daemon?.cleanup();
    } finally {
      upstream?.remove();
      if (mounted) sh("umount", ["-l", mnt], { allowFail: true });
      if (mnt) fs.rmSync(mnt, { recursive: true, force: true });
    }
  });

  function fill(): void {
    const r = spawnSync("dd", ["if=/dev/zero", `of=${filler}`, "bs=4k"], { encoding: "utf8" });
    assert.match(r.stderr, /No space left on device/, `dd did not fill ${mnt}: ${r.stderr}`);
  }

  function alive(): void {
    assert.equal(daemon!.process.exitCode, null, `daemon exited:\n${daemon!.output()}`);
    assert.equal(daemon!.process.signalCode, null, `daemon was killed:\n${daemon!.output()}`);
  }

  let poolBefore: PoolCounts;
  let expiring: Lease;

  it("a new lease is refused with 503 store_unavailable (problem+json) and nothing leaks", async () => {
    held = await daemon!.client.acquire({ bindToProcess: false, autoRenew: false, labels: { held: "yes" } });
    // Expires while the disk is full (see below).
    expiring = await daemon!.client.acquire({ bindToProcess: false, autoRenew: false, ttlSeconds: 2 });
    // A process that holds one lease bound to its pid; it dies while the disk is full.
    ownerDir = fs.mkdtempSync(path.join(os.tmpdir(), `netslot-${prefix}-owner-`));
    const script = path.join(ownerDir, "owner.mjs");
    fs.writeFileSync(
      script,
      `import { NetslotClient } from ${JSON.stringify(path.join(REPO_ROOT, "dist", "src", "sdk", "index.js"))};
const lease = await new NetslotClient({ socketPath: process.argv[2] }).acquire({ bindToProcess: true });
process.stdout.write(lease.id + "\\n");
setInterval(() => {}, 1 << 30);
`,
    );
    owner = spawn(process.execPath, [script, daemon!.socket], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    owner.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    await waitFor(() => out.includes("\n"), 10_000);
    ownerLease = out.trim();
    poolBefore = await daemon!.client.pool();
    const leasesBefore = (await daemon!.client.list()).map((l) => l.id).sort();
    fill();

    const answer = await raw(daemon!.socket, "POST", "/v1/leases", { labels: bigLabels("full") });
    assert.equal(answer.status, 503, `POST answered ${answer.status}: ${JSON.stringify(answer.body).slice(0, 300)}`);
    assert.equal(answer.contentType?.split(";")[0], "application/problem+json");
    assert.equal(answer.body.code, "store_unavailable");
    assert.equal(answer.body.status, 503);
    assert.match(String(answer.body.detail), /SQLITE_FULL|SQLITE_IOERR/);
    assert.ok(answer.retryAfter !== undefined && /^\d+$/.test(answer.retryAfter), "Retry-After is set");

    // The SDK sees the same, with a small request too.
    await assert.rejects(
      daemon!.client.acquire({ bindToProcess: false, autoRenew: false, labels: bigLabels("sdk") }),
      (err: unknown) => err instanceof NetslotApiError && err.code === "store_unavailable" && err.status === 503,
    );

    alive();
    const poolNow = await daemon!.client.pool();
    assert.equal(counts(poolNow), counts(poolBefore), "pool counts unchanged");
    assert.deepEqual((await daemon!.client.list()).map((l) => l.id).sort(), leasesBefore, "no new lease");
    assert.equal((await daemon!.client.get(held.id)).slot.index, held.slot.index, "the held lease is still there");
  });

  it("invariants hold on the full disk (or, if the check cannot open the store, right after space is back)", () => {
    let problems: string[] | undefined;
    try {
      problems = checkInvariants({ prefix, stateDir: daemon!.stateDir, linkCidr: daemon!.linkCidr, expectLeases: [held.id] });
    } catch (err) {
      // Opening the store read/write may itself need space: checked again below after freeing it.
      assert.match((err as Error).message, /store|SQLITE|ENOSPC/i);
      process.stdout.write(`check could not open the store on the full disk: ${(err as Error).message}\n`);
    }
    if (problems) assert.deepEqual(problems, []);
  });

  let deleted = false;

  it("DELETE of the held lease either works or fails cleanly with store_unavailable", async () => {
    const answer = await raw(daemon!.socket, "DELETE", `/v1/leases/${held.id}`);
    process.stdout.write(`DELETE on the full disk answered ${answer.status}${typeof answer.body.code === "string" ? ` ${answer.body.code}` : ""}\n`);
    if (answer.status === 204) {
      deleted = true;
    } else {
      assert.equal(answer.status, 503, `DELETE answered ${answer.status}: ${JSON.stringify(answer.body)}`);
      assert.equal(answer.contentType?.split(";")[0], "application/problem+json");
      assert.equal(answer.body.code, "store_unavailable");
      // Refused: the lease is still there, unchanged.
      assert.equal((await daemon!.client.get(held.id)).slot.index, held.slot.index);
      assert.equal(counts(await daemon!.client.pool()), counts(poolBefore));
    }
    alive();
  });

  it("a lease that expires while the disk is full: no crash, no busy retry loop", async () => {
    const due = Date.parse(expiring.expiresAt!);
    await new Promise((r) => setTimeout(r, Math.max(0, due - Date.now()) + 1000));
    alive();
    const complaints = daemon!.output().split("\n").filter((l) => l.includes(expiring.id)).length;
    // The lease cannot be deleted yet; retrying is right, but not as fast as the event loop allows.
    assert.ok(complaints <= 20, `${complaints} log lines about ${expiring.id} within 1 s of its expiry: the expiry timer spins on the failing store`);
  });

  it("the owner of a lease dies while the disk is full: no crash; the lease cannot end yet", async () => {
    const gone = new Promise<void>((r) => owner!.once("exit", () => r()));
    owner!.kill("SIGKILL");
    await gone;
    await new Promise((r) => setTimeout(r, 500));
    alive();
    // Ending it needs a store write: it is still there, and must end once space is back.
    assert.equal((await daemon!.client.get(ownerLease)).id, ownerLease);
  });

  it("with the filler removed, requests work again; the daemon never crashed", async () => {
    fs.rmSync(filler);
    // The leases whose end failed on the full disk end now: the expired one, and the dead owner's.
    const isGone = async (id: string) => daemon!.client.get(id).then(() => false, (err: unknown) => err instanceof NetslotApiError && err.status === 404);
    await waitFor(() => isGone(expiring.id), 3000).catch(() => assert.fail(`lease ${expiring.id} expired during the full disk and never ended after space came back`));
    await waitFor(() => isGone(ownerLease), 3000).catch(() =>
      assert.fail(`lease ${ownerLease} of an owner that died while the disk was full never ended after space came back (no retry)`),
    );
    const fresh = await daemon!.client.acquire({ bindToProcess: false, autoRenew: false, labels: bigLabels("after") });
    assert.ok(fresh.slot.index >= 0 && fresh.slot.index < POOL);
    if (!deleted) await daemon!.client.release(held.id);
    await daemon!.client.release(fresh.id);
    // Every slot comes back: none stuck in scrubbing because a store write failed meanwhile.
    await waitFor(async () => (await daemon!.client.pool()).free === POOL, 5000).catch(async (err: unknown) => {
      throw new Error(`pool did not come back whole: ${counts(await daemon!.client.pool())} (${(err as Error).message})`);
    });
    assert.deepEqual(checkInvariants({ prefix, stateDir: daemon!.stateDir, linkCidr: daemon!.linkCidr, expectLeases: [] }), []);
    alive();
    assert.doesNotMatch(daemon!.output(), /uncaught|unhandled/i);
  });
});
