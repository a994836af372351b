// The SDK (and the CLI's client commands) against the real API server and an in-memory
// fake of the pool (not of the kernel).
import { silentLogger } from "../../src/core/log.js";
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { ERRORS, NetslotError, type ErrorCode } from "../../src/core/errors.js";
import type { Health, Lease } from "../../src/core/types.js";
import { createApiServer, type ApiServer } from "../../src/api/server.js";
import { NetslotApiError, NetslotClient, NetslotConnectionError } from "../../src/sdk/index.js";
import { cmdExec, cmdLease, cmdQuarantineRelease, cmdRelease, cmdStatus } from "../../src/cli/client-commands.js";
import { FakeAdmin, FakeService } from "../support/fake-service.js";
import { processTree } from "../../src/kernel/procfs.js";

// ── fixtures ──────────────────────────────────────────────────────────────────────────

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "netslot-sdk-"));
const quiet = silentLogger;
const A = { name: "alice", token: "alice-token-0123456789" };
const B = { name: "bob", token: "bob-token-0123456789ab" };

let service: FakeService;
let server: ApiServer;
let socket: string;
let client: NetslotClient;
let authService: FakeService;
let authServer: ApiServer;
let authSocket: string;

before(async () => {
  service = new FakeService(2);
  socket = path.join(tmp, "api.sock");
  server = createApiServer({ processes: processTree, service, admin: new FakeAdmin(2), logger: quiet });
  await server.listen(socket);
  client = new NetslotClient({ socketPath: socket });
  authService = new FakeService(2);
  authSocket = path.join(tmp, "auth.sock");
  authServer = createApiServer({ processes: processTree, service: authService, consumers: [A, B], logger: quiet });
  await authServer.listen(authSocket);
});

