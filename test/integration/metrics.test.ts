// A real daemon's GET /metrics, after leases and releases: `promtool check metrics` (the
// exposition format and Prometheus' naming lints) accepts it, and every metric family that
// deploy/prometheus and deploy/grafana use is in it.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createUpstream, isRoot, startDaemon, testPrefix, waitFor, type DaemonHandle, type Upstream } from "../support/env.js";
import { promtool, referencedMetrics } from "../support/monitoring.js";

const skip = isRoot() ? false : "needs root";

describe("metrics of a real daemon", { skip }, () => {
  const prefix = testPrefix();
  let upstream: Upstream;
  let daemon: DaemonHandle;
  let text = "";

  before(async () => {
    upstream = createUpstream(prefix);
    daemon = await startDaemon({ prefix, uplink: upstream.uplink, poolSize: 3 });
    // Exercise every path that feeds a metric: grants, releases, scrubs, an API error.
    for (let i = 0; i < 3; i++) {
      const lease = await daemon.client.acquire({ bindToProcess: false });
      await daemon.client.release(lease.id);
    }
    await daemon.client.get("no-such-lease").catch(() => undefined);
    await waitFor(async () => (await daemon.client.pool()).free === 3, 30_000);
    text = await daemon.client.metrics();
  });

  after(async () => {
    await daemon?.cleanup();
    upstream?.remove();
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
});
