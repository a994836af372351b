// The CLI's argument parsing (node:util parseArgs, strict): a mistyped flag is refused with
// one line and exit code 2 before anything is contacted; --help is per command.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "src", "cli", "main.js");
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, NETSLOT_SOCKET: "/nonexistent/netslot.sock" } });

test("an unknown flag is refused with one line and exit code 2", () => {
  const r = run("status", "--sockt", "x");
  assert.equal(r.status, 2);
  assert.equal(r.stderr, "netslot: status: Unknown option '--sockt' (see netslot status --help)\n");
  assert.equal(r.stdout, "");
});

test("a flag missing its value is refused with exit code 2", () => {
  const r = run("lease", "--ttl");
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^netslot: lease: Option '--ttl <value>' argument missing/);
  assert.equal(r.stderr.split("\n").length, 2, "one line");
});

test("--help is per command", () => {
  const r = run("lease", "--help");
  assert.equal(r.status, 0);
  assert.match(r.stdout, /netslot lease \[--ttl S\]/);
  assert.doesNotMatch(r.stdout, /netslot purge/);
});

test("an unknown command exits 2 with the usage", () => {
  const r = run("bogus");
  assert.equal(r.status, 2);
  assert.match(r.stderr, /unknown command "bogus"/);
});

test("a valid flag gets as far as the socket (exit 1, not 2)", () => {
  const r = run("status", "--socket", "/nonexistent/netslot.sock");
  assert.equal(r.status, 1);
  assert.match(r.stderr, /cannot reach netslot/);
});

/** The daemon's stderr off a terminal: exactly one line, the fatal one, as JSON. */
function fatalLine(stderr: string): Record<string, unknown> {
  const lines = stderr.split("\n");
  assert.equal(lines.length, 2, `one line and its newline: ${stderr}`);
  assert.equal(lines[1], "");
  const line = JSON.parse(lines[0]!) as Record<string, unknown>;
  assert.equal(line["level"], "fatal");
  assert.match(String(line["time"]), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  return line;
}

test("the daemon's flags: an unknown one exits 2 with one fatal JSON line, before anything is built", () => {
  const r = run("daemon", "--pool-sise", "8");
  assert.equal(r.status, 2);
  const line = fatalLine(r.stderr);
  assert.equal(line["msg"], "unknown flag --pool-sise");
  assert.equal(line["exitCode"], 2);
  assert.equal(r.stdout, "");
});

test("the daemon's log flags are checked like the others", () => {
  const level = run("daemon", "--log-level", "loud");
  assert.equal(level.status, 2);
  assert.equal(fatalLine(level.stderr)["msg"], "--log-level: must be one of fatal, error, warn, info, debug, trace, silent");
  const format = run("daemon", "--log-format", "xml");
  assert.equal(format.status, 2);
  assert.equal(fatalLine(format.stderr)["msg"], "--log-format: must be one of auto, json, pretty");
});
