// deploy/prometheus and deploy/grafana: promtool accepts the rules and their unit tests pass;
// the dashboard is well-formed and every expression in it is valid PromQL. That the metrics
// they name exist is checked against a real daemon in test/integration/metrics.test.ts.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { RULES_FILE, RULES_TEST_FILE, allExpressions, promtool, readDashboard, referencedMetrics } from "../support/monitoring.js";

describe("Prometheus rules and Grafana dashboard", () => {
  it("promtool check rules accepts deploy/prometheus/netslot.rules.yml", () => {
    const r = promtool(["check", "rules", RULES_FILE]);
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, /SUCCESS: \d+ rules found/);
  });

  it("promtool test rules passes the alerting rules' unit tests", () => {
    const r = promtool(["test", "rules", RULES_TEST_FILE]);
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, /SUCCESS/);
  });

  it("the rules alert on pool exhaustion, quarantine, scrub failures and a daemon that is down", () => {
    const rules = fs.readFileSync(RULES_FILE, "utf8");
    const alerts = [...rules.matchAll(/- alert: (\w+)/g)].map((m) => m[1]);
    for (const name of ["NetslotPoolNearlyExhausted", "NetslotSlotsQuarantined", "NetslotScrubFailures", "NetslotDaemonDown"]) {
      assert.ok(alerts.includes(name), `${name} missing from ${alerts.join(", ")}`);
    }
    // Each alert is exercised by the unit tests.
    const tests = fs.readFileSync(RULES_TEST_FILE, "utf8");
    for (const name of alerts) assert.match(tests, new RegExp(`alertname: ${name}\\b`), `${name} has no promtool test`);
  });

  it("the dashboard is well-formed: unique panel ids, a datasource variable, no overlapping panels", () => {
    const d = readDashboard();
    assert.equal(d.uid, "netslot");
    assert.ok(d.templating.list.some((v) => v.name === "datasource"));
    const ids = d.panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, "duplicate panel id");
    for (const [i, a] of d.panels.entries()) {
      assert.ok(a.targets.length > 0, `panel ${a.title} has no query`);
      assert.ok(a.gridPos.x + a.gridPos.w <= 24, `panel ${a.title} wider than the grid`);
      for (const b of d.panels.slice(i + 1)) {
        const overlap = a.gridPos.x < b.gridPos.x + b.gridPos.w && b.gridPos.x < a.gridPos.x + a.gridPos.w && a.gridPos.y < b.gridPos.y + b.gridPos.h && b.gridPos.y < a.gridPos.y + a.gridPos.h;
        assert.ok(!overlap, `panels "${a.title}" and "${b.title}" overlap`);
      }
    }
    const titles = d.panels.map((p) => p.title.toLowerCase()).join(" | ");
    for (const topic of ["pool", "lease latency", "scrub outcomes"]) assert.ok(titles.includes(topic), `no panel about ${topic}: ${titles}`);
  });

  it("every dashboard and rule expression is valid PromQL (promtool parses them as recording rules)", () => {
    const exprs = allExpressions();
    assert.ok(exprs.length >= 15, `only ${exprs.length} expressions found`);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "netslot-promql-"));
    try {
      const file = path.join(dir, "exprs.yml");
      const body = exprs.map((e, i) => `      - record: netslot:expr_${i}\n        expr: ${JSON.stringify(e)}\n`).join("");
      fs.writeFileSync(file, `groups:\n  - name: exprs\n    rules:\n${body}`);
      const r = promtool(["check", "rules", file]);
      assert.equal(r.code, 0, r.output);
      // And a broken expression is refused, so the check above means something.
      fs.writeFileSync(file, `groups:\n  - name: exprs\n    rules:\n      - record: netslot:broken\n        expr: "sum by (le (rate(x[5m]))"\n`);
      assert.notEqual(promtool(["check", "rules", file]).code, 0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("names the pool, latency and scrub metric families", () => {
    const names = referencedMetrics();
    for (const m of ["netslot_pool_slots", "netslot_acquire_seconds", "netslot_scrub_outcomes_total", "netslot_ready"]) assert.ok(names.includes(m), `${m} not used: ${names.join(", ")}`);
  });
});
