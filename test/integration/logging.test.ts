// The daemon's stderr off a terminal is JSON lines only, from boot to shutdown, its scrub
// worker thread included: level, time and msg on every line; audit lines with event,
// consumer, lease and slot; lines logged while serving a request with its reqId (the
// X-Request-Id the client sent or was answered with).
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { isRoot, startDaemon, testPrefix, waitFor, skipUnless, suiteFixture } from "../support/env.js";
import { raw } from "../support/api-check.js";

const skip = skipUnless(isRoot(), "needs root");

type Line = Record<string, unknown>;

const LEVELS = new Set(["fatal", "error", "warn", "info", "debug", "trace"]);
const ISO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

describe("the daemon logs JSON lines off a terminal", { skip }, () => {
  const prefix = testPrefix();
  const fixture = suiteFixture(prefix);

  it("a lease lifecycle, a bad request and a shutdown: every line parses, audits and requests carry their fields", async () => {
    const daemon = await startDaemon({ prefix, uplink: fixture.upstream.uplink, poolSize: 2, progress: true, extraArgs: ["--log-level", "debug"] });
    fixture.daemons.push(daemon);
    const json = { "content-type": "application/json" };

    const granted = await raw(daemon.socket, "POST", "/v1/leases", { headers: { ...json, "x-request-id": "log-test-grant" }, body: "{}" });
    assert.equal(granted.status, 201, granted.text);
    assert.equal(granted.headers["x-request-id"], "log-test-grant", "a client's request id is kept");
    const lease = granted.json as { id: string; slot: { index: number } };

    const bad = await raw(daemon.socket, "POST", "/v1/leases", { headers: json, body: '{"ttlSeconds":"soon"}' });
    assert.equal(bad.status, 400, bad.text);
    assert.match(String(bad.headers["content-type"]), /^application\/problem\+json/);
    assert.equal((bad.json as { code: string }).code, "invalid_request");
    assert.match(String(bad.headers["x-request-id"]), /^[0-9a-f-]{36}$/, "the daemon names a request that came without an id");

    const released = await raw(daemon.socket, "DELETE", `/v1/leases/${lease.id}`, { headers: { "x-request-id": "log-test-release" } });
    assert.equal(released.status, 204, released.text);
    // The scrub runs after the answer, on the worker thread; the slot returns once it is done.
    await waitFor(async () => (await daemon.client.pool()).free === 2, 30_000);
    await daemon.stop();
    assert.equal(daemon.process.exitCode, 0, daemon.output());
    if (!daemon.process.stderr!.closed) await new Promise((resolve) => daemon.process.stderr!.once("close", resolve));

    const text = daemon.output();
    assert.ok(text.endsWith("\n"), "ends with a whole line");
    const lines: Line[] = text
      .slice(0, -1)
      .split("\n")
      .map((l, i) => {
        let line: Line;
        try {
          line = JSON.parse(l) as Line;
        } catch {
          assert.fail(`line ${i + 1} is not JSON: ${l}`);
        }
        assert.ok(LEVELS.has(String(line["level"])), `line ${i + 1}: level ${String(line["level"])}`);
        assert.match(String(line["time"]), ISO_TIME, `line ${i + 1}: time`);
        assert.equal(typeof line["msg"], "string", `line ${i + 1}: msg`);
        assert.ok((line["msg"] as string).length > 0, `line ${i + 1}: empty msg`);
        return line;
      });

    const byMsg = (re: RegExp) => lines.filter((l) => re.test(String(l["msg"])));
    assert.equal(byMsg(/^listening on /).length, 1, text);
    const ready = byMsg(/^ready: 2\/2 slots \(0 adopted, 2 built\) in [\d.]+s/);
    assert.equal(ready.length, 1, text);
    assert.deepEqual([ready[0]!["built"], ready[0]!["total"], ready[0]!["adopted"]], [2, 2, 0]);
    assert.ok(byMsg(/^pool 2\/2 \(0 adopted\)/).length >= 1, `a progress line: ${text}`);
    assert.equal(byMsg(/^SIGTERM: stopping/).length, 1, text);

    const audits = lines.filter((l) => l["msg"] === "audit");
    const grant = audits.find((l) => l["event"] === "grant");
    const release = audits.find((l) => l["event"] === "release");
    assert.ok(grant && release, `grant and release audited: ${JSON.stringify(audits)}`);
    for (const [line, reqId] of [
      [grant, "log-test-grant"],
      [release, "log-test-release"],
    ] as const) {
      assert.equal(line["level"], "info");
      assert.equal(line["consumer"], "default");
      assert.equal(line["lease"], lease.id);
      assert.equal(line["slot"], lease.slot.index);
      assert.equal(line["reqId"], reqId, `the audit of a request names it: ${JSON.stringify(line)}`);
    }
    // A bad request is answered, not logged; nothing else carries its id.
    assert.equal(lines.filter((l) => l["reqId"] === bad.headers["x-request-id"]).length, 0);
    // Lines outside any request (boot, the scrub after the answer) carry none.
    assert.equal(ready[0]!["reqId"], undefined);

    // The scrub worker thread logs through its own logger, marked as such.
    const scrubbed = lines.filter((l) => l["thread"] === "scrub" && l["job"] === "scrub");
    assert.equal(scrubbed.length, 1, `one scrub on the worker thread: ${text}`);
    assert.equal(scrubbed[0]!["slot"], lease.slot.index);
    assert.equal(scrubbed[0]!["level"], "debug");
    assert.equal(scrubbed[0]!["reqId"], undefined);
    // Every line of one daemon names its pid (two daemons share a journal during an upgrade).
    assert.deepEqual([...new Set(lines.map((l) => l["pid"]))], [daemon.process.pid]);
  });
});
