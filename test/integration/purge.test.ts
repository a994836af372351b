// `netslot purge` leaves the host as it found it: what the daemon changed in the root
// namespace is put back, and it deletes nothing that is not a netslot state directory.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { CLI, createUpstream, isRoot, startDaemon, testPrefix, type Upstream, skipUnless } from "../support/env.js";

const skip = skipUnless(isRoot(), "needs root");

function forwarding(dev: string): string {
  return fs.readFileSync(`/proc/sys/net/ipv4/conf/${dev}/forwarding`, "utf8").trim();
}

function purge(prefix: string, stateDir: string): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [CLI, "purge", "--prefix", prefix, "--state-dir", stateDir], { encoding: "utf8" });
  return { status: r.status, out: r.stdout + r.stderr };
}

describe("purge", { skip }, () => {
  const prefix = testPrefix();
  let upstream: Upstream;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `netslot-purge-${prefix}-`));

  before(() => {
    upstream = createUpstream(prefix);
  });

  after(() => {
    upstream?.remove();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("restores the uplink's forwarding the daemon turned on", async () => {
    fs.writeFileSync(`/proc/sys/net/ipv4/conf/${upstream.uplink}/forwarding`, "0\n");
    const daemon = await startDaemon({ prefix, uplink: upstream.uplink, poolSize: 1 });
    try {
      assert.equal(forwarding(upstream.uplink), "1", "the daemon routes out of the uplink");
      // A restart must not take the daemon's own value for the host's.
      await daemon.stop();
      const again = await daemon.restart();
      await again.stop();
      const r = purge(prefix, daemon.stateDir);
      assert.equal(r.status, 0, r.out);
      assert.match(r.out, new RegExp(`net\\.ipv4\\.conf\\.${upstream.uplink}\\.forwarding restored to 0`));
      assert.equal(forwarding(upstream.uplink), "0");
      assert.equal(fs.existsSync(daemon.stateDir), false);
    } finally {
      await daemon.cleanup();
    }
  });

  it("refuses a --state-dir that is not netslot's, and deletes nothing", () => {
    const dir = path.join(tmp, "precious");
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, "thesis.tex"), "years of work");
    const r = purge(testPrefix(), dir);
    assert.equal(r.status, 1, r.out);
    assert.match(r.out, /is not a netslot state directory \(no netslot\.db\); refusing to delete it/);
    assert.equal(fs.readFileSync(path.join(dir, "thesis.tex"), "utf8"), "years of work");
  });

  it("refuses the state directory of another prefix", async () => {
    const other = testPrefix();
    const daemon = await startDaemon({ prefix: other, uplink: upstream.uplink, poolSize: 1 });
    try {
      await daemon.stop();
      const r = purge(testPrefix(), daemon.stateDir);
      assert.equal(r.status, 1, r.out);
      assert.match(r.out, new RegExp(`belongs to prefix ${other}`));
      assert.ok(fs.existsSync(path.join(daemon.stateDir, "netslot.db")));
    } finally {
      await daemon.cleanup();
    }
  });
});
