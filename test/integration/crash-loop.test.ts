// Crash anywhere, lose nothing, leak nothing: the crash harness (test/crash/harness.ts) runs
// a mixed workload and kills the daemon over 100 times, at random moments and at every
// fault point in turn, checking the invariants after each restart. Plus targeted cases
// for what the loop found.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { formatViolations, runCrashLoop } from "../crash/harness.js";
import { checkInvariants } from "../../src/pool/invariants.js";
import { NetslotConnectionError } from "../../src/sdk/index.js";
import { createUpstream, isRoot, nsExec, startDaemon, testPrefix, waitFor, type DaemonHandle, type Upstream, skipUnless } from "../support/env.js";

const skip = skipUnless(isRoot(), "needs root");
const KILLS = Number(process.env.NETSLOT_CRASH_KILLS ?? 100);

describe("crash loop", { skip }, () => {
  it(`survives ${KILLS} kills (random and at every fault point) with every invariant intact`, { timeout: 15 * 60_000 }, async () => {
    const seed = process.env.NETSLOT_CRASH_SEED !== undefined ? Number(process.env.NETSLOT_CRASH_SEED) : undefined;
    const result = await runCrashLoop({ kills: KILLS, poolSize: 8, ...(seed !== undefined ? { seed } : {}) });
    process.stdout.write(`${result.summary}\n`);
    assert.ok(result.kills >= KILLS, `only ${result.kills} kills done`);
    assert.equal(
      result.violations.length,
      0,
      `${result.violations.length} invariant violation(s) (rerun with NETSLOT_CRASH_SEED=${result.seed}):\n${formatViolations(result.violations)}\n${result.summary}`,
    );
    assert.deepEqual(result.faultPointsMissed, [], `fault points never reached: ${result.faultPointsMissed.join(", ")}`);
  });
});

describe("scrub after a restart with no free slot", { skip }, () => {
  const prefix = testPrefix();
  let upstream: Upstream | undefined;
  let daemon: DaemonHandle | undefined;

  after(async () => {
    await daemon?.cleanup();
    upstream?.remove();
  });

  // Found by the crash loop: a tenant lease released (store committed) and the daemon
  // killed before the scrub; on restart no slot is free, so the scrub worker has no golden
  // fingerprint yet, loads the saved one and reports the slot "rebuilt" without rebuilding
  // or verifying it. The slot goes back to the pool with the old tenant's route on vx0.
  it("verifies (or rebuilds) the slot: no old tenant route on a free slot", async () => {
    upstream = createUpstream(prefix);
    const base = { prefix, uplink: upstream.uplink, poolSize: 1, vtepRemote: upstream.address };
    daemon = await startDaemon(base);
    const { stateDir, linkCidr } = daemon;
    await daemon.stop();
    daemon = await startDaemon({ ...base, stateDir, linkCidr, env: { NETSLOT_TEST_FAULT: "release.after-store" } });
    const lease = await daemon.client.acquire({ bindToProcess: false, autoRenew: false, network: { vni: 4242, cidr: "10.97.3.0/24" } });
    assert.match(nsExec(`${prefix}-0`, ["ip", "route", "show", "dev", "vx0"]), /10\.97\.3\.0\/24/);
    await assert.rejects(daemon.client.release(lease.id), NetslotConnectionError);
    await waitFor(() => daemon!.process.signalCode === "SIGKILL", 5000);
    daemon = await startDaemon({ ...base, stateDir, linkCidr });
    await waitFor(async () => (await daemon!.client.pool()).free === 1, 10_000);
    const routes = nsExec(`${prefix}-0`, ["ip", "route", "show", "dev", "vx0"]);
    assert.doesNotMatch(routes, /10\.97\.3\.0\/24/, `the free slot still routes the old tenant's network:\n${routes}`);
    assert.deepEqual(checkInvariants({ prefix, stateDir, linkCidr, expectLeases: [] }), []);
  });
});
