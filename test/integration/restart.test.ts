// A daemon that dies (kill -9) or stops (SIGTERM) comes back with every acknowledged lease
// and adopts its slots as they are: same namespaces, same devices, nothing rebuilt.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { daemonSuite, isRoot, sh, waitFor, skipUnless } from "../support/env.js";
import type { Lease } from "../../src/core/types.js";

const skip = skipUnless(isRoot(), "needs root");
const POOL = 6;

/** Kernel identity of every slot: namespace inode and host veth ifindex. */
function slotIdentity(prefix: string): Map<string, string> {
  const ids = new Map<string, string>();
  for (let i = 0; i < POOL; i++) {
    const ino = fs.statSync(`/run/netns/${prefix}-${i}`).ino;
    const link = JSON.parse(sh("ip", ["-j", "link", "show", `${prefix}-${i}`])) as Array<{ ifindex: number }>;
    ids.set(`${prefix}-${i}`, `${ino}/${link[0]!.ifindex}`);
  }
  return ids;
}

describe("restart", { skip }, () => {
  const { prefix, daemon, restart } = daemonSuite({ poolSize: POOL });

  it("kill -9 with leases held: same leases after restart, no slot rebuilt", async () => {
    const leases: Lease[] = [];
    for (let i = 0; i < 3; i++) {
      leases.push(await daemon.client.acquire({ ttlSeconds: 3600, labels: { n: String(i) }, bindToProcess: false, autoRenew: false }));
    }
    const before = slotIdentity(prefix);
    await daemon.kill9();
    await restart();
    assert.match(daemon.output(), new RegExp(`ready: ${POOL}/${POOL} slots \\(${POOL} adopted, 0 built\\)`));
    assert.deepEqual(slotIdentity(prefix), before, "namespaces and host veths are the same objects");
    const after = await daemon.client.list();
    assert.deepEqual(
      after.map((l) => [l.id, l.slot.index, l.labels, l.expiresAt]).sort(),
      leases.map((l) => [l.id, l.slot.index, l.labels, l.expiresAt]).sort(),
    );
    const pool = await daemon.client.pool();
    assert.equal(pool.leased, 3);
    assert.equal(pool.free, POOL - 3);
    for (const l of leases) await daemon.client.release(l.id);
  });

  it("SIGTERM stops cleanly and leaves the slots for the next start", async () => {
    const before = slotIdentity(prefix);
    await daemon.stop();
    assert.equal(daemon.process.exitCode, 0, daemon.output());
    assert.deepEqual(slotIdentity(prefix), before);
    await restart();
    assert.match(daemon.output(), new RegExp(`\\(${POOL} adopted, 0 built\\)`));
  });

  it("rebuilds a slot whose kernel objects were broken while it was down, and removes strangers", async () => {
    await daemon.kill9();
    // Break slot 2 (its namespace goes) and plant an object of the prefix beyond the pool.
    sh("ip", ["netns", "del", `${prefix}-2`]);
    sh("ip", ["netns", "add", `${prefix}-${POOL + 3}`]);
    await restart();
    assert.match(daemon.output(), new RegExp(`\\(${POOL - 1} adopted, 1 built\\)`));
    assert.ok(fs.existsSync(`/run/netns/${prefix}-2`));
    assert.ok(!fs.existsSync(`/run/netns/${prefix}-${POOL + 3}`), "the stranger was removed");
    // Slots released before the restarts may still be scrubbing; all come back clean.
    await waitFor(async () => (await daemon.client.pool()).scrubbing === 0, 10_000);
    const pool = await daemon.client.pool();
    assert.equal(pool.quarantined, 0, JSON.stringify(pool.quarantinedSlots));
    assert.equal(pool.free, POOL);
  });
});
