// The CLI and the API's error contract against a real daemon on real slots.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as http from "node:http";
import { spawnSync } from "node:child_process";
import { CLI, daemonSuite, isRoot, waitFor, skipUnless } from "../support/env.js";

const skip = skipUnless(isRoot(), "needs root");

interface Raw {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function raw(socketPath: string, method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path, headers }, (res) => {
      let data = "";
      res.on("data", (c: Buffer) => (data += c.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: data }));
    });
    req.on("error", reject);
    if (body !== undefined) req.end(body);
    else req.end();
  });
}

function cli(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function problem(r: Raw): { code: string; field?: string; status: number } {
  assert.equal(r.headers["content-type"], "application/problem+json", r.body);
  return JSON.parse(r.body) as { code: string; field?: string; status: number };
}

describe("CLI and API against a real daemon", { skip }, () => {
  const { prefix, daemon } = daemonSuite({ poolSize: 2 });

  it("status, lease --json, exec in the slot, release", () => {
    const status = cli(["status", "--socket", daemon.socket]);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /ready/);
    const leased = cli(["lease", "--ttl", "300", "--json", "--socket", daemon.socket]);
    assert.equal(leased.code, 0, leased.stderr);
    const lease = JSON.parse(leased.stdout) as { id: string; slot: { netns: string } };
    const exec = cli(["exec", lease.id, "--socket", daemon.socket, "--", "ip", "-o", "link", "show", "tap0"]);
    assert.equal(exec.code, 0, exec.stderr);
    assert.match(exec.stdout, /tap0/);
    assert.equal(cli(["release", lease.id, "--socket", daemon.socket]).code, 0);
    const again = cli(["release", lease.id, "--socket", daemon.socket]);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr + again.stdout, /lease_not_found/);
  });

  it("answers every error as problem+json with its stable code, and bad input changes nothing", async () => {
    const s = daemon.socket;
    const before = await daemon.client.pool();
    const json = { "content-type": "application/json" };
    let p = problem(await raw(s, "POST", "/v1/leases", '{"ttlSeconds": 0}', json));
    assert.deepEqual([p.status, p.code, p.field], [400, "invalid_request", "/ttlSeconds"]);
    p = problem(await raw(s, "POST", "/v1/leases", "{not json", json));
    assert.deepEqual([p.status, p.code], [400, "invalid_request"]);
    p = problem(await raw(s, "POST", "/v1/leases", '{"bogus": 1}', json));
    assert.equal(p.code, "invalid_request");
    p = problem(await raw(s, "POST", "/v1/leases", '{"network": {"vni": 5, "cidr": "10.1.0.0/16"}}', json));
    assert.deepEqual([p.code, p.field], ["invalid_request", "/network"], "no --vtep-remote: tenant networks refused");
    p = problem(await raw(s, "POST", "/v1/leases", "ttlSeconds=5", { "content-type": "application/x-www-form-urlencoded" }));
    assert.deepEqual([p.status, p.code], [415, "unsupported_media_type"]);
    p = problem(await raw(s, "POST", "/v1/leases", Buffer.alloc(70 * 1024, 0x20), json));
    assert.deepEqual([p.status, p.code], [413, "payload_too_large"]);
    p = problem(await raw(s, "GET", "/v1/leases/l_doesnotexist"));
    assert.deepEqual([p.status, p.code], [404, "lease_not_found"]);
    p = problem(await raw(s, "DELETE", "/v1/leases/l_doesnotexist"));
    assert.deepEqual([p.status, p.code], [404, "lease_not_found"]);
    p = problem(await raw(s, "GET", "/v1/nothing-here"));
    assert.deepEqual([p.status, p.code], [404, "not_found"]);
    p = problem(await raw(s, "PUT", "/v1/leases"));
    assert.deepEqual([p.status, p.code], [405, "method_not_allowed"]);
    p = problem(await raw(s, "POST", "/v1/pool/quarantined/0/release"));
    assert.deepEqual([p.status, p.code], [409, "slot_not_quarantined"]);
    assert.deepEqual(await daemon.client.pool(), before, "no bad request changed the pool");
    assert.equal((await daemon.client.health()).status, "ready", "the daemon is still up");
  });

  it("answers pool_exhausted with Retry-After when every slot is leased", async () => {
    const a = await daemon.client.acquire({ bindToProcess: false, autoRenew: false });
    const b = await daemon.client.acquire({ bindToProcess: false, autoRenew: false });
    const r = await raw(daemon.socket, "POST", "/v1/leases", "{}", { "content-type": "application/json" });
    const p = problem(r);
    assert.deepEqual([p.status, p.code], [503, "pool_exhausted"]);
    assert.ok(Number(r.headers["retry-after"]) >= 1);
    await daemon.client.release(a.id);
    await daemon.client.release(b.id);
  });

  it("expires a lease whose TTL passes, and its slot comes back", async () => {
    await waitFor(async () => (await daemon.client.pool()).free === 2, 5_000);
    const lease = await daemon.client.acquire({ ttlSeconds: 1, bindToProcess: false, autoRenew: false });
    await waitFor(async () => {
      try {
        await daemon.client.get(lease.id);
        return false;
      } catch (err) {
        return (err as { code?: string }).code === "lease_not_found";
      }
    }, 5_000);
    await waitFor(async () => (await daemon.client.pool()).free === 2, 5_000);
    assert.match(await daemon.client.metrics(), /netslot_releases_total\{cause="expired"\} 1/);
  });

  it("serves the OpenAPI document and Prometheus metrics", async () => {
    const doc = await raw(daemon.socket, "GET", "/v1/openapi.json");
    assert.equal(doc.status, 200);
    assert.match((JSON.parse(doc.body) as { openapi: string }).openapi, /^3\./);
    const metrics = await raw(daemon.socket, "GET", "/metrics");
    assert.match(metrics.body, /netslot_pool_slots\{state="free"\}/);
    assert.match(metrics.body, /netslot_acquire_seconds_bucket/);
    assert.match(metrics.body, /netslot_scrub_seconds_bucket/);
  });

  it("check finds every invariant holding; purge is idempotent", async () => {
    await waitFor(async () => (await daemon.client.pool()).scrubbing === 0, 10_000);
    const check = cli(["check", "--prefix", prefix, "--state-dir", daemon.stateDir, "--link-cidr", daemon.linkCidr]);
    assert.equal(check.code, 0, check.stdout + check.stderr);
    const refused = cli(["purge", "--prefix", prefix, "--state-dir", daemon.stateDir]);
    assert.notEqual(refused.code, 0, "purge refuses while the daemon runs");
    await daemon.stop();
    for (let i = 0; i < 2; i++) {
      const purged = cli(["purge", "--prefix", prefix, "--state-dir", daemon.stateDir]);
      assert.equal(purged.code, 0, purged.stderr);
    }
    assert.equal(spawnSync("ip", ["link", "show", `${prefix}-0`]).status !== 0, true, "host veths gone");
    assert.equal(spawnSync("nft", ["list", "table", "inet", prefix]).status !== 0, true, "root table gone");
  });

  it("doctor says netslot can run here", () => {
    const r = cli(["doctor"]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /netslot can run here/);
  });
});
