// packaging/netslot.service without systemd: its ExecStart (install path swapped for this
// checkout, test flags appended) must start a daemon that becomes ready and stops with exit
// status 0 on the unit's KillSignal within TimeoutStopSec. Also the restart policy and the
// hardening choices, which must never give the service its own mount namespace.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { DEFAULTS } from "../../src/daemon/config.js";
import { NetslotClient } from "../../src/sdk/index.js";
import { CLI, REPO_ROOT, createUpstream, freeLinkCidr, isRoot, sh, testPrefix, waitFor, type Upstream } from "../support/env.js";

const UNIT_FILE = path.join(REPO_ROOT, "packaging", "netslot.service");
const INSTALL_ROOT = "/opt/netslot";

type Unit = Map<string, Map<string, string[]>>;

/** A systemd unit file: sections of keys, each with every value it was given (in order). */
function parseUnit(text: string): Unit {
  const unit: Unit = new Map();
  let section: Map<string, string[]> | undefined;
  // Backslash-newline continues a line.
  for (const line of text.replace(/\\\n/g, " ").split("\n")) {
    const t = line.trim();
    if (t === "" || t.startsWith("#") || t.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(t);
    if (header) {
      section = new Map();
      unit.set(header[1]!, section);
      continue;
    }
    const eq = t.indexOf("=");
    assert.ok(section && eq > 0, `not a key=value line in a section: ${t}`);
    const key = t.slice(0, eq).trim();
    const value = t.slice(eq + 1).trim();
    section.set(key, [...(section.get(key) ?? []), value]);
  }
  return unit;
}

function value(unit: Unit, section: string, key: string): string | undefined {
  const values = unit.get(section)?.get(key);
  return values?.[values.length - 1];
}

/** systemd time spans as used here: "30", "30s", "1min", "1min 30s", "500ms". */
function seconds(span: string): number {
  let total = 0;
  const re = /(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h)?/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(span))) {
    const n = Number(m[1]);
    const unitName = m[2] ?? "s";
    total += unitName === "ms" ? n / 1000 : unitName === "m" || unitName === "min" ? n * 60 : unitName === "h" ? n * 3600 : n;
  }
  return total;
}

const unit = parseUnit(fs.readFileSync(UNIT_FILE, "utf8"));

