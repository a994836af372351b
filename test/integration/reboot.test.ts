// Leases do not survive a host reboot: every VM they were granted to died with the host.
// The store remembers the kernel's boot id; a start under another one voids the leases,
// counts and logs them, and the slots return to the pool.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import Database from "better-sqlite3";
import { daemonSuite, isRoot, waitFor, skipUnless } from "../support/env.js";

const skip = skipUnless(isRoot(), "needs root");

describe("a host reboot voids the leases of the previous boot", { skip }, () => {
  const { daemon, restart } = daemonSuite({ poolSize: 3 });

  const bootId = () => fs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();

  function storedBootId(value?: string): string | undefined {
    const db = new Database(path.join(daemon.stateDir, "netslot.db"));
    try {
      if (value !== undefined) db.prepare("UPDATE meta SET value = ? WHERE key = 'boot_id'").run(value);
      return (db.prepare("SELECT value FROM meta WHERE key = 'boot_id'").get() as { value: string } | undefined)?.value;
    } finally {
      db.close();
    }
  }

  it("keeps leases across a restart within one boot", async () => {
    const lease = await daemon.client.acquire({ bindToProcess: false, autoRenew: false });
    await daemon.stop();
    assert.equal(storedBootId(), bootId());
    await restart();
    assert.deepEqual((await daemon.client.list()).map((l) => l.id), [lease.id]);
    await daemon.client.release(lease.id);
  });

  it("voids them after a reboot, counted and logged, and the slots come back", async () => {
    const leases = [await daemon.client.acquire({ bindToProcess: false, autoRenew: false }), await daemon.client.acquire({ bindToProcess: false, autoRenew: false })];
    await daemon.stop();
    // The state as the previous boot left it: the same store, another kernel boot id.
    const previous = randomUUID();
    storedBootId(previous);
    await restart();
    assert.deepEqual(await daemon.client.list(), []);
    assert.match(daemon.output(), new RegExp(`host rebooted since the last start \\(boot id ${previous} → ${bootId()}\\): 2 leases of the previous boot voided`));
    assert.match(await daemon.client.metrics(), /netslot_leases_voided_total\{cause="reboot"\} 2/);
    for (const l of leases) await assert.rejects(daemon.client.release(l.id), /lease_not_found|no lease/);
    await waitFor(async () => (await daemon.client.pool()).free === 3, 15_000);
    assert.equal(storedBootId(), bootId());
  });
});
