// src/sdk/vmm.ts: a lease in each VMM's shape. Field names are Firecracker's API
// (src/firecracker/swagger/firecracker.yaml, definitions NetworkInterface, NetworkOverride,
// SnapshotLoadParams.network_overrides; checked against upstream commit 004d9353, 1.17.0-dev).
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  cloudHypervisorNetArgs,
  firecrackerBootArgs,
  firecrackerNetworkInterface,
  firecrackerNetworkOverride,
  jailerNetnsArgs,
  kernelBootArg,
  netnsExecArgs,
  qemuNetArgs,
  type Lease,
} from "../../src/sdk/index.js";

const lease: Lease = {
  id: "l-1",
  consumer: "default",
  slot: { index: 7, netns: "/run/netns/nsl-7", tap: "tap0", outsideAddress: "10.200.128.7" },
  guest: {
    ip: "169.254.0.21",
    prefixLength: 30,
    gateway: "169.254.0.22",
    mac: "02:00:a9:fe:00:15",
    mtu: 1450,
    kernelIpArg: "ip=169.254.0.21::169.254.0.22:255.255.255.252::eth0:off",
  },
  labels: {},
  createdAt: "2026-01-01T00:00:00.000Z",
  expiresAt: null,
};

describe("VMM helpers", () => {
  it("Firecracker PUT /network-interfaces/{iface_id}: iface_id, host_dev_name, guest_mac, mtu", () => {
    const req = firecrackerNetworkInterface(lease);
    assert.equal(req.path, "/network-interfaces/eth0");
    assert.deepEqual(req.body, { iface_id: "eth0", host_dev_name: "tap0", guest_mac: "02:00:a9:fe:00:15", mtu: 1450 });
    const older = firecrackerNetworkInterface(lease, { ifaceId: "net 1", mtu: false });
    assert.equal(older.path, "/network-interfaces/net%201");
    assert.deepEqual(Object.keys(older.body).sort(), ["guest_mac", "host_dev_name", "iface_id"]);
  });

  it("Firecracker snapshot load: a network_overrides entry with iface_id and host_dev_name", () => {
    assert.deepEqual(firecrackerNetworkOverride(lease), { iface_id: "eth0", host_dev_name: "tap0" });
    assert.deepEqual(firecrackerNetworkOverride(lease, "net1"), { iface_id: "net1", host_dev_name: "tap0" });
  });

  it("the jailer joins the slot's namespace; the boot argument is the lease's ip=", () => {
    assert.deepEqual(jailerNetnsArgs(lease), ["--netns", "/run/netns/nsl-7"]);
    assert.equal(kernelBootArg(lease), lease.guest.kernelIpArg);
    assert.equal(firecrackerBootArgs(lease), `console=ttyS0 reboot=k panic=1 pci=off ${lease.guest.kernelIpArg}`);
    assert.equal(firecrackerBootArgs(lease, "console=ttyS0"), `console=ttyS0 ${lease.guest.kernelIpArg}`);
    assert.deepEqual(netnsExecArgs(lease), ["nsenter", "--net=/run/netns/nsl-7", "--"]);
  });

  it("QEMU: a tap netdev that does not reconfigure the host side, virtio-net with the MAC and MTU", () => {
    assert.deepEqual(qemuNetArgs(lease), [
      "-netdev",
      "tap,id=net0,ifname=tap0,script=no,downscript=no",
      "-device",
      "virtio-net-pci,netdev=net0,mac=02:00:a9:fe:00:15,host_mtu=1450",
    ]);
    const micro = qemuNetArgs(lease, { machine: "microvm", id: "n,1", vhost: true });
    assert.equal(micro[1], "tap,id=n,,1,ifname=tap0,script=no,downscript=no,vhost=on");
    assert.equal(micro[3], "virtio-net-device,netdev=n,,1,mac=02:00:a9:fe:00:15,host_mtu=1450");
  });

  it("Cloud Hypervisor: --net with the tap, MAC and MTU and no host address", () => {
    assert.deepEqual(cloudHypervisorNetArgs(lease), ["--net", "tap=tap0,mac=02:00:a9:fe:00:15,mtu=1450"]);
  });
});
