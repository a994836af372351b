// A real daemon's GET /metrics, after leases and releases: `promtool check metrics` (the
// exposition format and Prometheus' naming lints) accepts it, and every metric family that
// deploy/prometheus and deploy/grafana use is in it.
import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { daemonSuite, CLI, isRoot, waitFor, skipUnless } from "../support/env.js";
import { promtool, referencedMetrics } from "../support/monitoring.js";

const skip = skipUnless(isRoot(), "needs root");

describe("metrics of a real daemon", { skip }, () => {
  const { daemon } = daemonSuite({ poolSize: 3 });
  let text = "";

  before(async () => {
    // Exercise every path that feeds a metric: grants, releases, scrubs, an API error.
    for (let i = 0; i < 3; i++) {
      const lease = await daemon.client.acquire({ bindToProcess: false });
      await daemon.client.release(lease.id);
    }
    await daemon.client.get("no-such-lease").catch(() => undefined);
    await waitFor(async () => (await daemon.client.pool()).free === 3, 30_000);
    text = await daemon.client.metrics();
  });

  it("promtool check metrics accepts the exposition", () => {
    assert.ok(text.length > 0);
    const r = promtool(["check", "metrics"], text);
    assert.equal(r.code, 0, `${r.output}\n--- /metrics ---\n${text}`);
  });

  it("holds every metric family the alerting rules and the dashboard use", () => {
    const families = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]));
    const missing = referencedMetrics().filter((m) => !families.has(m));
    assert.deepEqual(missing, [], `not exposed: ${missing.join(", ")}`);
  });

  it("counts what happened: 3 leases, 3 clean-or-rebuilt scrubs", () => {
    assert.match(text, /^netslot_leases_total(\{[^}]*\})? 3$/m);
    const scrubs = [...text.matchAll(/^netslot_scrub_outcomes_total\{outcome="(clean|rebuilt)"\} (\d+)$/gm)].reduce((n, m) => n + Number(m[2]), 0);
    assert.equal(scrubs, 3);
  });

  it("reports the main event loop's delay by percentile", () => {
    for (const p of ["50", "90", "99", "100"]) {
      const m = new RegExp(`^netslot_event_loop_delay_seconds\\{percentile="${p}"\\} (\\S+)$`, "m").exec(text);
      assert.ok(m, `percentile ${p} missing`);
      const v = Number(m[1]);
      assert.ok(v >= 0 && v < 5, `percentile ${p}: ${m[1]}`);
    }
  });

  it("netslot metrics-exporter serves /metrics alone over TCP, and fails the scrape when the daemon is down", async () => {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const exporter = spawn(process.execPath, [CLI, "metrics-exporter", "--listen", `127.0.0.1:${port}`, "--socket", daemon.socket], { stdio: ["ignore", "pipe", "pipe"] });
    let log = "";
    exporter.stderr.on("data", (b: Buffer) => (log += b.toString()));
    const exited = new Promise<number | null>((resolve) => exporter.once("exit", (code) => resolve(code)));
    try {
      await waitFor(() => log.includes("serving"), 10_000, { abort: () => exporter.exitCode !== null });
      const base = `http://127.0.0.1:${port}`;
      const ok = await fetch(`${base}/metrics`);
      assert.equal(ok.status, 200);
      assert.match(ok.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
      const body = await ok.text();
      assert.equal(promtool(["check", "metrics"], body).code, 0);
      assert.match(body, /^netslot_pool_slots\{state="free"\} 3$/m);
      // Nothing of the API is reachable over TCP.
      assert.equal((await fetch(`${base}/v1/leases`, { method: "POST", body: "{}" })).status, 404);
      assert.equal((await fetch(`${base}/v1/pool`)).status, 404);
      assert.equal((await fetch(`${base}/metrics`, { method: "POST" })).status, 405);
      // Daemon gone: the scrape fails (Prometheus records up=0).
      await daemon.stop();
      assert.equal((await fetch(`${base}/metrics`)).status, 503);
    } finally {
      exporter.kill("SIGTERM");
    }
    assert.equal(await exited, 0, log);
  });
});
