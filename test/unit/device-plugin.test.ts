// The device plugin's pure parts: device health from pool counts, and the container envs.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { containerEnvs, devicesFor } from "../../src/deviceplugin/plugin.js";
import type { Lease, PoolCounts } from "../../src/sdk/index.js";

const pool = (p: Partial<PoolCounts>): PoolCounts => ({ size: 4, free: 4, leased: 0, scrubbing: 0, quarantined: 0, missing: 0, quarantinedSlots: [], draining: false, consumers: [], ...p });

describe("device plugin", () => {
  it("one device per slot; quarantined and missing slots make unallocated devices unhealthy, highest ids first", () => {
    assert.deepEqual(devicesFor(pool({}), new Set()).map((d) => `${d.ID}:${d.health}`), ["netslot-0:Healthy", "netslot-1:Healthy", "netslot-2:Healthy", "netslot-3:Healthy"]);
    assert.deepEqual(
      devicesFor(pool({ free: 1, quarantined: 1, missing: 1, leased: 1 }), new Set(["netslot-3"])).map((d) => d.health),
      ["Healthy", "Unhealthy", "Unhealthy", "Healthy"],
      "the allocated device stays healthy",
    );
    assert.equal(devicesFor(pool({ free: 0, scrubbing: 4 }), new Set()).filter((d) => d.health === "Healthy").length, 4, "scrubbing slots come back");
    assert.equal(devicesFor(pool({ size: 0, free: 0 }), new Set()).length, 0);
    // A draining daemon grants no lease: only devices already allocated stay healthy.
    assert.deepEqual(devicesFor(pool({ draining: true, free: 3, leased: 1 }), new Set(["netslot-0"])).map((d) => d.health), ["Healthy", "Unhealthy", "Unhealthy", "Unhealthy"]);
  });

  it("container envs name the lease, namespace, tap and guest; extra devices are suffixed", () => {
    const lease = {
      id: "L",
      slot: { index: 1, netns: "/run/netns/nsl-1", tap: "tap0", outsideAddress: "10.0.0.1" },
      guest: { ip: "169.254.0.21", prefixLength: 30, gateway: "169.254.0.22", mac: "02:00:a9:fe:00:15", mtu: 1500, kernelIpArg: "ip=x" },
    } as Lease;
    assert.deepEqual(containerEnvs(lease), {
      NETSLOT_LEASE_ID: "L",
      NETSLOT_NETNS: "/run/netns/nsl-1",
      NETSLOT_TAP: "tap0",
      NETSLOT_GUEST_IP: "169.254.0.21",
      NETSLOT_GUEST_MAC: "02:00:a9:fe:00:15",
      NETSLOT_GUEST_GATEWAY: "169.254.0.22",
      NETSLOT_KERNEL_IP_ARG: "ip=x",
    });
    assert.equal(containerEnvs(lease, "_1").NETSLOT_NETNS_1, "/run/netns/nsl-1");
  });
});
