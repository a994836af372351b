// Every answer of a REAL daemon (real slots, Pool.toLease, the tenancy checks, the store)
// checked against the OpenAPI document it serves: every operation's success answer and
// every error code of the registry, with the headers the document and docs/errors.md
// promise. A new route or error code fails the coverage check at the end until this file
// provokes it (or names the test that does).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ERRORS, type ErrorCode } from "../../src/core/errors.js";
import { OPERATIONS, type Lease, type OperationId } from "../../src/core/schema.js";
import { openApiDocument, type OpenApiDocument } from "../../src/api/openapi.js";
import { raw, ResponseChecker, type Answer, type Checked, type RawResult } from "../support/api-check.js";
import { CLI, createUpstream, isRoot, sh, spawnDaemon, testPrefix, waitFor, type DaemonProcess, type Upstream, skipUnless } from "../support/env.js";

const skip = skipUnless(isRoot(), "needs root");

/** Codes this file cannot provoke on a healthy host, and the test that does. */
const ELSEWHERE: Partial<Record<ErrorCode, string>> = {
  store_unavailable: "test/integration/disk-full.test.ts (state dir on a full tmpfs; its raw answers go through the same checker)",
  // A booting daemon grants leases as soon as its first slot is built; 503 booting only comes
  // before that, a window too short to hit reliably (a probe of a 24-slot boot saw health
  // report booting 59 times, yet a lease asked for then was granted). Checked on the fake.
  booting: "test/unit/api.test.ts (fake service in the booting state)",
};

/** Operations whose success this file does not provoke, and the test that does. */
const SUCCEEDS_ELSEWHERE: Partial<Record<OperationId, string>> = {
  // A handover starts a second daemon that outlives this file's cleanup of the first.
  upgrade: "test/integration/handover.test.ts (a live handover under load)",
};

const TOKENS = { ops: "tok-ops-0123456789abcd", alice: "tok-alice-0123456789ab", bob: "tok-bob-0123456789abcde" };
type Who = keyof typeof TOKENS | "nobody";

interface Call {
  as?: Who;
  body?: string | Buffer;
  json?: unknown;
  headers?: Record<string, string>;
}

function request(socketPath: string, method: string, urlPath: string, call: Call = {}): Promise<RawResult> {
  const headers: Record<string, string> = { ...call.headers };
  if (call.as !== undefined && call.as !== "nobody") headers["authorization"] = `Bearer ${TOKENS[call.as]}`;
  if (call.json !== undefined) headers["content-type"] ??= "application/json";
  const body = call.json !== undefined ? JSON.stringify(call.json) : call.body;
  return raw(socketPath, method, urlPath, { headers, ...(body !== undefined ? { body } : {}) });
}

