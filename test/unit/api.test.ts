// The HTTP API against an in-memory fake of the pool (not of the kernel), through raw HTTP
// on a unix socket: every error code, the limits from openapi.json, consumers, and every
// response checked against the document's response schemas.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { NetslotError } from "../../src/core/errors.js";
import type { Health, Lease, PoolCounts } from "../../src/core/types.js";
import { createApiServer, MAX_BODY_BYTES, type ApiServer, type ConsumerConfig } from "../../src/api/server.js";
import { openApiDocument } from "../../src/api/openapi.js";
import { raw, ResponseChecker, type RawOptions, type RawResult } from "../support/api-check.js";
import { FakeAdmin, FakeService } from "../support/fake-service.js";
import { packageVersion } from "../../src/core/version.js";
import { createLogger } from "../../src/core/log.js";
import { processTree } from "../../src/kernel/procfs.js";

// ── response schemas from openapi.json ───────────────────────────────────────────────

const doc = openApiDocument();
// The same checker the real-daemon test uses (test/support/api-check.ts).
const checker = new ResponseChecker(doc);

// ── fixtures ──────────────────────────────────────────────────────────────────────────

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "netslot-api-"));
/** The daemon's real logger, its JSON lines captured. */
const logged: Record<string, unknown>[] = [];
const logger = createLogger({ destination: { write: (line: string) => void logged.push(JSON.parse(line) as Record<string, unknown>) } });

interface Fixture {
  service: FakeService;
  admin: FakeAdmin;
  server: ApiServer;
  socket: string;
  /** raw() plus a check of the response against openapi.json. */
  call(method: string, urlPath: string, opts?: RawOptions): Promise<RawResult>;
}

async function startFixture(name: string, consumers?: ConsumerConfig[]): Promise<Fixture> {
  const service = new FakeService(3);
  const admin = new FakeAdmin(3);
  const socket = path.join(tmp, `${name}.sock`);
  const server = createApiServer({ processes: processTree, service, admin, logger, ...(consumers ? { consumers } : {}) });
  await server.listen(socket);
  return {
    service,
    admin,
    server,
    socket,
    async call(method, urlPath, opts) {
      const res = await raw(socket, method, urlPath, opts);
      checker.check(method, urlPath, res);
      // Every answer, error or not, says which daemon version gave it.
      assert.equal(res.headers["netslot-version"], packageVersion(), `${method} ${urlPath}: Netslot-Version header`);
      return res;
    },
  };
}

const json = (value: unknown): RawOptions => ({ headers: { "content-type": "application/json" }, body: JSON.stringify(value) });

function assertProblem(res: RawResult, status: number, code: string, field?: string): void {
  assert.equal(res.status, status, res.text);
  const problem = res.json as { code: string; field?: string; detail: string };
  assert.equal(problem.code, code, res.text);
  if (field !== undefined) assert.equal(problem.field, field, res.text);
  assert.ok(problem.detail.length > 0);
}

let f: Fixture;

before(async () => {
  f = await startFixture("main");
});

