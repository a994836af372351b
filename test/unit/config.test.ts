// The daemon's configuration: one TypeBox schema (src/core/config-schema.ts) validates the
// file and the flags (ajv); a bad value is one line naming the key and what it must be, and
// the daemon exits 2 before it builds anything.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { ConfigError, DEFAULTS, checkConfigFile, parseDaemonArgs } from "../../src/daemon/config.js";
import { DaemonConfigSchema, settingFlags } from "../../src/core/config-schema.js";

const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "src", "cli", "main.js");

/** The daemon's one line on stderr (a fatal JSON line off a terminal): its message. */
function fatalMessage(stderr: string): string {
  const lines = stderr.split("\n");
  assert.deepEqual(lines.length, 2, stderr);
  return String((JSON.parse(lines[0]!) as { msg: unknown }).msg);
}

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    assert.doesNotMatch(err.message, /\n/);
    return err.message;
  }
  assert.fail("accepted");
}

test("file errors name the key as a dotted JSON path and say what it must be", () => {
  const token = "t".repeat(16);
  const cases: Array<[unknown, string]> = [
    [{ colour: 1 }, "colour: unknown key; expected one of poolSize, "],
    [{ poolSize: "8" }, "poolSize: must be a whole number"],
    [{ poolSize: 0 }, "poolSize: must be at least 1"],
    [{ poolSize: 65537 }, "poolSize: must be at most 65536"],
    [{ prefix: "Bad" }, "prefix: must be 1-8 characters of [a-z0-9]"],
    [{ consumers: {} }, "consumers: must be a list"],
    [{ consumers: [{ token }] }, "consumers[0]: needs name"],
    [{ consumers: [{ name: "a", token: "short" }] }, "consumers[0].token: must be 16-4096 characters of visible ASCII without spaces"],
    [{ consumers: [{ name: "a", token, vnis: ["1-2", "x"] }] }, 'consumers[0].vnis[1]: must be a VNI or a range "A-B"'],
    [{ consumers: [{ name: "a", token, role: "admin" }] }, 'consumers[0].role: must be "consumer" or "operator"'],
    [{ consumers: [{ name: "a", token, quota: { max: 0 } }] }, "consumers[0].quota.max: must be at least 1"],
    [{ consumers: [{ name: "a", token, quota: { min: 1 } }] }, "consumers[0].quota.min: unknown key; expected one of reserved, max"],
    [{ consumers: [{ name: "a", uids: [] }] }, "consumers[0].uids: must list at least 1 entry"],
    [{ profiles: { m: { egress: { allow: new Array(1025).fill("10.0.0.0/8") } } } }, "profiles.m.egress.allow: must list at most 1024 entries"],
  ];
  for (const [file, message] of cases) {
    const got = refusal(() => checkConfigFile(file, "config file /etc/netslot.json"));
    assert.ok(got.startsWith(`config file /etc/netslot.json: ${message}`), `${JSON.stringify(file)}: ${got}`);
  }
  assert.equal(refusal(() => checkConfigFile([])), "config file must hold a JSON object");
});

test("flags are checked against the same schema and name the flag", () => {
  assert.equal(refusal(() => parseDaemonArgs(["--pool-size", "abc"])), "--pool-size: must be a whole number");
  assert.equal(refusal(() => parseDaemonArgs(["--pool-size", "1.5"])), "--pool-size: must be a whole number");
  assert.equal(refusal(() => parseDaemonArgs(["--guest-mtu", "100"])), "--guest-mtu: must be at least 576");
  assert.equal(refusal(() => parseDaemonArgs(["--migration-rate", "0"])), "--migration-rate: must be more than 0");
  assert.equal(refusal(() => parseDaemonArgs(["--socket-group", "a b"])), "--socket-group: must be a group name or gid");
  assert.equal(parseDaemonArgs(["--no-progress"]).progress, false);
});

test("the schema is the one list: defaults, flags and the file's keys come from it", () => {
  const keys = Object.keys(DaemonConfigSchema.properties);
  // Every key with a default is in DEFAULTS; the file accepts exactly the schema's keys.
  for (const [key, schema] of Object.entries(DaemonConfigSchema.properties)) {
    const def = (schema as { default?: unknown }).default;
    assert.deepEqual((DEFAULTS as Record<string, unknown>)[key], def, key);
  }
  checkConfigFile(Object.fromEntries(Object.entries(DEFAULTS)));
  // Every scalar setting has its flag, and the flag sets it.
  const flags = settingFlags();
  for (const { key, flag } of flags) assert.ok(keys.includes(key), flag);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "netslot-cfg-"));
  try {
    const file = path.join(dir, "config.json");
    fs.writeFileSync(file, JSON.stringify({ poolSize: 8, vtepPort: 4790, progress: false }));
    const c = parseDaemonArgs(["--config", file, "--vtep-port", "4791"]);
    assert.deepEqual([c.poolSize, c.vtepPort, c.progress], [8, 4791, false], "the file over the defaults, the flags over the file");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("netslot daemon with a bad config file: one line, exit 2, before anything is built", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "netslot-cfg-"));
  try {
    const file = path.join(dir, "config.json");
    fs.writeFileSync(file, JSON.stringify({ consumers: [{ name: "a", token: "t".repeat(16), quota: { reserved: -1 } }] }));
    const r = spawnSync(process.execPath, [CLI, "daemon", "--config", file, "--prefix", "zzcfg"], { encoding: "utf8" });
    assert.equal(r.status, 2, r.stderr);
    assert.equal(fatalMessage(r.stderr), `config file ${file}: consumers[0].quota.reserved: must be at least 0`);
    fs.writeFileSync(file, "{ not json");
    const bad = spawnSync(process.execPath, [CLI, "daemon", "--config", file, "--prefix", "zzcfg"], { encoding: "utf8" });
    assert.equal(bad.status, 2, bad.stderr);
    assert.match(fatalMessage(bad.stderr), /^cannot read config file .*config\.json: .*JSON/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
