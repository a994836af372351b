// The API contract is defined once (src/core/schema.ts, src/core/errors.ts): the committed
// files generated from it must be up to date, and validation must pass every field on.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ERRORS } from "../../src/core/errors.js";
import { LeaseRequest, OPERATIONS, pathOf } from "../../src/core/schema.js";
import { GENERATE_COMMAND, generatedFiles, repositoryRoot, staleFiles } from "../../src/api/generate.js";
import { ERRORS_TABLE_BEGIN, ERRORS_TABLE_END, openApiDocument } from "../../src/api/openapi.js";
import { createRequestValidators } from "../../src/api/validate.js";

const ROOT = repositoryRoot();

test("the committed openapi.json and docs/errors.md are what the generator makes", () => {
  const stale = staleFiles(ROOT);
  assert.deepEqual(
    stale,
    [],
    `${stale.join(", ")} differ from what src/core/schema.ts and src/core/errors.ts generate: run \`${GENERATE_COMMAND}\` and commit the result`,
  );
});

test("the drift check reports a file edited by hand, and only that one", () => {
  const copy = fs.mkdtempSync(path.join(os.tmpdir(), "netslot-drift-"));
  try {
    fs.writeFileSync(path.join(copy, "package.json"), "{}");
    for (const file of generatedFiles(ROOT)) {
      fs.mkdirSync(path.dirname(path.join(copy, file.path)), { recursive: true });
      fs.copyFileSync(path.join(ROOT, file.path), path.join(copy, file.path));
    }
    assert.deepEqual(staleFiles(copy), []);
    const doc = path.join(copy, "src/api/openapi.json");
    fs.writeFileSync(doc, fs.readFileSync(doc, "utf8").replace('"maximum": 86400', '"maximum": 86401'));
    assert.deepEqual(staleFiles(copy), ["src/api/openapi.json"]);
    const errorsDoc = path.join(copy, "docs/errors.md");
    fs.writeFileSync(errorsDoc, fs.readFileSync(errorsDoc, "utf8").replace("| `internal` | 500 |", "| `internal` | 503 |"));
    assert.deepEqual(staleFiles(copy), ["src/api/openapi.json", "docs/errors.md"]);
    // Text outside the markers is the writer's own.
    fs.copyFileSync(path.join(ROOT, "docs/errors.md"), errorsDoc);
    fs.appendFileSync(errorsDoc, "\nA note of the writer.\n");
    assert.deepEqual(staleFiles(copy), ["src/api/openapi.json"]);
    fs.writeFileSync(errorsDoc, "# no markers\n");
    assert.throws(() => staleFiles(copy), /markers/);
  } finally {
    fs.rmSync(copy, { recursive: true, force: true });
  }
});

test("docs/errors.md's table has exactly the registry's codes and statuses", () => {
  const text = fs.readFileSync(path.join(ROOT, "docs", "errors.md"), "utf8");
  const generated = text.slice(text.indexOf(ERRORS_TABLE_BEGIN), text.indexOf(ERRORS_TABLE_END));
  const documented = new Map<string, number>();
  for (const line of generated.split("\n")) {
    const m = /^\|\s*`([a-z_]+)`\s*\|\s*(\d{3})\s*\|([^|]+)\|([^|]+)\|\s*$/.exec(line);
    if (m) documented.set(m[1]!, Number(m[2]));
  }
  assert.deepEqual([...documented.entries()].sort(), Object.entries(ERRORS).map(([c, e]) => [c, e.status]).sort());
});

test("openapi's ErrorCode enum is the registry; every entry has a title, a meaning and a fix", () => {
  const schema = openApiDocument().components.schemas["ErrorCode"] as { enum: string[] };
  assert.deepEqual([...schema.enum].sort(), Object.keys(ERRORS).sort());
  for (const [code, entry] of Object.entries(ERRORS)) {
    assert.ok(entry.title.length > 0 && entry.meaning.length > 0 && entry.fix.length > 0, code);
    assert.ok(entry.status >= 400 && entry.status <= 599, code);
  }
});

test("the document's paths and methods are exactly the operations", () => {
  const doc = openApiDocument();
  const fromDoc = Object.entries(doc.paths).flatMap(([p, item]) =>
    Object.keys(item)
      .filter((k) => k !== "parameters")
      .map((m) => `${m} ${p} ${(item[m] as { operationId: string }).operationId}`),
  );
  const fromOps = Object.entries(OPERATIONS).map(([id, op]) => `${op.method} ${op.path} ${id}`);
  assert.deepEqual(fromDoc.sort(), fromOps.sort());
});

test("pathOf fills and encodes the template", () => {
  assert.equal(pathOf("getLease", { id: "l_a/b c" }), "/v1/leases/l_a%2Fb%20c");
  assert.equal(pathOf("renewLease", { id: "x" }), "/v1/leases/x/renew");
  assert.equal(pathOf("releaseQuarantined", { index: 7 }), "/v1/pool/quarantined/7/release");
  assert.equal(pathOf("listLeases"), "/v1/leases");
});

test("a valid body reaches the service whole: every field of the schema, nothing dropped", () => {
  const validators = createRequestValidators();
  const body = { ttlSeconds: 60, labels: { job: "ci" }, network: { vni: 7, cidr: "10.1.0.0/16" }, profile: "isolated", ownerPid: 42 };
  // owner and ownerPid exclude each other: the second example carries owner.
  const other = { ttlSeconds: 60, owner: "caller" as const, waitSeconds: 5 };
  // The examples must use every field the schema has, so a new field shows up here.
  assert.deepEqual(
    [...new Set([...Object.keys(body), ...Object.keys(other)])].sort(),
    Object.keys(LeaseRequest.properties).sort(),
    "extend the example with the new field",
  );
  for (const example of [body, other]) {
    const checked = validators.body("acquireLease", structuredClone(example));
    assert.ok(checked.ok);
    assert.deepEqual(checked.value, example);
  }
  const both = validators.body("acquireLease", { ...body, owner: "caller" });
  assert.deepEqual(both.ok ? null : both.error.field, "/ownerPid");
  const unknown = validators.body("acquireLease", { ...body, colour: "red" });
  assert.deepEqual(unknown.ok ? null : unknown.error.field, "/colour");
});
