// The peers' per-VM setup, measured in the same run: shared/baselines/*.sh print one JSON
// line each ({"baseline","n","setup_us_per_vm","teardown_us_per_vm","root_rules_added"}).
import * as fs from "node:fs";
import * as path from "node:path";
import { REPO_ROOT } from "../../test/support/env.js";
import { errorText, now, runAsync } from "./util.js";

export interface BaselineResult {
  baseline: string;
  n: number;
  setupMsPerVm?: number;
  teardownMsPerVm?: number;
  rootRulesAdded?: number;
  wallSeconds: number;
  raw?: string;
  skipped?: string;
}

/** Where the baseline scripts live: $NETSLOT_BASELINES, else ../shared/baselines next to the repo. */
export function baselinesDir(): string {
  return process.env.NETSLOT_BASELINES ?? path.resolve(REPO_ROOT, "..", "shared", "baselines");
}

export async function runBaseline(script: "per-vm-shell" | "cni-bridge", n: number): Promise<BaselineResult> {
  const file = path.join(baselinesDir(), `${script}.sh`);
  if (!fs.existsSync(file)) return { baseline: script, n, wallSeconds: 0, skipped: `${file} not found` };
  const t = now();
  let r;
  try {
    r = await runAsync("bash", [file, String(n)], { timeoutMs: Math.max(600_000, n * 1000) });
  } catch (err) {
    return { baseline: script, n, wallSeconds: (now() - t) / 1000, skipped: errorText(err) };
  }
  const wallSeconds = (now() - t) / 1000;
  const line = r.stdout
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.startsWith("{"))
    .pop();
  if (r.code !== 0 || !line) {
    return { baseline: script, n, wallSeconds, skipped: `exit ${r.code}: ${(r.stderr || r.stdout).trim().slice(0, 500)}` };
  }
  const doc = JSON.parse(line) as { baseline: string; n: number; setup_us_per_vm: number; teardown_us_per_vm: number; root_rules_added: number };
  return {
    baseline: doc.baseline,
    n: doc.n,
    setupMsPerVm: doc.setup_us_per_vm / 1000,
    teardownMsPerVm: doc.teardown_us_per_vm / 1000,
    rootRulesAdded: doc.root_rules_added,
    wallSeconds,
    raw: line,
  };
}
