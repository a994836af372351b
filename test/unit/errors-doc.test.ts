// docs/errors.md and openapi.json must list exactly the registry's codes and statuses.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { ERRORS } from "../../src/core/errors.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

function registry(): Map<string, number> {
  return new Map(Object.entries(ERRORS).map(([code, entry]) => [code, entry.status]));
}

test("docs/errors.md lists exactly the registry's codes with the same statuses", () => {
  const text = fs.readFileSync(path.join(ROOT, "docs", "errors.md"), "utf8");
  const documented = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^\|\s*`([a-z_]+)`\s*\|\s*(\d{3})\s*\|([^|]+)\|([^|]+)\|\s*$/.exec(line);
    if (!m) continue;
    assert.ok(!documented.has(m[1]!), `${m[1]} is documented twice`);
    assert.ok(m[3]!.trim().length > 0 && m[4]!.trim().length > 0, `${m[1]} needs a meaning and a fix`);
    documented.set(m[1]!, Number(m[2]));
  }
  assert.deepEqual([...documented.entries()].sort(), [...registry().entries()].sort());
});

test("openapi.json's ErrorCode enum is the registry", () => {
  const doc = JSON.parse(fs.readFileSync(path.join(ROOT, "src", "api", "openapi.json"), "utf8")) as {
    components: { schemas: { ErrorCode: { enum: string[] } } };
  };
  assert.deepEqual([...doc.components.schemas.ErrorCode.enum].sort(), [...registry().keys()].sort());
});

test("every registry entry has a title and a fix", () => {
  for (const [code, entry] of Object.entries(ERRORS)) {
    assert.ok(entry.title.length > 0, code);
    assert.ok(entry.fix.length > 0, code);
    assert.ok(entry.status >= 400 && entry.status <= 599, code);
  }
});
