// Slot layout versions on real slots: an upgrade that changes --guest-mtu (a layout change)
// migrates every free slot in the background while the pool serves; a leased slot keeps
// its MTU until released, then migrates too; GET /v1/pool reports both layouts, then one.
// Going back to the previous MTU is going back to the previous layout (same id).
import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { daemonSuite, CLI, isRoot, nsExec, waitFor, skipUnless } from "../support/env.js";
import { run } from "../support/guest.js";
import { NetslotClient } from "../../src/sdk/index.js";
import type { SlotLayout } from "../../src/core/schema.js";

const skip = skipUnless(isRoot(), "needs root");

function tapMtu(netns: string): number {
  const links = JSON.parse(nsExec(netns.split("/").pop()!, ["ip", "-j", "link", "show", "tap0"])) as Array<{ mtu: number }>;
  return links[0]!.mtu;
}

describe("slot layouts: --guest-mtu changed by an upgrade", { skip }, () => {
  const POOL = 8;
  let client: NetslotClient;
  // The upstream's uplink has MTU 1400.
  const { daemon } = daemonSuite({ poolSize: POOL, handover: true, teardown: () => client?.close() });

  before(() => {
    client = new NetslotClient({ socketPath: daemon.socket });
  });

  const layouts = async (): Promise<SlotLayout[]> => (await client.pool()).layouts ?? [];

  async function upgrade(args: string[]): Promise<void> {
    const r = await run([process.execPath, CLI, "upgrade", "--socket", daemon.socket, "--", ...args], { timeoutMs: 120_000 });
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}\n${daemon.output().slice(-3000)}`);
  }

  /** A client cycling leases throughout: the pool must serve while slots migrate. */
  function cycle(): { stop(): Promise<{ ok: number; failures: string[] }> } {
    let running = true;
    let ok = 0;
    const failures: string[] = [];
    const c = new NetslotClient({ socketPath: daemon.socket });
    const loop = (async () => {
      while (running) {
        try {
          const l = await c.acquire({ autoRenew: false });
          await c.release(l.id);
          ok++;
        } catch (err) {
          const e = err as Error & { code?: string };
          if (e.code === "pool_exhausted") await new Promise((r) => setTimeout(r, 20));
          else failures.push(e.message);
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    return {
      async stop() {
        running = false;
        await loop;
        c.close();
        return { ok, failures };
      },
    };
  }

  it("one layout at start; a changed --guest-mtu migrates free slots in the background, leased ones after release", async () => {
    const [first] = await layouts();
    assert.ok(first, "the pool reports its layout");
    assert.deepEqual(await layouts(), [{ id: first.id, slots: POOL, current: true }]);

    const held = await client.acquire({ autoRenew: false, bindToProcess: false });
    assert.equal(held.guest.mtu, 1400);
    assert.equal(tapMtu(held.slot.netns), 1400);
    const heldNs = fs.statSync(held.slot.netns).ino;

    const load = cycle();
    const upgradedAt = performance.now();
    await upgrade(["--guest-mtu", "1300"]);
    const during = await layouts();
    const current = during.find((l) => l.current)!;
    assert.notEqual(current.id, first.id, "a new MTU is a new layout");
    assert.ok(during.some((l) => l.id === first.id && !l.current && l.slots > 0), `both layouts reported: ${JSON.stringify(during)}`);

    // Every free slot migrates; the held one (and at most the load's) keep the old layout.
    await waitFor(async () => ((await layouts()).find((l) => l.id === first.id)?.slots ?? 0) <= 2, 60_000);
    const { ok, failures } = await load.stop();
    await waitFor(async () => ((await layouts()).find((l) => l.id === first.id)?.slots ?? 0) === 1, 30_000);
    const migratedIn = (performance.now() - upgradedAt) / 1000;
    process.stdout.write(`layout migration: ${POOL - 1} slots to layout ${current.id} within ${migratedIn.toFixed(1)} s of the upgrade\n`);
    assert.deepEqual(failures, [], "the pool served throughout");
    assert.ok(ok > 5, `leases cycled during the migration (${ok})`);

    // The leased slot was not touched: same namespace, old MTU, reported as such.
    assert.equal(fs.statSync(held.slot.netns).ino, heldNs);
    assert.equal(tapMtu(held.slot.netns), 1400);
    assert.equal((await client.get(held.id)).guest.mtu, 1400);
    const fresh = await client.acquire({ autoRenew: false });
    assert.equal(fresh.guest.mtu, 1300);
    assert.equal(tapMtu(fresh.slot.netns), 1300);
    await client.release(fresh.id);

    // Released: scrubbed against the new golden fingerprint, rebuilt to the new layout.
    await client.release(held.id);
    await waitFor(async () => (await layouts()).length === 1, 30_000);
    assert.deepEqual(await layouts(), [{ id: current.id, slots: POOL, current: true }]);
    const status = await run([process.execPath, CLI, "status", "--socket", daemon.socket]);
    assert.match(status.stdout, new RegExp(`layouts: ${current.id} ${POOL} slots \\(current\\)`));

    // Rolling back is the same migration, to the same layout id as before.
    await upgrade(["--guest-mtu", "1400"]);
    assert.equal((await layouts()).find((l) => l.current)?.id, first.id, "the layout id is derived from the slot, so going back finds the old one");
    await waitFor(async () => (await layouts()).length === 1, 60_000);
    assert.deepEqual(await layouts(), [{ id: first.id, slots: POOL, current: true }]);
    const back = await client.acquire({ autoRenew: false });
    assert.equal(back.guest.mtu, 1400);
    assert.equal(tapMtu(back.slot.netns), 1400);
    await client.release(back.id);
  });
});
