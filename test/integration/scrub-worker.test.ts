// The scrub worker is supervised: when it dies or hangs, a new one takes over the jobs the
// old one held, and the slots it was scrubbing return to service.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { isRoot, startDaemon, testPrefix, waitFor, skipUnless, suiteFixture, type DaemonHandle } from "../support/env.js";

const skip = skipUnless(isRoot(), "needs root");

describe("scrub worker supervision", { skip }, () => {
  const prefix = testPrefix();
  const fixture = suiteFixture(prefix);
  const { daemons } = fixture;

  async function releaseTwoAndSettle(daemon: DaemonHandle, timeoutMs: number): Promise<void> {
    const leases = [await daemon.client.acquire({ bindToProcess: false, autoRenew: false }), await daemon.client.acquire({ bindToProcess: false, autoRenew: false })];
    for (const l of leases) await daemon.client.release(l.id);
    await waitFor(async () => (await daemon.client.pool()).free === 3, timeoutMs);
    const pool = await daemon.client.pool();
    assert.equal(pool.quarantined, 0, JSON.stringify(pool.quarantinedSlots));
    // And the new worker keeps serving.
    const again = await daemon.client.acquire({ bindToProcess: false, autoRenew: false });
    await daemon.client.release(again.id);
    await waitFor(async () => (await daemon.client.pool()).free === 3, 15_000);
  }

  it("a worker that dies mid-scrub is replaced; its slots are scrubbed again and return to the pool", async () => {
    const daemon = await startDaemon({ prefix: testPrefix(), uplink: fixture.upstream.uplink, poolSize: 3, env: { NETSLOT_TEST_FAULT: "scrub.before:exit" } });
    daemons.push(daemon);
    await releaseTwoAndSettle(daemon, 15_000);
    assert.match(daemon.output(), /fault point scrub\.before reached: exit/);
    assert.match(daemon.output(), /scrub worker exited with code 70; restarting it with [12] jobs re-queued/);
  });

  it("a worker stuck in a job past its timeout is replaced; the slot returns to the pool", async () => {
    const daemon = await startDaemon({
      prefix: testPrefix(),
      uplink: fixture.upstream.uplink,
      poolSize: 3,
      env: { NETSLOT_TEST_FAULT: "scrub.before:hang", NETSLOT_TEST_JOB_TIMEOUT_MS: "3000" },
    });
    daemons.push(daemon);
    await releaseTwoAndSettle(daemon, 20_000);
    assert.match(daemon.output(), /scrub worker hung: scrub of slot \d+ took over 3000 ms; restarting it with [12] jobs re-queued/);
  });
});
