// A daemon that cannot serve says so and exits non-zero, so that systemd restarts it or
// reports it, instead of answering "ready" with an empty pool.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { freeLinkCidr6, isRoot, sh, startDaemon, testPrefix, waitFor, skipUnless, suiteFixture, type DaemonHandle } from "../support/env.js";

const skip = skipUnless(isRoot(), "needs root");

/**
 * Waits for a daemon started without waiting for ready to exit; resolves with its exit code
 * and the msg of its one fatal line. Every line it wrote is JSON (stderr is a pipe here).
 */
async function exitOf(daemon: DaemonHandle): Promise<{ code: number | null; fatal: string }> {
  await waitFor(() => daemon.process.exitCode !== null || daemon.process.signalCode !== null, 60_000);
  // 'exit' can come before the last bytes of the pipes.
  if (!daemon.process.stderr!.closed) await new Promise((resolve) => daemon.process.stderr!.once("close", resolve));
  const lines = daemon
    .output()
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  const fatal = lines.filter((l) => l["level"] === "fatal");
  assert.equal(fatal.length, 1, daemon.output());
  assert.equal(fatal[0], lines.at(-1), "the fatal line is the last one");
  assert.equal(fatal[0]!["exitCode"], daemon.process.exitCode);
  return { code: daemon.process.exitCode, fatal: String(fatal[0]!["msg"]) };
}

describe("a daemon that cannot serve exits non-zero with one clear line", { skip }, () => {
  const prefix = testPrefix();
  const fixture = suiteFixture(prefix);
  const { daemons } = fixture;

  it("refuses a --link-cidr another daemon already routes; the first one keeps serving", async () => {
    const first = await startDaemon({ prefix, uplink: fixture.upstream.uplink, poolSize: 2 });
    daemons.push(first);
    const second = await startDaemon({ prefix: testPrefix(), uplink: fixture.upstream.uplink, poolSize: 2, linkCidr: first.linkCidr, waitReady: false });
    daemons.push(second);
    const { code, fatal } = await exitOf(second);
    assert.equal(code, 2, second.output());
    assert.match(fatal, new RegExp(`^--link-cidr ${first.linkCidr.replace(/\./g, "\\.")} is already routed on this host \\(route `));
    assert.equal((await first.client.health()).status, "ready");
    assert.equal((await first.client.pool()).free, 2);
  });

  it("refuses a --link-cidr6 the host already routes", async () => {
    const linkCidr6 = freeLinkCidr6();
    // An address of ours (the test upstream's root-side device) inside the range.
    const taken = linkCidr6.replace(/::\/112$/, "::1");
    sh("ip", ["-6", "addr", "add", `${taken}/112`, "dev", fixture.upstream.uplink, "nodad"]);
    try {
      const d = await startDaemon({ prefix: testPrefix(), uplink: fixture.upstream.uplink, poolSize: 2, extraArgs: ["--link-cidr6", linkCidr6], waitReady: false });
      daemons.push(d);
      const { code, fatal } = await exitOf(d);
      assert.equal(code, 2, d.output());
      assert.match(fatal, new RegExp(`^--link-cidr6 ${linkCidr6} is already routed on this host \\((route|address) `));
      assert.match(fatal, new RegExp(fixture.upstream.uplink));
    } finally {
      sh("ip", ["-6", "addr", "del", `${taken}/112`, "dev", fixture.upstream.uplink]);
    }
  });

  it("exits 1 when every slot fails to build", async () => {
    const d = await startDaemon({
      prefix: testPrefix(),
      uplink: fixture.upstream.uplink,
      poolSize: 4,
      waitReady: false,
      env: { NETSLOT_TEST_FAULT: "build.after-netns:throw" },
    });
    daemons.push(d);
    const { code, fatal } = await exitOf(d);
    assert.equal(code, 1, d.output());
    assert.match(fatal, /^cannot serve: 4 of 4 slots could not be built \(at most 0 may fail\): slot \d: .*injected failure/);
  });

  it("exits 1 when boot fails", async () => {
    const d = await startDaemon({
      prefix: testPrefix(),
      uplink: fixture.upstream.uplink,
      poolSize: 2,
      waitReady: false,
      env: { NETSLOT_TEST_FAULT: "boot.after-reconcile:throw" },
    });
    daemons.push(d);
    const { code, fatal } = await exitOf(d);
    assert.equal(code, 1, d.output());
    assert.equal(fatal, "cannot serve: boot failed: fault point boot.after-reconcile: injected failure");
  });
});
