// The package as users get it: `npm pack` of this checkout, `npm install -g` into a temporary
// prefix (dependencies from the registry, native ones built), then from that prefix only:
// `netslot` on PATH, `netslot doctor` passes, `install-service` prints the unit (--dry-run)
// and writes and enables it under a given root, and the unit's ExecStart runs the installed
// daemon (small pool) that leases one slot and stops cleanly.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { NetslotClient } from "../../src/sdk/index.js";
import { REPO_ROOT, createUpstream, freeLinkCidr, isRoot, sh, testPrefix, waitFor, type Upstream, skipUnless } from "../support/env.js";

const skip = skipUnless(isRoot(), "needs root");

describe("npm pack, npm install -g, run from the installed copy", { skip, timeout: 1_200_000 }, () => {
  const prefix = testPrefix();
  let dir = "";
  let npmPrefix = "";
  let installed = "";
  let env: NodeJS.ProcessEnv = {};
  let upstream: Upstream | undefined;

  const netslot = (args: string[]) => spawnSync("netslot", args, { encoding: "utf8", env });

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "netslot-pkg-"));
    npmPrefix = path.join(dir, "prefix");
    const pack = spawnSync("npm", ["pack", "--json", "--pack-destination", dir], { cwd: REPO_ROOT, encoding: "utf8" });
    assert.equal(pack.status, 0, pack.stderr);
    const filename = (JSON.parse(pack.stdout) as Array<{ filename: string }>)[0]?.filename;
    assert.ok(filename, pack.stdout);
    const install = spawnSync("npm", ["install", "-g", "--no-audit", "--no-fund", "--prefix", npmPrefix, path.join(dir, filename)], {
      encoding: "utf8",
      timeout: 1_000_000,
      // better-sqlite3 compiles on install when no prebuilt binary can be fetched: use every core.
      env: { ...process.env, JOBS: "max" },
    });
    assert.equal(install.status, 0, `npm install -g failed:\n${install.stdout}\n${install.stderr}`);
    installed = path.join(npmPrefix, "lib", "node_modules", "netslot");
    // The user's shell: the prefix's bin first, and not this checkout's node_modules/.bin.
    env = { ...process.env, PATH: `${path.join(npmPrefix, "bin")}:${process.env.PATH ?? "/usr/bin:/bin"}` };
  });

  after(() => {
    if (upstream) {
      spawnSync("netslot", ["purge", "--prefix", prefix, "--state-dir", path.join(dir, "state")], { env });
      upstream.remove();
    }
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("puts netslot on PATH from the prefix, and doctor passes", () => {
    const which = spawnSync("sh", ["-c", "command -v netslot"], { encoding: "utf8", env });
    assert.equal(which.stdout.trim(), path.join(npmPrefix, "bin", "netslot"));
    assert.equal(fs.realpathSync(which.stdout.trim()), path.join(installed, "dist", "src", "cli", "main.js"));
    const version = netslot(["--version"]);
    assert.equal(version.status, 0, version.stderr);
    const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, "package.json"), "utf8")) as { version: string };
    assert.equal(version.stdout.trim(), `netslot ${pkg.version}`);
    const doctor = netslot(["doctor"]);
    assert.equal(doctor.status, 0, `${doctor.stdout}\n${doctor.stderr}`);
    assert.match(doctor.stdout, /netslot can run here/);
    assert.ok(fs.existsSync(path.join(installed, "bpf", "nat.o")), "the eBPF object ships in the package");
  });

  it("install-service --dry-run prints the unit for the installed copy and writes nothing", () => {
    const root = path.join(dir, "dry-root");
    fs.mkdirSync(root);
    const r = netslot(["install-service", "--dry-run", "--root", root]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^\[Service\]$/m);
    const exec = /^ExecStart=(.*)$/m.exec(r.stdout)?.[1];
    assert.equal(exec, `${process.execPath} ${path.join(installed, "dist", "src", "cli", "main.js")} daemon --no-progress`);
    for (const line of r.stdout.split("\n").filter((l) => /^Exec[A-Za-z]*=/.test(l))) assert.ok(line.includes(installed), `not the installed copy: ${line}`);
    assert.deepEqual(fs.readdirSync(root), []);
    assert.equal(netslot(["install-service", "--frobnicate"]).status, 2);
  });

  it("install-service writes and enables the unit under a root; its ExecStart runs the installed daemon", async () => {
    const root = path.join(dir, "root");
    const stateDir = path.join(dir, "state");
    const socket = path.join(dir, "api.sock");
    upstream = createUpstream(prefix);
    const flags = ["--prefix", prefix, "--pool-size", "2", "--state-dir", stateDir, "--socket", socket, "--uplink", upstream.uplink, "--link-cidr", freeLinkCidr()];
    const r = netslot(["install-service", "--root", root, "--", ...flags]);
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    const unitFile = path.join(root, "etc", "systemd", "system", "netslot.service");
    const unit = fs.readFileSync(unitFile, "utf8");
    assert.equal(fs.statSync(unitFile).mode & 0o777, 0o644);
    assert.equal(fs.readlinkSync(path.join(root, "etc", "systemd", "system", "multi-user.target.wants", "netslot.service")), "/etc/systemd/system/netslot.service");

    // What systemd would run (no quoting needed for these paths).
    const [cmd, ...args] = /^ExecStart=(.*)$/m.exec(unit)![1]!.split(" ");
    assert.ok(args[0]!.startsWith(installed), `ExecStart runs ${args[0]}, not the installed copy`);
    const child = spawn(cmd!, args, { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (b: Buffer) => (output += b.toString()));
    child.stderr.on("data", (b: Buffer) => (output += b.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    const client = new NetslotClient({ socketPath: socket });
    try {
      await waitFor(async () => (await client.health()).status === "ready", 120_000, { abort: () => child.exitCode !== null });
      const lease = await client.acquire({ bindToProcess: false });
      assert.ok(fs.existsSync(lease.slot.netns), `${lease.slot.netns} exists`);
      sh("ip", ["netns", "exec", path.basename(lease.slot.netns), "ip", "link", "show", lease.slot.tap]);
      await client.release(lease.id);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${output}`, { cause: err });
    } finally {
      client.close();
      child.kill("SIGTERM");
    }
    assert.equal(await exited, 0, output);
    assert.match(output, /ready: 2\/2 slots/);
  });
});