describe("packaging/netslot.service: policy and hardening", () => {
  it("is a notify service restarted on failure, reloaded by a live upgrade, stopped with SIGTERM, with room for file descriptors", () => {
    assert.equal(value(unit, "Service", "Type"), "notify");
    assert.equal(value(unit, "Service", "NotifyAccess"), "all", "MAINPID= comes from the new daemon after a reload");
    assert.match(value(unit, "Service", "ExecReload") ?? "", /\/opt\/netslot\/dist\/src\/cli\/main\.js upgrade$/);
    assert.equal(value(unit, "Service", "Restart"), "on-failure");
    assert.equal(seconds(value(unit, "Service", "RestartSec") ?? "0"), 1);
    assert.equal(value(unit, "Service", "KillSignal"), "SIGTERM");
    assert.ok(seconds(value(unit, "Service", "TimeoutStopSec") ?? "0") > 0, "TimeoutStopSec is set");
    assert.equal(value(unit, "Service", "LimitNOFILE"), "65536");
    assert.equal(value(unit, "Service", "RestartPreventExitStatus"), "2", "configuration errors (exit 2) are not restarted");
    assert.equal(value(unit, "Install", "WantedBy"), "multi-user.target");
  });

  it("creates the directories the daemon's defaults point at", () => {
    assert.equal(value(unit, "Service", "RuntimeDirectory"), "netslot");
    assert.equal(path.dirname(DEFAULTS.socket), "/run/netslot");
    assert.equal(value(unit, "Service", "StateDirectory"), "netslot");
    assert.equal(DEFAULTS.stateDir, "/var/lib/netslot");
    assert.equal(value(unit, "Service", "StateDirectoryMode"), "0700");
  });

  it("keeps the capabilities netslot needs and drops the rest", () => {
    const caps = new Set((value(unit, "Service", "CapabilityBoundingSet") ?? "").split(/\s+/));
    for (const cap of ["CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]) {
      assert.ok(caps.has(cap), `${cap} is in the bounding set`);
    }
    for (const cap of ["CAP_SYS_MODULE", "CAP_SYS_BOOT", "CAP_SYS_TIME", "CAP_SETUID", "CAP_CHOWN"]) {
      assert.ok(!caps.has(cap), `${cap} is not in the bounding set`);
    }
    assert.equal(value(unit, "Service", "NoNewPrivileges"), "yes");
    assert.equal(value(unit, "Service", "RestrictNamespaces"), "net");
    assert.equal(value(unit, "Service", "SystemCallArchitectures"), "native");
    assert.equal(value(unit, "Service", "LockPersonality"), "yes");
    assert.equal(value(unit, "Service", "RestrictRealtime"), "yes");
    assert.equal(value(unit, "Service", "RestrictSUIDSGID"), "yes");
    assert.equal(value(unit, "Service", "DevicePolicy"), "closed");
    assert.deepEqual(unit.get("Service")?.get("DeviceAllow"), ["/dev/net/tun rw"]);
    const families = new Set((value(unit, "Service", "RestrictAddressFamilies") ?? "").split(/\s+/));
    for (const f of ["AF_UNIX", "AF_NETLINK"]) assert.ok(families.has(f), `${f} allowed`);
    const filter = value(unit, "Service", "SystemCallFilter") ?? "";
    assert.ok(filter.startsWith("~"), "the syscall filter is a deny list (mount, bpf, setns, unshare are needed)");
    for (const needed of ["@mount", "@privileged", "bpf", "setns", "unshare"]) assert.ok(!filter.includes(needed), `${needed} is not denied`);
  });

  it("never gives the service its own mount namespace: /run/netns mounts must reach the host", () => {
    const implyPrivateMounts = [
      "PrivateMounts",
      "ProtectSystem",
      "ProtectHome",
      "PrivateTmp",
      "PrivateDevices",
      "ProtectKernelTunables",
      "ProtectKernelModules",
      "ProtectKernelLogs",
      "ProtectControlGroups",
      "ProtectProc",
      "ProcSubset",
      "ReadWritePaths",
      "ReadOnlyPaths",
      "InaccessiblePaths",
      "ExecPaths",
      "NoExecPaths",
      "BindPaths",
      "BindReadOnlyPaths",
      "TemporaryFileSystem",
      "MountAPIVFS",
      "RootDirectory",
      "RootImage",
      "PrivateNetwork",
      "NetworkNamespacePath",
      "DynamicUser",
      "MountFlags",
      "MemoryDenyWriteExecute",
    ];
    for (const key of implyPrivateMounts) assert.equal(unit.get("Service")?.get(key), undefined, `${key}= must not be set`);
  });
});

describe("packaging/netslot.service: ExecStart runs the daemon", { skip: isRoot() ? false : "needs root" }, () => {
  const prefix = testPrefix();
  let upstream: Upstream | undefined;
  let dir = "";
  let stateDir = "";
  let socket = "";
  let linkCidr = "";
  let argv: string[] = [];
  let child: ReturnType<typeof spawn> | undefined;

  before(() => {
    upstream = createUpstream(prefix);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), `netslot-${prefix}-unit-`));
    stateDir = path.join(dir, "state");
    socket = path.join(dir, "api.sock");
    linkCidr = freeLinkCidr();
    const execStart = unit.get("Service")?.get("ExecStart");
    assert.equal(execStart?.length, 1, "exactly one ExecStart");
    // No quoting in this unit's ExecStart; a leading prefix character (-, @, +, !) would be systemd's.
    assert.match(execStart[0]!, /^[^-@+!:]/);
    argv = execStart[0]!.split(/\s+/).map((a) => a.replace(INSTALL_ROOT, REPO_ROOT));
    assert.ok(argv.includes(CLI), `ExecStart runs ${INSTALL_ROOT}/dist/src/cli/main.js: ${argv.join(" ")}`);
    assert.ok(argv.includes("daemon"));
  });

  after(() => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    if (stateDir) sh(process.execPath, [CLI, "purge", "--prefix", prefix, "--state-dir", stateDir], { allowFail: true });
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    upstream?.remove();
  });

  /** systemd gives a service a minimal PATH; here node must be found by /usr/bin/env too. */
  function env(): NodeJS.ProcessEnv {
    return { ...process.env, PATH: `${path.dirname(process.execPath)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin` };
  }

  it("starts, becomes ready, and exits 0 on KillSignal within TimeoutStopSec", async () => {
    const testFlags = ["--prefix", prefix, "--state-dir", stateDir, "--socket", socket, "--uplink", upstream!.uplink, "--pool-size", "2", "--link-cidr", linkCidr];
    const proc = spawn(argv[0]!, [...argv.slice(1), ...testFlags], { stdio: ["ignore", "pipe", "pipe"], env: env() });
    child = proc;
    let output = "";
    proc.stdout.on("data", (d: Buffer) => (output += d.toString()));
    proc.stderr.on("data", (d: Buffer) => (output += d.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.once("exit", (code, signal) => resolve({ code, signal })));
    const client = new NetslotClient({ socketPath: socket, timeoutMs: 2000 });
    try {
      await waitFor(async () => (await client.health()).status === "ready", 60_000, { abort: () => proc.exitCode !== null }).catch((err: unknown) => {
        throw new Error(`daemon from ExecStart did not become ready: ${(err as Error).message}\n${output}`);
      });
      assert.equal((await client.pool()).size, 2);
    } finally {
      client.close();
    }
    const signal = value(unit, "Service", "KillSignal") as NodeJS.Signals;
    const timeoutMs = seconds(value(unit, "Service", "TimeoutStopSec")!) * 1000;
    const sentAt = performance.now();
    proc.kill(signal);
    const result = await Promise.race([exited, new Promise<"timeout">((r) => setTimeout(() => r("timeout"), timeoutMs).unref())]);
    assert.notEqual(result, "timeout", `no exit within TimeoutStopSec (${timeoutMs} ms) after ${signal}:\n${output}`);
    assert.deepEqual(result, { code: 0, signal: null }, `exit after ${signal}:\n${output}`);
    process.stdout.write(`ExecStart daemon stopped on ${signal} with status 0 in ${(performance.now() - sentAt).toFixed(0)} ms\n`);
    // A clean stop leaves no pid file, and on_failure would not restart it.
    assert.ok(!fs.existsSync(path.join(stateDir, "daemon.pid")), "pid file removed");
  });

  it("tells systemd READY and its pid; ExecReload hands over to a new daemon, which tells systemd it is the main pid now", async () => {
    // systemd's notification socket stood in for by a datagram socket socat reads.
    const notifySocket = path.join(dir, "notify.sock");
    const receiver = spawn("socat", ["-u", `UNIX-RECV:${notifySocket}`, "STDOUT"], { stdio: ["ignore", "pipe", "inherit"] });
    let notified = "";
    receiver.stdout.on("data", (d: Buffer) => (notified += d.toString()));
    await waitFor(() => fs.existsSync(notifySocket), 5_000);
    const testFlags = ["--prefix", prefix, "--state-dir", stateDir, "--socket", socket, "--uplink", upstream!.uplink, "--pool-size", "2", "--link-cidr", linkCidr];
    const proc = spawn(argv[0]!, [...argv.slice(1), ...testFlags], { stdio: ["ignore", "pipe", "pipe"], env: { ...env(), NOTIFY_SOCKET: notifySocket } });
    child = proc;
    let output = "";
    proc.stdout.on("data", (d: Buffer) => (output += d.toString()));
    proc.stderr.on("data", (d: Buffer) => (output += d.toString()));
    const mainPids = () => [...notified.matchAll(/MAINPID=(\d+)/g)].map((m) => Number(m[1]));
    let newPid: number | undefined;
    try {
      await waitFor(() => /READY=1/.test(notified), 60_000, { abort: () => proc.exitCode !== null }).catch((err: unknown) => {
        throw new Error(`no READY=1: ${(err as Error).message}\n${output}`);
      });
      assert.deepEqual(mainPids(), [proc.pid]);
      const reload = (value(unit, "Service", "ExecReload") ?? "").split(/\s+/).map((a) => a.replace(INSTALL_ROOT, REPO_ROOT));
      const r = spawnSync(reload[0]!, [...reload.slice(1), "--socket", socket], { encoding: "utf8", env: env(), timeout: 120_000 });
      assert.equal(r.status, 0, `${r.stdout}${r.stderr}\n${output}`);
      assert.match(r.stdout, new RegExp(`pid ${proc.pid} .* -> pid \\d+`));
      await waitFor(() => mainPids().length === 2, 10_000);
      newPid = mainPids()[1]!;
      assert.notEqual(newPid, proc.pid);
      process.kill(newPid, 0); // alive
      await waitFor(() => proc.exitCode !== null, 40_000);
      assert.equal(proc.exitCode, 0, "the old main process exits cleanly after the handover");
      const client = new NetslotClient({ socketPath: socket, timeoutMs: 2000 });
      try {
        assert.equal((await client.health()).status, "ready");
      } finally {
        client.close();
      }
    } finally {
      receiver.kill("SIGKILL");
      if (newPid !== undefined) {
        try {
          process.kill(newPid, "SIGTERM");
          await waitFor(() => {
            try {
              process.kill(newPid!, 0);
              return false;
            } catch {
              return true;
            }
          }, 30_000);
        } catch {
          // already gone
        }
      }
    }
  });

  it("a configuration error exits with status 2, which the unit does not restart", () => {
    const r = spawnSync(argv[0]!, [...argv.slice(1), "--pool-size", "0", "--state-dir", stateDir, "--socket", socket], { encoding: "utf8", env: env(), timeout: 30_000 });
    assert.equal(r.status, 2, `${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /--pool-size/);
  });
});
