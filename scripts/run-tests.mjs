#!/usr/bin/env node
// Runs the whole suite: unit tests, then the root integration tests one file at a time
// (they create kernel objects; running them in parallel would only make failures harder
// to read). Ends with node's test runner summary.
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";

function find(dir) {
  let out = [];
  let entries;
  try { entries = readdirSync(dir); } catch { return out; }
  for (const name of entries.sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out = out.concat(find(p));
    else if (name.endsWith(".test.js")) out.push(p);
  }
  return out;
}

const only = process.argv.slice(2);
const groups = only.length ? only : ["unit", "integration"];
const files = groups.flatMap((g) => find(join("dist", "test", g)));
if (files.length === 0) {
  console.error("no test files found; run npm run build first");
  process.exit(1);
}
const result = spawnSync(process.execPath, ["--test", "--test-concurrency=1", "--test-reporter=spec", ...files], { stdio: "inherit" });
process.exit(result.status ?? 1);