after(async () => {
  await f?.server.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

// ── tests ─────────────────────────────────────────────────────────────────────────────

describe("endpoints", () => {
  test("socket is mode 0660", () => {
    assert.equal(fs.statSync(f.socket).mode & 0o777, 0o660);
    assert.ok(fs.statSync(f.socket).isSocket());
  });

  test("GET /v1/health, /v1/pool, HEAD", async () => {
    const health = await f.call("GET", "/v1/health");
    assert.equal(health.status, 200);
    assert.equal((health.json as Health).status, "ready");
    assert.equal((health.json as Health).version, packageVersion());
    const pool = await f.call("GET", "/v1/pool");
    assert.equal(pool.status, 200);
    assert.equal((pool.json as PoolCounts).quarantinedSlots[0]!.reason, "scrub failed: nft table left behind");
    const head = await f.call("HEAD", "/v1/health");
    assert.equal(head.status, 200);
    assert.equal(head.text, "");
  });

  test("GET /v1/openapi.json serves the document", async () => {
    const res = await f.call("GET", "/v1/openapi.json");
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, doc);
  });

  test("lease lifecycle: acquire, get, list, renew, release, second release", async () => {
    const created = await f.call("POST", "/v1/leases", json({ ttlSeconds: 60, labels: { job: "ci-42", "team/x": "a" }, network: { vni: 42, cidr: "10.1.0.0/16" }, ownerPid: process.pid }));
    assert.equal(created.status, 201);
    const lease = created.json as Lease;
    assert.equal(created.headers.location, `/v1/leases/${lease.id}`);
    assert.equal(lease.consumer, "default");
    assert.deepEqual(lease.network, { vni: 42, cidr: "10.1.0.0/16" });
    assert.equal(lease.ownerPid, process.pid);

    const got = await f.call("GET", created.headers.location);
    assert.deepEqual(got.json, lease);
    const list = await f.call("GET", "/v1/leases");
    assert.ok((list.json as { leases: Lease[] }).leases.some((l) => l.id === lease.id));

    const renewed = await f.call("POST", `/v1/leases/${lease.id}/renew`, json({ ttlSeconds: 120 }));
    assert.equal(renewed.status, 200);
    assert.ok(Date.parse((renewed.json as Lease).expiresAt!) > Date.parse(lease.expiresAt!));
    const renewedEmpty = await f.call("POST", `/v1/leases/${lease.id}/renew`);
    assert.equal(renewedEmpty.status, 200);
    assert.deepEqual(f.service.calls.at(-1), { method: "renew", consumer: "default", args: [lease.id, undefined] });

    const released = await f.call("DELETE", `/v1/leases/${lease.id}`);
    assert.equal(released.status, 204);
    assert.equal(released.text, "");
    assertProblem(await f.call("DELETE", `/v1/leases/${lease.id}`), 404, "lease_not_found");
    assertProblem(await f.call("GET", `/v1/leases/${lease.id}`), 404, "lease_not_found");
  });

  test("an empty POST without a content type is {}", async () => {
    const res = await f.call("POST", "/v1/leases");
    assert.equal(res.status, 201, res.text);
    assert.deepEqual(f.service.calls.at(-1)!.args[0], {});
    const lease = res.json as Lease;
    assert.equal(lease.expiresAt, null);
    assert.equal((await f.call("DELETE", `/v1/leases/${lease.id}`)).status, 204);
    const typed = await f.call("POST", "/v1/leases", { headers: { "content-type": "application/json" }, body: "" });
    assert.equal(typed.status, 201, typed.text);
    assert.equal((await f.call("DELETE", `/v1/leases/${(typed.json as Lease).id}`)).status, 204);
  });

  test("GET /metrics: the one registry, with the API's counter and histogram", async () => {
    await f.call("GET", "/v1/health");
    await f.call("GET", "/nope");
    const res = await f.call("GET", "/metrics");
    assert.equal(res.status, 200);
    assert.match(String(res.headers["content-type"]), /^text\/plain; version=0\.0\.4/);
    // Declared in core/metrics.ts even when no pool feeds them.
    assert.match(res.text, /^# TYPE netslot_pool_slots gauge$/m);
    assert.match(res.text, /^netslot_ready 0$/m);
    assert.match(res.text, /^netslot_build_info\{version="[^"]+",node="v\d+[^"]*"\} 1$/m);
    assert.match(res.text, /^# TYPE netslot_http_requests_total counter$/m);
    assert.match(res.text, /^netslot_http_requests_total\{method="GET",route="\/v1\/health",status="200"\} \d+$/m);
    assert.match(res.text, /^netslot_http_requests_total\{method="GET",route="unmatched",status="404"\} \d+$/m);
    assert.match(res.text, /^# TYPE netslot_http_request_duration_seconds histogram$/m);
    assert.match(res.text, /^netslot_http_request_duration_seconds_bucket\{le="\+Inf",method="GET",route="\/v1\/health"\} \d+$/m);
    assert.match(res.text, /^netslot_http_request_duration_seconds_count\{method="GET",route="\/v1\/health"\} \d+$/m);
    assert.ok(res.text.endsWith("\n"));
  });
});

describe("bad input is answered before the service is called", () => {
  const cases: { name: string; method?: string; path?: string; opts: RawOptions; field: string }[] = [
    { name: "malformed JSON", opts: { headers: { "content-type": "application/json" }, body: '{"ttlSeconds": 5,' }, field: "" },
    { name: "a JSON array", opts: json([1, 2]), field: "" },
    { name: "JSON null", opts: json(null), field: "" },
    { name: "invalid UTF-8", opts: { headers: { "content-type": "application/json" }, body: Buffer.from([0x7b, 0xff, 0x7d]) }, field: "" },
    { name: "unknown field", opts: json({ ttlSeconds: 5, colour: "red" }), field: "/colour" },
    { name: "unknown nested field", opts: json({ network: { vni: 5, cidr: "10.0.0.0/8", mtu: 9000 } }), field: "/network/mtu" },
    { name: "ttlSeconds 0", opts: json({ ttlSeconds: 0 }), field: "/ttlSeconds" },
    { name: "ttlSeconds 86401", opts: json({ ttlSeconds: 86401 }), field: "/ttlSeconds" },
    { name: "ttlSeconds 1.5", opts: json({ ttlSeconds: 1.5 }), field: "/ttlSeconds" },
    { name: "ttlSeconds as a string", opts: json({ ttlSeconds: "60" }), field: "/ttlSeconds" },
    { name: "vni 0", opts: json({ network: { vni: 0, cidr: "10.1.0.0/16" } }), field: "/network/vni" },
    { name: "vni 2^24", opts: json({ network: { vni: 16777216, cidr: "10.1.0.0/16" } }), field: "/network/vni" },
    { name: "network without cidr", opts: json({ network: { vni: 7 } }), field: "/network/cidr" },
    { name: "cidr with host bits", opts: json({ network: { vni: 7, cidr: "10.1.0.1/16" } }), field: "/network/cidr" },
    { name: "cidr /31", opts: json({ network: { vni: 7, cidr: "10.1.0.0/31" } }), field: "/network/cidr" },
    { name: "cidr not an address", opts: json({ network: { vni: 7, cidr: "10.1.0.256/16" } }), field: "/network/cidr" },
    { name: "too many labels", opts: json({ labels: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, "v"])) }), field: "/labels" },
    { name: "label value too long", opts: json({ labels: { job: "x".repeat(257) } }), field: "/labels/job" },
    { name: "label value not a string", opts: json({ labels: { job: 5 } }), field: "/labels/job" },
    { name: "bad label key", opts: json({ labels: { "-bad key": "v" } }), field: "/labels/-bad key" },
    { name: "__proto__ label key", opts: { headers: { "content-type": "application/json" }, body: '{"labels":{"__proto__":"x"}}' }, field: "/labels/__proto__" },
    { name: "ownerPid 0", opts: json({ ownerPid: 0 }), field: "/ownerPid" },
    { name: "renew ttlSeconds 0", path: "/v1/leases/abc/renew", opts: json({ ttlSeconds: 0 }), field: "/ttlSeconds" },
    { name: "renew unknown field", path: "/v1/leases/abc/renew", opts: json({ ttl: 5 }), field: "/ttl" },
    { name: "renew malformed JSON", path: "/v1/leases/abc/renew", opts: { headers: { "content-type": "application/json" }, body: "nope" }, field: "" },
  ];
  for (const c of cases) {
    test(`${c.name} → 400 invalid_request field ${JSON.stringify(c.field)}`, async () => {
      const before = f.service.calls.length;
      const res = await f.call(c.method ?? "POST", c.path ?? "/v1/leases", c.opts);
      assertProblem(res, 400, "invalid_request", c.field);
      assert.equal(f.service.calls.length, before, "the service must not be called");
    });
  }

  test("malformed JSON says so", async () => {
    const res = await f.call("POST", "/v1/leases", { headers: { "content-type": "application/json" }, body: "{oops" });
    assert.match((res.json as { detail: string }).detail, /not valid JSON/);
  });

  test("wrong content type → 415 (leases and renew)", async () => {
    const before = f.service.calls.length;
    assertProblem(await f.call("POST", "/v1/leases", { headers: { "content-type": "text/plain" }, body: "{}" }), 415, "unsupported_media_type");
    assertProblem(await f.call("POST", "/v1/leases", { body: "{}" }), 415, "unsupported_media_type");
    assertProblem(
      await f.call("POST", "/v1/leases", { headers: { "content-type": "application/json; charset=latin1" }, body: "{}" }),
      415,
      "unsupported_media_type",
    );
    assertProblem(
      await f.call("POST", "/v1/leases/abc/renew", { headers: { "content-type": "application/x-www-form-urlencoded" }, body: "ttlSeconds=5" }),
      415,
      "unsupported_media_type",
    );
    assert.equal(f.service.calls.length, before);
    // Parameters of application/json are fine.
    const ok = await f.call("POST", "/v1/leases", { headers: { "content-type": "Application/JSON; charset=utf-8" }, body: "{}" });
    assert.equal(ok.status, 201);
    await f.call("DELETE", `/v1/leases/${(ok.json as Lease).id}`);
  });

  test("a 1 MiB body → 413, and the server stays up", async () => {
    const before = f.service.calls.length;
    const big = Buffer.alloc(1024 * 1024, 0x20);
    const res = await f.call("POST", "/v1/leases", { headers: { "content-type": "application/json" }, body: big });
    assertProblem(res, 413, "payload_too_large");
    assert.equal(res.headers.connection, "close");
    assert.equal((await f.call("GET", "/v1/health")).status, 200);
    assert.equal(f.service.calls.length, before);
  });

  test("a chunked body over 64 KiB → 413 once the limit is passed", async () => {
    const chunk = Buffer.alloc(16 * 1024, 0x20);
    const res = await f.call("POST", "/v1/leases", {
      headers: { "content-type": "application/json", "transfer-encoding": "chunked" },
      chunked: Array.from({ length: 64 }, () => chunk),
    });
    assertProblem(res, 413, "payload_too_large");
    assert.equal((await f.call("GET", "/v1/health")).status, 200);
  });

  test("a Content-Length over the limit is answered without reading the body", async () => {
    // Announce 10 GiB, send nothing: the answer must come anyway.
    const res = await new Promise<string>((resolve, reject) => {
      const sock = net.connect(f.socket);
      let data = "";
      sock.on("data", (d) => (data += d.toString()));
      sock.on("end", () => resolve(data));
      sock.on("error", reject);
      sock.write("POST /v1/leases HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10737418240\r\n\r\n{");
    });
    assert.match(res, /^HTTP\/1\.1 413 /);
    assert.match(res, /"code":"payload_too_large"/);
  });

  test("a body of exactly 64 KiB is read", async () => {
    const padding = " ".repeat(MAX_BODY_BYTES - 2);
    const res = await f.call("POST", "/v1/leases/abc/renew", { headers: { "content-type": "application/json" }, body: `{${padding}}` });
    assertProblem(res, 404, "lease_not_found");
  });

  test("lease ids that cannot exist → 404 without calling the service", async () => {
    const before = f.service.calls.length;
    for (const id of ["%ZZ", "a%20b", "x".repeat(129), "%2F"]) {
      assertProblem(await f.call("DELETE", `/v1/leases/${id}`), 404, "lease_not_found");
      assertProblem(await f.call("POST", `/v1/leases/${id}/renew`), 404, "lease_not_found");
    }
    assert.equal(f.service.calls.length, before);
  });

  test("malformed HTTP → 400 problem, server stays up", async () => {
    const res = await new Promise<string>((resolve) => {
      const sock = net.connect(f.socket);
      let data = "";
      sock.on("data", (d) => (data += d.toString()));
      sock.on("close", () => resolve(data));
      sock.on("error", () => undefined);
      sock.write("THIS IS NOT HTTP\r\n\r\n");
    });
    assert.match(res, /^HTTP\/1\.1 400 /);
    assert.match(res, /"code":"invalid_request"/);
    assert.match(res, new RegExp(`\r\nNetslot-Version: ${packageVersion().replace(/\./g, "\\.")}\r\n`));
    assert.equal((await f.call("GET", "/v1/health")).status, 200);
  });
});

describe("error codes", () => {
  test("not_found for unknown routes", async () => {
    for (const p of ["/", "/v1", "/v1/leases/", "/v2/health", "/v1/health/", "/v1/leases/a/b"]) {
      assertProblem(await f.call("GET", p), 404, "not_found");
    }
  });

  test("method_not_allowed with Allow", async () => {
    const put = await f.call("PUT", "/v1/leases");
    assertProblem(put, 405, "method_not_allowed");
    assert.equal(put.headers.allow, "GET, POST, HEAD");
    const del = await f.call("DELETE", "/v1/health");
    assertProblem(del, 405, "method_not_allowed");
    assert.equal(del.headers.allow, "GET, HEAD");
    const getRenew = await f.call("GET", "/v1/leases/abc/renew");
    assertProblem(getRenew, 405, "method_not_allowed");
    assert.equal(getRenew.headers.allow, "POST");
  });

  test("pool_exhausted → 503 with Retry-After", async () => {
    const ids: string[] = [];
    try {
      for (let i = 0; i < f.service.size; i++) ids.push(((await f.call("POST", "/v1/leases", json({}))).json as Lease).id);
      const res = await f.call("POST", "/v1/leases", json({}));
      assertProblem(res, 503, "pool_exhausted");
      assert.equal(res.headers["retry-after"], "1");
    } finally {
      for (const id of ids) await f.call("DELETE", `/v1/leases/${id}`);
    }
  });

  test("booting → 503 with Retry-After; health reports booting", async () => {
    f.service.status = "booting";
    try {
      const res = await f.call("POST", "/v1/leases", json({ ttlSeconds: 5 }));
      assertProblem(res, 503, "booting");
      assert.equal(res.headers["retry-after"], "3");
      assert.equal(((await f.call("GET", "/v1/health")).json as Health).status, "booting");
    } finally {
      f.service.status = "ready";
    }
  });

  test("store_unavailable → 503", async () => {
    f.service.failNext.set("acquire", new NetslotError("store_unavailable", "disk full"));
    const res = await f.call("POST", "/v1/leases", json({}));
    assertProblem(res, 503, "store_unavailable");
    assert.ok(res.headers["retry-after"]);
  });

  test("a service bug → 500 internal, logged, server stays up", async () => {
    f.service.failNext.set("acquire", new TypeError("cannot read properties of undefined"));
    const res = await f.call("POST", "/v1/leases", json({}));
    assertProblem(res, 500, "internal");
    assert.doesNotMatch(res.text, /cannot read properties/);
    const line = logged.find((l) => JSON.stringify(l["err"]).includes("cannot read properties"));
    assert.ok(line, JSON.stringify(logged));
    assert.equal(line["level"], "error");
    assert.equal(line["msg"], "unexpected error while answering a request");
    // The line names the request the client was answered for.
    assert.equal(typeof res.headers["x-request-id"], "string");
    assert.equal(line["reqId"], res.headers["x-request-id"]);
    f.service.failNext.set("health", "a thrown string");
    assertProblem(await f.call("GET", "/v1/health"), 500, "internal");
    assert.equal((await f.call("GET", "/v1/health")).status, 200);
  });

  test("slot_not_quarantined → 409 (quarantine release)", async () => {
    const ok = await f.call("POST", "/v1/pool/quarantined/3/release");
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.json, { index: 3, state: "scrubbing" });
    assertProblem(await f.call("POST", "/v1/pool/quarantined/1/release"), 409, "slot_not_quarantined");
    assertProblem(await f.call("POST", "/v1/pool/quarantined/x/release"), 404, "not_found");
    assert.deepEqual(f.admin.calls, [3, 1]);
  });
});