after(async () => {
  client.close();
  await server.close();
  await authServer.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function apiError(promise: Promise<unknown>, code: ErrorCode): Promise<NetslotApiError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof NetslotApiError, `expected NetslotApiError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.status, ERRORS[code].status);
    assert.ok(err.detail.length > 0);
    return err;
  }
  assert.fail(`expected ${code}`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ── tests ─────────────────────────────────────────────────────────────────────────────

describe("SDK", () => {
  test("health, pool, metrics", async () => {
    assert.equal((await client.health()).status, "ready");
    assert.equal((await client.pool()).quarantinedSlots.length, 1);
    assert.match(await client.metrics(), /^netslot_http_requests_total\{method="GET",route="\/v1\/pool",status="200"\} 1$/m);
  });

  test("acquire binds to this process by default; get, list, renew, release", async () => {
    const lease = await client.acquire({ labels: { job: "sdk" } });
    assert.equal(lease.ownerPid, process.pid);
    assert.deepEqual((await client.get(lease.id)).labels, { job: "sdk" });
    assert.ok((await client.list()).some((l) => l.id === lease.id));
    await client.release(lease.id);
    await apiError(client.release(lease.id), "lease_not_found");

    const unbound = await client.acquire({ bindToProcess: false, ttlSeconds: 60, autoRenew: false });
    assert.equal(unbound.ownerPid, undefined);
    const renewed = await client.renew(unbound.id, 600);
    assert.ok(Date.parse(renewed.expiresAt!) > Date.parse(unbound.expiresAt!));
    await client.release(unbound.id);
    // An old SDK's explicit ownerPid: accepted for the caller itself, refused for anyone else.
    const explicit = await client.acquire({ ownerPid: process.pid });
    assert.equal(explicit.ownerPid, process.pid);
    await client.release(explicit.id);
    await apiError(client.acquire({ ownerPid: 1 }), "owner_forbidden");
  });

  test("error codes reachable through the SDK", async () => {
    const invalid = await apiError(client.acquire({ ttlSeconds: 0 }), "invalid_request");
    assert.equal(invalid.field, "/ttlSeconds");
    assert.equal((await apiError(client.acquire({ network: { vni: 0, cidr: "10.1.0.0/16" } }), "invalid_request")).field, "/network/vni");
    assert.equal((await apiError(client.acquire({ network: { vni: 5, cidr: "10.1.0.1/16" } }), "invalid_request")).field, "/network/cidr");
    await apiError(client.get("nope"), "lease_not_found");
    await apiError(client.renew("nope"), "lease_not_found");
    // Over 64 KiB of labels: 413 (the schema would refuse it anyway, but the size check comes first).
    const labels = Object.fromEntries(Array.from({ length: 600 }, (_, i) => [`key${i}`, "v".repeat(200)]));
    await apiError(client.acquire({ labels }), "payload_too_large");
    assert.equal((await client.health()).status, "ready");
    await apiError(client.releaseQuarantined(1), "slot_not_quarantined");
    assert.deepEqual(await client.releaseQuarantined(2), { index: 2, state: "scrubbing" });

    const held = [await client.acquire(), await client.acquire()];
    const exhausted = await apiError(client.acquire(), "pool_exhausted");
    assert.equal(exhausted.retryAfter, 1);
    for (const l of held) await client.release(l.id);

    service.status = "booting";
    const booting = await apiError(client.acquire(), "booting");
    assert.equal(booting.retryAfter, 3);
    service.status = "ready";

    service.failNext.set("acquire", new NetslotError("store_unavailable", "disk full"));
    assert.ok((await apiError(client.acquire(), "store_unavailable")).retryAfter! > 0);
    service.failNext.set("acquire", new RangeError("oops"));
    const internal = await apiError(client.acquire(), "internal");
    assert.doesNotMatch(internal.detail, /oops/);
    assert.ok(internal.fix.length > 0);

    const noToken = new NetslotClient({ socketPath: authSocket });
    try {
      await apiError(noToken.list(), "unauthorized");
      assert.equal((await noToken.health()).status, "ready");
    } finally {
      noToken.close();
    }
  });

  test("every error code the server produces is decoded by the SDK (replayed responses)", async () => {
    // Capture real answers from the server with raw HTTP, then replay each to the SDK.
    const captures: { code: ErrorCode; status: number; headers: http.IncomingHttpHeaders; body: string }[] = [];
    const capture = (code: ErrorCode, method: string, urlPath: string, headers: http.OutgoingHttpHeaders = {}, body?: string, sock = socket) =>
      new Promise<void>((resolve, reject) => {
        const req = http.request({ socketPath: sock, method, path: urlPath, headers, agent: false }, (res) => {
          let data = "";
          res.on("data", (c: Buffer) => (data += c.toString()));
          res.on("end", () => {
            assert.equal((JSON.parse(data) as { code: string }).code, code, data);
            captures.push({ code, status: res.statusCode!, headers: res.headers, body: data });
            resolve();
          });
        });
        req.on("error", reject);
        req.end(body);
      });
    await capture("invalid_request", "POST", "/v1/leases", { "content-type": "application/json" }, '{"ttlSeconds":86401}');
    await capture("unauthorized", "GET", "/v1/leases", {}, undefined, authSocket);
    await capture("lease_not_found", "GET", "/v1/leases/abc");
    await capture("not_found", "GET", "/v1/nothing");
    await capture("method_not_allowed", "PATCH", "/v1/leases");
    await capture("payload_too_large", "POST", "/v1/leases", { "content-type": "application/json", "content-length": 1 << 20 });
    await capture("unsupported_media_type", "POST", "/v1/leases", { "content-type": "text/plain" }, "{}");
    await capture("slot_not_quarantined", "POST", "/v1/pool/quarantined/0/release");
    await capture("upgrade_failed", "POST", "/v1/upgrade"); // this server has no daemon behind it to hand over from
    const json = { "content-type": "application/json" };
    await capture("forbidden", "GET", "/v1/leases?all=true", { authorization: `Bearer ${A.token}` }, undefined, authSocket);
    await capture("network_forbidden", "POST", "/v1/leases", { ...json, authorization: `Bearer ${A.token}` }, '{"network":{"vni":7,"cidr":"10.0.0.0/8"}}', authSocket);
    await capture("owner_forbidden", "POST", "/v1/leases", json, '{"ownerPid":1}');
    service.failNext.set("acquire", new NetslotError("quota_exceeded", "at max", { retryAfter: 1 }));
    await capture("quota_exceeded", "POST", "/v1/leases");
    service.failNext.set("acquire", new NetslotError("draining", "draining", { retryAfter: 30 }));
    await capture("draining", "POST", "/v1/leases");
    service.size = 0;
    await capture("pool_exhausted", "POST", "/v1/leases");
    service.size = 2;
    service.status = "booting";
    await capture("booting", "POST", "/v1/leases");
    service.status = "ready";
    service.failNext.set("acquire", new NetslotError("store_unavailable", "disk full"));
    await capture("store_unavailable", "POST", "/v1/leases");
    service.failNext.set("acquire", new Error("bug"));
    await capture("internal", "POST", "/v1/leases");
    service.failNext.set("acquire", new NetslotError("profile_forbidden", "consumer \"default\" may not use profile \"isolated\""));
    await capture("profile_forbidden", "POST", "/v1/leases", { "content-type": "application/json" }, '{"profile":"isolated"}');
    assert.deepEqual(captures.map((c) => c.code).sort(), Object.keys(ERRORS).sort());

    const replaySocket = path.join(tmp, "replay.sock");
    let current = captures[0]!;
    const replay = http.createServer((req, res) => {
      req.resume();
      const headers = { ...current.headers };
      delete headers["connection"];
      delete headers["keep-alive"];
      res.writeHead(current.status, headers as http.OutgoingHttpHeaders);
      res.end(current.body);
    });
    await new Promise<void>((r) => replay.listen(replaySocket, r));
    const replayClient = new NetslotClient({ socketPath: replaySocket });
    try {
      for (const c of captures) {
        current = c;
        const err = await apiError(replayClient.get("abc"), c.code);
        const problem = JSON.parse(c.body) as { detail: string; field?: string };
        assert.equal(err.detail, problem.detail);
        assert.equal(err.field, problem.field);
        assert.equal(err.retryAfter, c.headers["retry-after"] === undefined ? undefined : Number(c.headers["retry-after"]));
        if (c.status === 503) assert.ok(err.retryAfter !== undefined, `${c.code} carries Retry-After`);
      }
    } finally {
      replayClient.close();
      await new Promise((r) => replay.close(r));
    }
  });

  test("withSlot releases when fn returns and when it throws", async () => {
    const value = await client.withSlot({ ttlSeconds: 30 }, async (lease) => {
      assert.ok(service.leases.has(lease.id));
      return 42;
    });
    assert.equal(value, 42);
    assert.equal(service.leases.size, 0);

    let seen: Lease | undefined;
    await assert.rejects(
      client.withSlot({}, (lease) => {
        seen = lease;
        throw new Error("user code failed");
      }),
      /user code failed/,
    );
    assert.ok(seen);
    assert.equal(service.leases.size, 0);
    assert.equal(service.calls.filter((c) => c.method === "release" && c.args[0] === seen!.id).length, 1);

    // A lease that vanished meanwhile is not an error at release.
    const result = await client.withSlot({}, (lease) => {
      service.leases.delete(lease.id);
      return "done";
    });
    assert.equal(result, "done");
  });

  test("auto-renew renews at a third of the TTL, stops on release and on lease_not_found", async () => {
    const renewsBefore = service.count("renew");
    const lease = await client.acquire({ ttlSeconds: 1 });
    await sleep(800);
    const renewed = service.count("renew") - renewsBefore;
    assert.ok(renewed >= 1 && renewed <= 3, `renewed ${renewed} times in 0.8 s`);
    const last = service.calls.filter((c) => c.method === "renew").at(-1)!;
    assert.deepEqual(last.args, [lease.id, 1]);
    await client.release(lease.id);
    const afterRelease = service.count("renew");
    await sleep(500);
    assert.equal(service.count("renew"), afterRelease);

    const gone = await client.acquire({ ttlSeconds: 1 });
    service.leases.delete(gone.id); // expired behind the client's back
    await sleep(500);
    const renewals = (client as unknown as { renewals: Map<string, unknown> }).renewals;
    assert.equal(renewals.has(gone.id), false);

    const none = await client.acquire({});
    assert.equal(renewals.has(none.id), false, "no TTL, nothing to renew");
    const off = await client.acquire({ ttlSeconds: 1, autoRenew: false });
    assert.equal(renewals.has(off.id), false);
    await client.release(none.id);
    await client.release(off.id);
  });

  test("consumers A and B cannot see each other's leases", async () => {
    const a = new NetslotClient({ socketPath: authSocket, token: A.token });
    const b = new NetslotClient({ socketPath: authSocket, token: B.token });
    try {
      const lease = await a.acquire({ ttlSeconds: 30, autoRenew: false });
      assert.equal(lease.consumer, "alice");
      await apiError(b.get(lease.id), "lease_not_found");
      await apiError(b.release(lease.id), "lease_not_found");
      await apiError(b.renew(lease.id), "lease_not_found");
      assert.deepEqual(await b.list(), []);
      assert.equal((await a.list()).length, 1);
      await a.release(lease.id);
    } finally {
      a.close();
      b.close();
    }
  });

  test("an unreachable daemon is a NetslotConnectionError", async () => {
    const missing = new NetslotClient({ socketPath: path.join(tmp, "missing.sock") });
    await assert.rejects(missing.health(), (err: unknown) => err instanceof NetslotConnectionError && err.errno === "ENOENT" && /daemon running/.test(err.message));
    missing.close();
  });

  test("socketPath defaults to NETSLOT_SOCKET", () => {
    const saved = process.env.NETSLOT_SOCKET;
    process.env.NETSLOT_SOCKET = "/tmp/elsewhere.sock";
    try {
      assert.equal(new NetslotClient().socketPath, "/tmp/elsewhere.sock");
      delete process.env.NETSLOT_SOCKET;
      assert.equal(new NetslotClient().socketPath, "/run/netslot/api.sock");
    } finally {
      if (saved === undefined) delete process.env.NETSLOT_SOCKET;
      else process.env.NETSLOT_SOCKET = saved;
    }
  });
});

describe("CLI client commands", () => {
  function capture(): { text: () => string; write: (s: string) => boolean } {
    let text = "";
    return { text: () => text, write: (s: string) => ((text += s), true) };
  }

  test("status prints health, counts and quarantined slots with reasons", async () => {
    const stdout = capture();
    assert.equal(await cmdStatus({ socket, stdout }), 0);
    assert.match(stdout.text(), /^status: ready$/m);
    assert.match(stdout.text(), /3 slots: 2 free, 0 leased, 0 scrubbing, 1 quarantined, 0 missing/);
    assert.match(stdout.text(), /slot 2: scrub failed: nft table left behind/);
    const json = capture();
    assert.equal(await cmdStatus({ socket, json: true, stdout: json }), 0);
    assert.equal((JSON.parse(json.text()) as Health).status, "ready");
  });

  test("lease prints the id (not bound to the CLI process), release releases it", async () => {
    const stdout = capture();
    assert.equal(await cmdLease({ socket, ttl: 60, stdout }), 0);
    const id = stdout.text().trim();
    const lease = service.leases.get(id);
    assert.ok(lease, `lease ${id} exists`);
    assert.equal(lease.ownerPid, undefined);
    assert.notEqual(lease.expiresAt, null);

    const json = capture();
    assert.equal(await cmdLease({ socket, json: true, network: { vni: 9, cidr: "10.9.0.0/24" }, stdout: json }), 0);
    const second = JSON.parse(json.text()) as Lease;
    assert.deepEqual(second.network, { vni: 9, cidr: "10.9.0.0/24" });

    const out = capture();
    assert.equal(await cmdRelease({ socket, stdout: out }, id), 0);
    assert.equal(await cmdRelease({ socket, stdout: out }, second.id), 0);
    assert.equal(service.leases.size, 0);
  });

  test("API errors are explained: code, detail, field, fix; exit code 1", async () => {
    const stderr = capture();
    assert.equal(await cmdRelease({ socket, stderr }, "no-such-lease"), 1);
    assert.match(stderr.text(), /lease_not_found \(HTTP 404\): no lease no-such-lease/);
    assert.ok(stderr.text().includes(`fix: ${ERRORS.lease_not_found.fix}`), stderr.text());

    const invalid = capture();
    assert.equal(await cmdLease({ socket, network: { vni: 1, cidr: "10.1.0.1/16" }, stderr: invalid }), 1);
    assert.match(invalid.text(), /invalid_request/);
    assert.match(invalid.text(), /field: \/network\/cidr/);

    const down = capture();
    assert.equal(await cmdStatus({ socket: path.join(tmp, "nothing.sock"), stderr: down }), 1);
    assert.match(down.text(), /cannot reach netslot/);

    const unauthorized = capture();
    assert.equal(await cmdLease({ socket: authSocket, stderr: unauthorized }), 1);
    assert.match(unauthorized.text(), /unauthorized.*\n(.*\n)*\s+fix: Send `Authorization: Bearer <token>`/);
    const stdout = capture();
    assert.equal(await cmdLease({ socket: authSocket, token: A.token, stdout }), 0);
    assert.equal(authService.leases.get(stdout.text().trim())?.consumer, "alice");
  });

  test("quarantine release", async () => {
    const stdout = capture();
    assert.equal(await cmdQuarantineRelease({ socket, stdout }, 2), 0);
    assert.equal(stdout.text(), "slot 2: scrubbing\n");
    const stderr = capture();
    assert.equal(await cmdQuarantineRelease({ socket, stderr }, 0), 1);
    assert.match(stderr.text(), /slot_not_quarantined/);
  });

  test("exec runs the command in the lease's namespace and returns its exit code", { skip: process.getuid?.() !== 0 ? "nsenter needs root" : false }, async () => {
    // The fake's leases point at this process's own namespace, so nsenter works without a slot.
    const stdout = capture();
    assert.equal(await cmdLease({ socket, stdout }), 0);
    const id = stdout.text().trim();
    try {
      assert.equal(await cmdExec({ socket }, id, ["sh", "-c", "exit 7"]), 7);
      assert.equal(await cmdExec({ socket }, id, ["true"]), 0);
      const stderr = capture();
      assert.equal(await cmdExec({ socket, stderr }, "missing", ["true"]), 1);
      assert.match(stderr.text(), /lease_not_found/);
    } finally {
      await cmdRelease({ socket, stdout: capture() }, id);
    }
  });
});
