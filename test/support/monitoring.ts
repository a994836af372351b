// The Prometheus rules and Grafana dashboard under deploy/, as the tests read them, and
// promtool (Debian's `prometheus` package) to check them.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { REPO_ROOT } from "./env.js";

export const RULES_DIR = path.join(REPO_ROOT, "deploy", "prometheus");
export const RULES_FILE = path.join(RULES_DIR, "netslot.rules.yml");
export const RULES_TEST_FILE = path.join(RULES_DIR, "netslot.rules.test.yml");
export const DASHBOARD_FILE = path.join(REPO_ROOT, "deploy", "grafana", "netslot-dashboard.json");

export interface ToolResult {
  code: number;
  output: string;
}

/** Runs promtool; a missing promtool is an error (scripts/install.sh installs it), never a skip. */
export function promtool(args: string[], input?: string): ToolResult {
  const r = spawnSync("promtool", args, { encoding: "utf8", input, cwd: RULES_DIR });
  if (r.error) throw new Error(`promtool: ${r.error.message} (Debian package "prometheus"; run scripts/install.sh)`);
  return { code: r.status ?? -1, output: `${r.stdout}${r.stderr}` };
}

export interface DashboardPanel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  targets: Array<{ refId: string; expr: string }>;
}

export interface Dashboard {
  uid: string;
  title: string;
  panels: DashboardPanel[];
  templating: { list: Array<{ name: string }> };
}

export function readDashboard(): Dashboard {
  return JSON.parse(fs.readFileSync(DASHBOARD_FILE, "utf8")) as Dashboard;
}

/** Every PromQL expression of the rules and the dashboard, Grafana's variables substituted. */
export function allExpressions(): string[] {
  const rules = fs.readFileSync(RULES_FILE, "utf8");
  // The rules are YAML; the expressions are either one line or a `|` block.
  const fromRules: string[] = [];
  const lines = rules.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const m = /^(\s*)expr:\s*(.*)$/.exec(lines[i]!);
    if (!m) continue;
    if (m[2] !== "|") {
      fromRules.push(m[2]!);
      continue;
    }
    const block: string[] = [];
    while (i + 1 < lines.length && (lines[i + 1]!.trim() === "" || /^\s+/.exec(lines[i + 1]!)![0].length > m[1]!.length)) block.push(lines[++i]!.trim());
    fromRules.push(block.join(" ").trim());
  }
  const fromDashboard = readDashboard().panels.flatMap((p) => p.targets.map((t) => t.expr));
  return [...fromRules, ...fromDashboard].map((e) => e.replaceAll("$__rate_interval", "5m").replaceAll("$instance", ".*"));
}

/** netslot metric families the expressions name (histogram series mapped to their family). */
export function referencedMetrics(): string[] {
  const names = new Set<string>();
  for (const expr of allExpressions()) {
    for (const m of expr.matchAll(/\bnetslot_[a-z_]+/g)) names.add(m[0].replace(/_(bucket|sum|count)$/, ""));
  }
  return [...names].sort();
}