describe("consumers", () => {
  let c: Fixture;
  const A = { name: "alice", token: "tok-alice-0123456789" };
  const B = { name: "bob", token: "tok-bob-0123456789abc" };
  const as = (who: { token: string }, opts: RawOptions = {}): RawOptions => ({
    ...opts,
    headers: { ...opts.headers, authorization: `Bearer ${who.token}` },
  });

  before(async () => {
    c = await startFixture("consumers", [A, B]);
  });
  after(async () => {
    await c.server.close();
  });

  test("unauthorized without or with a wrong token; health and openapi stay public", async () => {
    const none = await c.call("GET", "/v1/leases");
    assertProblem(none, 401, "unauthorized");
    assert.match(String(none.headers["www-authenticate"]), /^Bearer/);
    assertProblem(await c.call("GET", "/v1/leases", { headers: { authorization: "Bearer nope" } }), 401, "unauthorized");
    assertProblem(await c.call("GET", "/v1/leases", { headers: { authorization: `Basic ${A.token}` } }), 401, "unauthorized");
    assertProblem(await c.call("GET", "/metrics"), 401, "unauthorized");
    assertProblem(await c.call("GET", "/v1/pool"), 401, "unauthorized");
    assertProblem(await c.call("GET", "/nope"), 401, "unauthorized");
    const before = c.service.calls.length;
    assertProblem(await c.call("POST", "/v1/leases", json({})), 401, "unauthorized");
    assert.equal(c.service.calls.length, before);
    // An unread body is not read to its end: the connection closes instead.
    const keepAlive = { connection: "keep-alive" };
    const withBody = json({ ttlSeconds: 5 });
    const unread = await c.call("POST", "/v1/leases", { ...withBody, headers: { ...withBody.headers, ...keepAlive } });
    assert.equal(unread.headers.connection, "close");
    assert.equal((await c.call("GET", "/v1/leases", { headers: keepAlive })).headers.connection, "keep-alive");
    assert.equal((await c.call("GET", "/v1/health")).status, 200);
    assert.equal((await c.call("GET", "/v1/openapi.json")).status, 200);
    assert.equal((await c.call("GET", "/v1/pool", as(A))).status, 200);
    assert.equal((await c.call("GET", "/v1/leases", { headers: { authorization: `bearer ${A.token}` } })).status, 200);
  });

  test("A and B cannot see each other's leases", async () => {
    const res = await c.call("POST", "/v1/leases", as(A, json({ ttlSeconds: 30 })));
    assert.equal(res.status, 201);
    const lease = res.json as Lease;
    assert.equal(lease.consumer, "alice");
    assertProblem(await c.call("GET", `/v1/leases/${lease.id}`, as(B)), 404, "lease_not_found");
    assertProblem(await c.call("DELETE", `/v1/leases/${lease.id}`, as(B)), 404, "lease_not_found");
    assertProblem(await c.call("POST", `/v1/leases/${lease.id}/renew`, as(B)), 404, "lease_not_found");
    assert.deepEqual((await c.call("GET", "/v1/leases", as(B))).json, { leases: [] });
    assert.equal(((await c.call("GET", "/v1/leases", as(A))).json as { leases: Lease[] }).leases.length, 1);
    assert.equal((await c.call("GET", `/v1/leases/${lease.id}`, as(A))).status, 200);
    assert.equal((await c.call("DELETE", `/v1/leases/${lease.id}`, as(A))).status, 204);
  });

  test("tenancy rules at the API: networks, owners, operator routes, narrowed pool view", async () => {
    const O = { name: "ops", token: "tok-ops-0123456789abcd", role: "operator" as const };
    const t = await startFixture("tenancy", [{ ...A, vnis: ["100-199", 4242] }, B, O]);
    try {
      const before = t.service.calls.length;
      assertProblem(await t.call("POST", "/v1/leases", as(A, json({ network: { vni: 200, cidr: "10.1.0.0/16" } }))), 403, "network_forbidden");
      assertProblem(await t.call("POST", "/v1/leases", as(B, json({ network: { vni: 100, cidr: "10.1.0.0/16" } }))), 403, "network_forbidden");
      assertProblem(await t.call("POST", "/v1/leases", as(A, json({ ownerPid: 1 }))), 403, "owner_forbidden");
      assertProblem(await t.call("POST", "/v1/leases", as(A, json({ owner: "caller", ownerPid: process.pid }))), 400, "invalid_request", "/ownerPid");
      assert.equal(t.service.calls.length, before, "refused requests never reach the pool");
      const ok = await t.call("POST", "/v1/leases", as(A, json({ network: { vni: 4242, cidr: "10.1.0.0/16" }, owner: "caller" })));
      assert.equal(ok.status, 201, ok.text);
      const lease = ok.json as Lease;
      assert.equal(lease.ownerPid, process.pid, "owner caller is this process, from SO_PEERCRED");
      for (const [method, url] of [
        ["GET", "/v1/leases?all=true"],
        ["POST", "/v1/pool/quarantined/3/release"],
        ["POST", "/v1/pool/drain"],
        ["DELETE", "/v1/pool/drain"],
      ] as const) {
        assertProblem(await t.call(method, url, as(B)), 403, "forbidden");
      }
      assertProblem(await t.call("DELETE", `/v1/leases/${lease.id}`, as(B)), 404, "lease_not_found");
      assertProblem(await t.call("GET", "/v1/leases?all=maybe", as(O)), 400, "invalid_request");
      assert.equal(((await t.call("GET", "/v1/leases?all=true", as(O))).json as { leases: Lease[] }).leases.length, 1);
      assert.equal((await t.call("GET", `/v1/leases/${lease.id}`, as(O))).status, 200);
      const consumerView = (await t.call("GET", "/v1/pool", as(B))).json as PoolCounts;
      assert.equal(consumerView.quarantinedSlots[0]!.reason, undefined, "reasons are for operators");
      assert.equal(((await t.call("GET", "/v1/pool", as(O))).json as PoolCounts).quarantinedSlots[0]!.reason, "scrub failed: nft table left behind");
      const health = (await t.call("GET", "/v1/health")).json as Record<string, unknown>;
      assert.deepEqual(Object.keys(health).sort(), ["draining", "pool", "status", "version"]);
      assert.equal("quarantinedSlots" in (health["pool"] as object), false);
      assert.equal((await t.call("DELETE", `/v1/leases/${lease.id}`, as(O))).status, 204, "an operator force-releases");
    } finally {
      await t.server.close();
    }
  });

  test("invalid consumer config is refused", () => {
    const service = new FakeService(3);
    assert.throws(() => createApiServer({ processes: processTree, service, consumers: [A, { name: "alice", token: "another-token-123456" }] }), /twice/);
    assert.throws(() => createApiServer({ processes: processTree, service, consumers: [A, { name: "carol", token: A.token }] }), /shares its token/);
    assert.throws(() => createApiServer({ processes: processTree, service, consumers: [{ name: "erin" }] }), /needs a token, uids or gids/);
    assert.throws(() => createApiServer({ processes: processTree, service, consumers: [{ ...A, vnis: ["9-3"] }] }), /low end first/);
    assert.throws(() => createApiServer({ processes: processTree, service, consumers: [{ ...A, quota: { reserved: 5, max: 2 } }] }), /larger than quota.max/);
    assert.throws(() => createApiServer({ processes: processTree, service, consumers: [{ ...A, uids: [1000] }, { ...B, uids: [1000] }] }), /also names consumer/);
    // The shape of an entry (token characters, role names) is the config schema's: config.test.ts.
  });
});

