// Operators tune their hosts without asking: a host-wide change must not drain the pool.
// Values a slot only mirrors from the host are not the tenant's; values new namespaces
// inherit make fresh slots differ from the golden one, which is then re-taken; and a slot
// that was quarantined comes back on its own once its cause is gone.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { daemonSuite, isRoot, nsExec, waitFor, skipUnless } from "../support/env.js";

const skip = skipUnless(isRoot(), "needs root");

/** Sets a host sysctl for the length of `fn`, and puts the old value back whatever happens. */
async function withHostSysctl(key: string, value: (old: string) => string, fn: () => Promise<void>): Promise<void> {
  const file = `/proc/sys/${key.replace(/\./g, "/")}`;
  const old = fs.readFileSync(file, "utf8").trim();
  fs.writeFileSync(file, `${value(old)}\n`);
  try {
    await fn();
  } finally {
    fs.writeFileSync(file, `${old}\n`);
  }
}

describe("host tuning during service", { skip }, () => {
  const children: ChildProcess[] = [];
  const { daemon } = daemonSuite({ poolSize: 3, teardown: () => children.forEach((c) => c.kill("SIGKILL")) });

  const acquire = () => daemon.client.acquire({ bindToProcess: false, autoRenew: false });
  const settled = () => waitFor(async () => (await daemon.client.pool()).scrubbing === 0, 30_000);
  const metric = async (name: string) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)`, "m").exec(await daemon.client.metrics())?.[1] ?? 0);

  it("raising nf_conntrack_max on the host leaves 0 slots quarantined", async () => {
    const leases = [await acquire(), await acquire(), await acquire()];
    await withHostSysctl("net.netfilter.nf_conntrack_max", (old) => String(Number(old) + 1024), async () => {
      // Every slot mirrors the new value at once; a tenant cannot set it.
      assert.equal(nsExec(path.basename(leases[0]!.slot.netns), ["sysctl", "-n", "net.netfilter.nf_conntrack_max"]).trim(), fs.readFileSync("/proc/sys/net/netfilter/nf_conntrack_max", "utf8").trim());
      for (const l of leases) await daemon.client.release(l.id);
      await settled();
      const pool = await daemon.client.pool();
      assert.equal(pool.quarantined, 0, JSON.stringify(pool.quarantinedSlots));
      assert.equal(pool.free, 3);
    });
  });

  it("a host default that new namespaces inherit: the golden fingerprint is re-taken, nothing quarantined", async () => {
    const before = await metric("netslot_golden_retakes_total");
    // log_martians only changes what the kernel logs, and only for namespaces and devices created meanwhile.
    await withHostSysctl("net.ipv4.conf.default.log_martians", (old) => (old === "0" ? "1" : "0"), async () => {
      // A tenant change that makes its slot rebuilt: the rebuilt slot inherits the new default.
      const lease = await acquire();
      nsExec(path.basename(lease.slot.netns), ["ip", "route", "add", "10.99.0.0/16", "dev", "tap0"]);
      await daemon.client.release(lease.id);
      await settled();
      let pool = await daemon.client.pool();
      assert.equal(pool.quarantined, 0, JSON.stringify(pool.quarantinedSlots));
      assert.equal(await metric("netslot_golden_retakes_total"), before + 1);
      assert.match(daemon.output(), /the host changed since the golden fingerprint was taken \(two fresh builds of slot \d+ agree: sysctl net\.ipv4\.conf\.(all|default|[a-z0-9]+)\.log_martians/);
      // The other slots still carry the old default: they are rebuilt once, not quarantined.
      const others = [await acquire(), await acquire(), await acquire()];
      for (const l of others) await daemon.client.release(l.id);
      await settled();
      pool = await daemon.client.pool();
      assert.equal(pool.quarantined, 0, JSON.stringify(pool.quarantinedSlots));
      assert.equal(pool.free, 3);
    });
  });

  it("a quarantined slot returns on its own once its cause is gone, with a metric while it is held", async () => {
    const lease = await acquire();
    const holder = spawn("ip", ["netns", "exec", path.basename(lease.slot.netns), "sleep", "600"], { stdio: "ignore" });
    children.push(holder);
    await new Promise((r) => setTimeout(r, 300));
    await daemon.client.release(lease.id);
    await settled();
    const held = await daemon.client.pool();
    assert.equal(held.quarantined, 1);
    assert.match(await daemon.client.metrics(), new RegExp(`netslot_quarantined_slot\\{slot="${lease.slot.index}",cause="process"\\} 1`));
    assert.match(daemon.output(), new RegExp(`slot ${lease.slot.index} quarantined: .*process.*; automatic retry 1 in 5 s`));
    holder.kill("SIGKILL");
    await waitFor(async () => (await daemon.client.pool()).free === 3, 30_000);
    assert.ok((await metric("netslot_quarantine_retries_total")) >= 1);
    assert.doesNotMatch(await daemon.client.metrics(), /netslot_quarantined_slot\{/);
  });
});
