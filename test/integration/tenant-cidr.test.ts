// A tenant network's CIDR is routed into vx0 inside the slot: one that would replace or
// shadow the slot's own routes is refused with a clear error, and nothing changes.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { daemonSuite, isRoot, nsExec, skipUnless } from "../support/env.js";
import { NetslotApiError } from "../../src/sdk/index.js";

const skip = skipUnless(isRoot(), "needs root");

describe("tenant CIDRs that overlap the slot's own routes are refused", { skip }, () => {
  const vtep = "198.18.0.9";
  const { prefix, daemon } = daemonSuite({ poolSize: 2, vtepRemote: vtep });

  // "linkdown" follows tap0's carrier (the scrub worker attaches to the tap to read it), not the routes.
  const routesOf = (index: number) => nsExec(`${prefix}-${index}`, ["ip", "-4", "route", "show", "table", "all"]).replace(/ linkdown/g, "");

  const cases: Array<[string, RegExp]> = [
    ["0.0.0.0/0", /is the default route/],
    ["169.254.0.20/30", /overlaps the guest link/],
    ["169.254.0.0/16", /overlaps the guest link/],
    ["169.254.169.0/24", /overlaps the metadata address 169\.254\.169\.254/],
    ["198.18.0.0/24", /overlaps the VTEP/],
  ];

  for (const [cidr, why] of cases) {
    it(`refuses ${cidr}`, async () => assertRefused(cidr, why));
  }

  it("refuses the link CIDR and networks around it", async () => {
    const [a, b] = daemon.linkCidr.split(".");
    await assertRefused(daemon.linkCidr, /overlaps the link CIDR/);
    await assertRefused(`${a}.${b}.3.0/24`, /overlaps the link CIDR/);
    await assertRefused(`${a}.0.0.0/8`, /overlaps the link CIDR/);
  });

  it("still accepts a tenant network elsewhere", async () => {
    const lease = await daemon.client.acquire({ network: { vni: 4242, cidr: "10.77.0.0/16" }, bindToProcess: false, autoRenew: false });
    assert.match(routesOf(lease.slot.index), /10\.77\.0\.0\/16 dev vx0/);
    await daemon.client.release(lease.id);
  });

  async function assertRefused(cidr: string, why: RegExp): Promise<void> {
    const before = await daemon.client.pool();
    const routes = [routesOf(0), routesOf(1)];
    await assert.rejects(
      daemon.client.acquire({ network: { vni: 100, cidr }, bindToProcess: false, autoRenew: false }),
      (err: unknown) => {
        assert.ok(err instanceof NetslotApiError, String(err));
        assert.equal(err.status, 400);
        assert.equal(err.code, "invalid_request");
        assert.equal(err.field, "/network/cidr");
        assert.match(err.message, why);
        return true;
      },
    );
    const after = await daemon.client.pool();
    assert.equal(after.free, before.free, "no slot was taken");
    assert.deepEqual([routesOf(0), routesOf(1)], routes, "no route changed in any slot");
  }
});
