// `netslot device-plugin` against a real daemon and a kubelet stand-in built from the same
// vendored protos: registration, ListAndWatch of the pool with health and prompt updates,
// Allocate of a slot whose namespace exists (envs, mount), idempotence, release once
// PodResources stops listing the device, and registration again after a kubelet restart.
import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { daemonSuite, CLI, isRoot, nsExec, waitFor, skipUnless } from "../support/env.js";
import { KubeletStandIn, type PluginClient } from "../support/kubelet.js";
import { DEVICE_LABEL } from "../../src/deviceplugin/plugin.js";

const skip = skipUnless(isRoot(), "needs root");
const POOL = 3;

describe("Kubernetes device plugin", { skip }, () => {
  let kubelet: KubeletStandIn;
  let plugin: ChildProcess;
  let pluginLog = "";
  let client: PluginClient;
  let dir = "";
  const holders: ChildProcess[] = [];
  const { daemon } = daemonSuite({
    poolSize: POOL,
    teardown: async () => {
      for (const h of holders) h.kill("SIGKILL");
      client?.close();
      plugin?.kill("SIGTERM");
      await kubelet?.stop();
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    },
  });

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "netslot-kubelet-"));
    kubelet = await KubeletStandIn.start(dir);
    plugin = spawn(process.execPath, [CLI, "device-plugin", "--kubelet-dir", dir, "--socket", daemon.socket, "--reconcile-seconds", "1"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    plugin.stdout!.on("data", (b: Buffer) => (pluginLog += b.toString()));
    plugin.stderr!.on("data", (b: Buffer) => (pluginLog += b.toString()));
    await waitFor(() => kubelet.registrations.length > 0, 15_000, { abort: () => plugin.exitCode !== null }).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\n${pluginLog}`, { cause: err });
    });
    client = kubelet.plugin(kubelet.registrations[0]!.endpoint);
    client.watch();
    await waitFor(() => client.updates.length > 0, 5000);
  });

  it("registers with the kubelet: v1beta1, netslot.sock, netslot.dev/slot", () => {
    const r = kubelet.registrations[0]!;
    assert.equal(r.version, "v1beta1");
    assert.equal(r.endpoint, "netslot.sock");
    assert.equal(r.resource_name, "netslot.dev/slot");
    assert.ok(fs.existsSync(path.join(kubelet.pluginDir, "netslot.sock")));
  });

  it("ListAndWatch lists one healthy device per slot", () => {
    const devices = client.latest()!;
    assert.equal(devices.length, POOL);
    assert.equal(new Set(devices.map((d) => d.ID)).size, POOL, "ids are unique");
    assert.ok(devices.every((d) => d.health === "Healthy"), JSON.stringify(devices));
  });

  it("a quarantined slot shows as an unhealthy device within 1 s, and healthy again once released", async (t) => {
    // A process left in a released slot: the scrub cannot prove it clean and quarantines it.
    const lease = await daemon.client.acquire({ bindToProcess: false });
    const holder = spawn("ip", ["netns", "exec", path.basename(lease.slot.netns), "sleep", "600"], { stdio: "ignore" });
    holders.push(holder);
    await new Promise((r) => setTimeout(r, 500));
    await daemon.client.release(lease.id);
    let quarantinedAt = 0;
    await waitFor(async () => {
      if ((await daemon.client.pool()).quarantined !== 1) return false;
      quarantinedAt = Date.now();
      return true;
    }, 30_000);
    await waitFor(() => (client.latest() ?? []).filter((d) => d.health === "Unhealthy").length === 1, 2000);
    const update = client.updates.find((u) => u.devices.some((d) => d.health === "Unhealthy"))!;
    // The pool is polled every 20 ms here, the plugin every 250 ms: well inside 1 s.
    t.diagnostic(`ListAndWatch update ${update.at - quarantinedAt} ms after the daemon reported the quarantine`);
    assert.ok(update.at - quarantinedAt < 1000, `update ${update.at - quarantinedAt} ms after the quarantine`);

    holder.kill("SIGKILL");
    await new Promise((r) => holder.once("exit", r));
    await waitFor(async () => (await daemon.client.releaseQuarantined(lease.slot.index)).state === "free", 10_000);
    await waitFor(() => (client.latest() ?? []).every((d) => d.health === "Healthy"), 2000);
  });

  it("Allocate leases a slot whose namespace exists, with envs and the netns mounted read-only; again returns the same lease", async () => {
    const id = client.latest()![0]!.ID;
    const res = await client.allocate([[id]]);
    assert.equal(res.container_responses.length, 1);
    const { envs, mounts } = res.container_responses[0]!;
    for (const k of ["NETSLOT_LEASE_ID", "NETSLOT_NETNS", "NETSLOT_TAP", "NETSLOT_GUEST_IP", "NETSLOT_GUEST_MAC", "NETSLOT_GUEST_GATEWAY", "NETSLOT_KERNEL_IP_ARG"]) {
      assert.ok(envs[k], `${k} missing: ${JSON.stringify(envs)}`);
    }
    const lease = await daemon.client.get(envs.NETSLOT_LEASE_ID!);
    assert.equal(lease.labels[DEVICE_LABEL], id);
    assert.equal(envs.NETSLOT_NETNS, lease.slot.netns);
    assert.equal(envs.NETSLOT_GUEST_MAC, lease.guest.mac);
    assert.equal(envs.NETSLOT_KERNEL_IP_ARG, lease.guest.kernelIpArg);
    // The namespace is real and holds the tap the envs name.
    const netns = envs.NETSLOT_NETNS ?? "";
    const tap = envs.NETSLOT_TAP ?? "";
    assert.ok(fs.existsSync(netns));
    assert.match(nsExec(path.basename(netns), ["ip", "-o", "link", "show", tap]), new RegExp(`: ${tap}:`));
    assert.deepEqual(mounts, [{ container_path: lease.slot.netns, host_path: lease.slot.netns, read_only: true }]);

    const again = await client.allocate([[id]]);
    assert.equal(again.container_responses[0]!.envs.NETSLOT_LEASE_ID, envs.NETSLOT_LEASE_ID);
    assert.equal((await daemon.client.list()).filter((l) => l.labels[DEVICE_LABEL] === id).length, 1);
    assert.equal((await daemon.client.pool()).leased, 1);
  });

  it("keeps the lease while PodResources lists the device and releases it once it does not", async (t) => {
    const leases = await daemon.client.list();
    const lease = leases.find((l) => l.labels[DEVICE_LABEL] !== undefined)!;
    const id = lease.labels[DEVICE_LABEL]!;
    kubelet.pods = [{ name: "vm-0", namespace: "default", containers: [{ name: "vmm", devices: [{ resource_name: "netslot.dev/slot", device_ids: [id] }] }] }];
    const calls = kubelet.podResourcesCalls;
    await waitFor(() => kubelet.podResourcesCalls >= calls + 3, 10_000);
    assert.equal((await daemon.client.get(lease.id)).id, lease.id, "still leased while a pod holds the device");

    kubelet.pods = [];
    const removedAt = Date.now();
    await waitFor(async () => (await daemon.client.list()).every((l) => l.id !== lease.id), 10_000);
    const seconds = (Date.now() - removedAt) / 1000;
    t.diagnostic(`lease released ${seconds.toFixed(2)} s after PodResources stopped listing the device`);
    assert.ok(seconds <= 4, `released ${seconds.toFixed(1)} s after the pod went (two polls of 1 s)`);
    await waitFor(async () => (await daemon.client.pool()).free === POOL, 30_000);
  });

  it("registers again when the kubelet restarts, and serves the new kubelet", async () => {
    const before = kubelet.registrations.length;
    client.close();
    await kubelet.restart();
    await waitFor(() => kubelet.registrations.length > before, 10_000);
    assert.equal(kubelet.registrations[before]!.resource_name, "netslot.dev/slot");
    client = kubelet.plugin("netslot.sock");
    client.watch();
    await waitFor(() => client.updates.length > 0, 5000);
    assert.equal(client.latest()!.length, POOL);
    assert.equal((await client.options()).pre_start_required, false);
  });
});