describe("socket file", () => {
  test("a stale socket is replaced, a live one or a regular file is refused", async () => {
    const stale = path.join(tmp, "stale.sock");
    // A process that dies while listening leaves its socket file behind.
    spawnSync(process.execPath, ["-e", `require("net").createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, "SIGKILL"))`]);
    assert.ok(fs.statSync(stale).isSocket());
    const s = createApiServer({ processes: processTree, service: new FakeService(3), logger });
    await s.listen(stale);
    assert.equal((await raw(stale, "GET", "/v1/health")).status, 200);

    const second = createApiServer({ processes: processTree, service: new FakeService(3), logger });
    await assert.rejects(second.listen(stale), /another process/);
    assert.equal((await raw(stale, "GET", "/v1/health")).status, 200);
    await s.close();
    assert.equal(fs.existsSync(stale), false);

    const file = path.join(tmp, "file.sock");
    fs.writeFileSync(file, "keep me");
    await assert.rejects(createApiServer({ processes: processTree, service: new FakeService(3), logger }).listen(file), /not a socket/);
    assert.equal(fs.readFileSync(file, "utf8"), "keep me");
  });
});

test("every response so far matched openapi.json", () => {
  assert.ok(checker.seen.length > 80, `only ${checker.seen.length} responses validated`);
});