describe("a real daemon's answers match its OpenAPI document", { skip }, () => {
  const checkers: ResponseChecker[] = [];
  const upstreams: Upstream[] = [];
  const daemons: { cleanup(): Promise<void> }[] = [];
  let dir = "";

  /** A daemon with consumers; `fault` arms one NETSLOT_TEST_FAULT point. */
  function spawnWithConsumers(fault: string, poolSize: number): DaemonProcess & { cleanup(): Promise<void> } {
    const prefix = testPrefix();
    const upstream = createUpstream(prefix);
    upstreams.push(upstream);
    const config = path.join(dir, `${prefix}.json`);
    fs.writeFileSync(
      config,
      JSON.stringify({
        profiles: { isolated: { egress: { allow: [] } } },
        consumers: [
          { name: "ops", token: TOKENS.ops, role: "operator" },
          { name: "alice", token: TOKENS.alice, vnis: ["100-199"], quota: { max: 1 } },
          { name: "bob", token: TOKENS.bob, profiles: [] },
        ],
      }),
    );
    const opts = {
      prefix,
      uplink: upstream.uplink,
      poolSize,
      vtepRemote: upstream.address,
      extraArgs: ["--config", config],
      env: { NETSLOT_TEST_FAULT: fault },
    };
    // Spawned without waiting for ready: the first test asks it for a lease while it boots.
    const daemon = spawnDaemon(opts);
    const cleanup = async (): Promise<void> => {
      await daemon.kill9();
      sh(process.execPath, [CLI, "purge", "--prefix", prefix, "--state-dir", daemon.stateDir], { allowFail: true });
      fs.rmSync(path.dirname(daemon.stateDir), { recursive: true, force: true });
    };
    return { ...daemon, cleanup };
  }

  /** One request, checked against the document the daemon itself serves. */
  async function call(daemon: DaemonProcess, index: number, method: string, urlPath: string, c: Call = {}): Promise<Answer & Checked> {
    const res = await request(daemon.socket, method, urlPath, c);
    const checked = checkers[index]!.check(method, urlPath, res);
    return { ...res, ...checked };
  }

  async function expectCode(p: Promise<Answer & Checked>, code: ErrorCode): Promise<Answer & Checked> {
    const res = await p;
    assert.equal(res.code, code, res.text);
    return res;
  }

  let main: DaemonProcess & { cleanup(): Promise<void> };
  let quarantining: DaemonProcess & { cleanup(): Promise<void> };

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "netslot-api-schema-"));
    // The main daemon: the 2nd renewal throws after its store write (a bug stand-in: 500 internal).
    main = spawnWithConsumers("renew.after-store:throw@2", 3);
    daemons.push(main);
    // A one-slot daemon whose scrubs fail, so a released slot is quarantined.
    quarantining = spawnWithConsumers("scrub.after-kernel:throw", 1);
    daemons.push(quarantining);
  });

  after(async () => {
    for (const d of daemons) await d.cleanup().catch(() => undefined);
    for (const u of upstreams) u.remove();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("serves the document core/schema.ts generates", async () => {
    for (const d of [main, quarantining]) {
      await waitFor(() => fs.existsSync(d.socket) || !d.running(), 60_000);
      assert.ok(d.running(), d.output());
      const doc = JSON.parse((await request(d.socket, "GET", "/v1/openapi.json")).text) as OpenApiDocument;
      assert.deepEqual(doc, openApiDocument());
      checkers.push(new ResponseChecker(doc));
    }
    for (const [i, d] of [main, quarantining].entries()) {
      await waitFor(async () => (JSON.parse((await call(d, i, "GET", "/v1/health")).text) as { status: string }).status === "ready", 120_000);
    }
  });

  it("answers every operation with its declared status and schema (Pool.toLease included)", async () => {
    const m = (method: string, p: string, c?: Call) => call(main, 0, method, p, c);
    await m("GET", "/v1/health");
    await m("HEAD", "/v1/health");
    await m("GET", "/v1/pool", { as: "ops" });
    await m("GET", "/v1/pool", { as: "alice" });
    const created = await m("POST", "/v1/leases", {
      as: "alice",
      json: { ttlSeconds: 300, labels: { job: "schema", "team/x": "y" }, network: { vni: 150, cidr: "10.77.0.0/16" }, owner: "caller" },
    });
    assert.equal(created.status, 201, created.text);
    const lease = JSON.parse(created.text) as Lease;
    assert.equal(created.headers.location, `/v1/leases/${lease.id}`);
    assert.deepEqual([lease.network, lease.ownerPid, lease.labels["job"]], [{ vni: 150, cidr: "10.77.0.0/16" }, process.pid, "schema"]);
    const withProfile = await m("POST", "/v1/leases", { as: "ops", json: { profile: "isolated", ownerPid: process.pid } });
    assert.equal(withProfile.status, 201, withProfile.text);
    assert.equal((JSON.parse(withProfile.text) as Lease).profile, "isolated");
    await m("GET", "/v1/leases", { as: "alice" });
    await m("GET", "/v1/leases?all=true", { as: "ops" });
    await m("GET", `/v1/leases/${lease.id}`, { as: "alice" });
    assert.equal((await m("POST", `/v1/leases/${lease.id}/renew`, { as: "alice", json: { ttlSeconds: 600 } })).status, 200);
    assert.equal((await m("DELETE", `/v1/leases/${(JSON.parse(withProfile.text) as Lease).id}`, { as: "ops" })).status, 204);
    await m("GET", "/v1/openapi.json");
    const metrics = await m("GET", "/metrics", { as: "ops" });
    assert.match(metrics.text, /netslot_http_requests_total\{/);
    assert.deepEqual(JSON.parse((await m("POST", "/v1/pool/drain", { as: "ops" })).text), { draining: true });
    await expectCode(m("POST", "/v1/leases", { as: "bob", json: {} }), "draining");
    assert.deepEqual(JSON.parse((await m("DELETE", "/v1/pool/drain", { as: "ops" })).text), { draining: false });

    // Errors that need a lease in place.
    await expectCode(m("POST", "/v1/leases", { as: "alice", json: {} }), "quota_exceeded");
    // The 2nd renewal of this daemon throws after its store write: a bug, answered 500 and logged.
    await expectCode(m("POST", `/v1/leases/${lease.id}/renew`, { as: "alice" }), "internal");
    assert.equal((await m("DELETE", `/v1/leases/${lease.id}`, { as: "alice" })).status, 204);
    const ended = await expectCode(m("GET", `/v1/leases/${lease.id}`, { as: "alice" }), "lease_not_found");
    assert.equal((JSON.parse(ended.text) as { ended?: { cause: string } }).ended?.cause, "released");
  });

  it("answers every error of the registry as a problem of the document", async () => {
    const m = (method: string, p: string, c?: Call) => call(main, 0, method, p, c);
    const json = { "content-type": "application/json" };
    await expectCode(m("GET", "/v1/pool"), "unauthorized");
    await expectCode(m("GET", "/v1/pool", { headers: { authorization: "Bearer not-a-token-of-anyone" } }), "unauthorized");
    await expectCode(m("GET", "/v1/leases?all=true", { as: "alice" }), "forbidden");
    await expectCode(m("POST", "/v1/pool/drain", { as: "bob" }), "forbidden");
    await expectCode(m("POST", "/v1/leases", { as: "alice", json: { network: { vni: 5, cidr: "10.1.0.0/16" } } }), "network_forbidden");
    await expectCode(m("POST", "/v1/leases", { as: "ops", json: { ownerPid: 1 } }), "owner_forbidden");
    await expectCode(m("POST", "/v1/leases", { as: "bob", json: { profile: "isolated" } }), "profile_forbidden");
    for (const body of ['{"ttlSeconds": 0}', '{"colour": "red"}', "{not json", '{"profile": "nope"}']) {
      await expectCode(m("POST", "/v1/leases", { as: "ops", body, headers: json }), "invalid_request");
    }
    await expectCode(m("GET", "/v1/leases?all=maybe", { as: "ops" }), "invalid_request");
    await expectCode(m("POST", "/v1/leases", { as: "ops", body: "ttlSeconds=5", headers: { "content-type": "application/x-www-form-urlencoded" } }), "unsupported_media_type");
    await expectCode(m("POST", "/v1/leases", { as: "ops", body: Buffer.alloc(70 * 1024, 0x20), headers: json }), "payload_too_large");
    await expectCode(m("GET", "/v1/leases/l_doesnotexist", { as: "ops" }), "lease_not_found");
    await expectCode(m("DELETE", "/v1/leases/%ZZ", { as: "ops" }), "lease_not_found");
    await expectCode(m("GET", "/v1/nothing-here", { as: "ops" }), "not_found");
    await expectCode(m("GET", "/v1/pool/quarantined/x/release", { as: "ops" }), "not_found");
    await expectCode(m("PUT", "/v1/leases", { as: "ops" }), "method_not_allowed");
    await expectCode(m("POST", "/v1/pool/quarantined/0/release", { as: "ops" }), "slot_not_quarantined");
    // Every slot leased: the next one is refused until one comes back.
    await waitFor(async () => (JSON.parse((await m("GET", "/v1/pool", { as: "ops" })).text) as { free: number }).free === 3, 30_000);
    const held: string[] = [];
    for (let i = 0; i < 3; i++) held.push((JSON.parse((await m("POST", "/v1/leases", { as: "ops", json: {} })).text) as Lease).id);
    await expectCode(m("POST", "/v1/leases", { as: "ops", json: {} }), "pool_exhausted");
    for (const id of held) assert.equal((await m("DELETE", `/v1/leases/${id}`, { as: "ops" })).status, 204);
  });

  it("releases a quarantined slot back to scrubbing (operator route)", async () => {
    const q = (method: string, p: string, c?: Call) => call(quarantining, 1, method, p, c);
    await expectCode(q("POST", "/v1/pool/quarantined/0/release", { as: "ops" }), "slot_not_quarantined");
    // A handover the new daemon refuses leaves this one serving.
    await expectCode(q("POST", "/v1/upgrade", { as: "bob", json: {} }), "forbidden");
    await expectCode(q("POST", "/v1/upgrade", { as: "ops", json: { args: ["--pool-size", "many"] } }), "upgrade_failed");
    assert.equal((await q("GET", "/v1/health")).status, 200);
    const created = await q("POST", "/v1/leases", { as: "ops", json: {} });
    assert.equal(created.status, 201, created.text);
    assert.equal((await q("DELETE", `/v1/leases/${(JSON.parse(created.text) as Lease).id}`, { as: "ops" })).status, 204);
    // Its scrub throws: the slot is quarantined with the reason, shown to operators.
    await waitFor(async () => (JSON.parse((await q("GET", "/v1/pool", { as: "ops" })).text) as { quarantined: number }).quarantined === 1, 30_000);
    const pool = JSON.parse((await q("GET", "/v1/pool", { as: "ops" })).text) as { quarantinedSlots: { reason?: string }[] };
    assert.match(pool.quarantinedSlots[0]?.reason ?? "", /injected failure/);
    const retried = await q("POST", "/v1/pool/quarantined/0/release", { as: "ops" });
    assert.equal(retried.status, 200, retried.text);
    assert.equal((JSON.parse(retried.text) as { index: number }).index, 0);
  });

  it("saw every operation succeed and every error code, each matching the document", (t) => {
    const seen = checkers.flatMap((c) => c.seen);
    const succeeded = new Set(seen.filter((s) => s.status < 400).map((s) => `${s.operationId} ${s.status}`));
    const expected = (Object.entries(OPERATIONS) as [OperationId, (typeof OPERATIONS)[OperationId]][]).map(([id, op]) => `${id} ${op.response.status}`);
    const notSeen = expected.filter((e) => !succeeded.has(e) && SUCCEEDS_ELSEWHERE[e.split(" ")[0] as OperationId] === undefined);
    assert.deepEqual(notSeen, [], "operations never answered with their success status (provoke them here, or name the test that does)");
    const codes = new Set(seen.flatMap((s) => (s.code ? [s.code] : [])));
    const missing = (Object.keys(ERRORS) as ErrorCode[]).filter((c) => !codes.has(c) && ELSEWHERE[c] === undefined);
    assert.deepEqual(missing, [], "error codes never provoked (provoke them here, or name the test that does in ELSEWHERE)");
    assert.ok(seen.length > 50, `${seen.length} answers checked`);
    t.diagnostic(`${seen.length} answers checked; ${codes.size} error codes; elsewhere: ${Object.keys(ELSEWHERE).join(", ")}`);
  });
});
