// The previous release's SDK against this daemon: /v1 only grows, so a consumer that never
// upgraded its SDK keeps working. The SDK is the npm pack of 0.1.0 (test/fixtures/README.md),
// unpacked as an installed package and loaded by its name, not this tree's src/sdk.
import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { daemonSuite, REPO_ROOT, isRoot, sh, waitFor, skipUnless } from "../support/env.js";
import { packageVersion } from "../../src/core/version.js";

const skip = skipUnless(isRoot(), "needs root");
const FIXTURE = path.join(REPO_ROOT, "test", "fixtures", "netslot-0.1.0.tgz");

/** The old SDK's surface, as its consumers used it (typed loosely: it is another package). */
interface OldLease {
  id: string;
  consumer: string;
  slot: { index: number; netns: string; tap: string; outsideAddress: string };
  guest: { ip: string; prefixLength: number; gateway: string; mac: string; mtu: number; kernelIpArg: string };
  labels: Record<string, string>;
  ownerPid?: number;
  createdAt: string;
  expiresAt: string | null;
}
interface OldClient {
  health(): Promise<{ status: string; pool: { size: number; free: number } }>;
  pool(): Promise<{ size: number; free: number; leased: number }>;
  acquire(opts?: Record<string, unknown>): Promise<OldLease>;
  list(): Promise<OldLease[]>;
  get(id: string): Promise<OldLease>;
  renew(id: string, ttlSeconds?: number): Promise<OldLease>;
  release(id: string): Promise<void>;
  withSlot<T>(opts: Record<string, unknown> | undefined, fn: (lease: OldLease) => Promise<T> | T): Promise<T>;
  metrics(): Promise<string>;
  close(): void;
}
interface OldSdk {
  NetslotClient: new (opts: { socketPath: string; timeoutMs?: number }) => OldClient;
  NetslotApiError: new (...args: never[]) => Error & { code: string; status: number; field?: string; retryAfter?: number; fix: string };
  NetslotConnectionError: new (...args: never[]) => Error;
}

describe("compat: the 0.1.0 SDK against this daemon", { skip }, () => {
  const POOL = 3;
  let dir: string;
  let sdk: OldSdk;
  let client: OldClient;
  const { daemon } = daemonSuite({
    poolSize: POOL,
    teardown: () => {
      client?.close();
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    },
  });

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "netslot-compat-"));
    const installed = path.join(dir, "node_modules", "netslot");
    fs.mkdirSync(installed, { recursive: true });
    sh("tar", ["-xzf", FIXTURE, "-C", installed, "--strip-components=1"]);
    // Resolved by package name from a consumer module, through the old package's "exports".
    fs.writeFileSync(path.join(dir, "consumer.mjs"), 'export * from "netslot";\n');
    sdk = (await import(pathToFileURL(path.join(dir, "consumer.mjs")).href)) as OldSdk;
    client = new sdk.NetslotClient({ socketPath: daemon.socket });
  });

  it("is the 0.1.0 package, talking to a newer daemon", async () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(dir, "node_modules", "netslot", "package.json"), "utf8")) as { version: string };
    assert.equal(pkg.version, "0.1.0");
    assert.notEqual(packageVersion(), "0.1.0");
    const health = await client.health();
    assert.equal(health.status, "ready");
    assert.equal(health.pool.size, POOL);
    assert.equal((await client.pool()).free, POOL);
    assert.match(await client.metrics(), /^netslot_build_info\{.*version="[^"]+".*\} 1$/m);
  });

  it("acquire, get, list, renew, release", async () => {
    const lease = await client.acquire({ ttlSeconds: 60, labels: { vm: "old-sdk" } });
    assert.match(lease.id, /^l_/);
    assert.equal(lease.ownerPid, process.pid, "the old SDK binds the lease to its process");
    assert.equal(lease.labels.vm, "old-sdk");
    assert.ok(fs.existsSync(lease.slot.netns), "the lease names a real namespace");
    assert.equal(lease.slot.tap, "tap0");
    assert.equal(lease.guest.ip, "169.254.0.21");
    assert.match(lease.guest.kernelIpArg, /^ip=169\.254\.0\.21::/);
    assert.equal((await client.get(lease.id)).id, lease.id);
    assert.ok((await client.list()).some((l) => l.id === lease.id));
    const before = Date.parse(lease.expiresAt!);
    await new Promise((r) => setTimeout(r, 20));
    const renewed = await client.renew(lease.id, 120);
    assert.ok(Date.parse(renewed.expiresAt!) > before + 50_000, "renew moved the expiry");
    await client.release(lease.id);
    assert.equal((await client.list()).length, 0);
  });

  it("withSlot releases after the callback, also when it throws", async () => {
    const seen = await client.withSlot({ ttlSeconds: 30 }, (lease) => lease.id);
    await assert.rejects(client.get(seen), (err: Error & { code?: string }) => err instanceof sdk.NetslotApiError && err.code === "lease_not_found");
    let inside = "";
    await assert.rejects(
      client.withSlot(undefined, (lease) => {
        inside = lease.id;
        throw new Error("consumer bug");
      }),
      /consumer bug/,
    );
    await assert.rejects(client.get(inside), (err: Error & { code?: string }) => err instanceof sdk.NetslotApiError && err.code === "lease_not_found");
  });

  it("error paths: invalid request, unknown lease, exhausted pool, no daemon", async () => {
    await assert.rejects(client.acquire({ ttlSeconds: -1 }), (err: Error & { code?: string; status?: number; field?: string }) => {
      assert.ok(err instanceof sdk.NetslotApiError);
      assert.equal(err.code, "invalid_request");
      assert.equal(err.status, 400);
      assert.equal(err.field, "/ttlSeconds");
      return true;
    });
    await assert.rejects(client.release("l_doesnotexist000000000000"), (err: Error & { code?: string; fix?: string }) => {
      assert.ok(err instanceof sdk.NetslotApiError);
      assert.equal(err.code, "lease_not_found");
      assert.ok(err.fix && err.fix.length > 0, "the old registry still explains the code");
      return true;
    });
    await waitFor(async () => (await client.pool()).free === POOL, 30_000); // released slots are scrubbed first
    const held: OldLease[] = [];
    for (let i = 0; i < POOL; i++) held.push(await client.acquire({ autoRenew: false }));
    await assert.rejects(client.acquire(), (err: Error & { code?: string; status?: number; retryAfter?: number }) => {
      assert.ok(err instanceof sdk.NetslotApiError);
      assert.equal(err.code, "pool_exhausted");
      assert.equal(err.status, 503);
      assert.ok((err.retryAfter ?? 0) >= 1);
      return true;
    });
    for (const l of held) await client.release(l.id);
    const nowhere = new sdk.NetslotClient({ socketPath: path.join(dir, "no-daemon.sock"), timeoutMs: 2000 });
    await assert.rejects(nowhere.health(), (err: Error) => err instanceof sdk.NetslotConnectionError);
    nowhere.close();
  });
});
