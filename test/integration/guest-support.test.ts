// The test guests themselves: the namespace stand-in (taprelay) and the QEMU guest, each on
// a minimal fake slot (a namespace with a persistent tap0 configured as the gateway). The
// real slot builder is not needed for this.
import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import { GATEWAY_IP, GUEST_IP, GUEST_MAC, TAP_MAC, TAP_NAME } from "../../src/dataplane/topology.js";
import { registerCleanup, run, runOk, startGuestStandIn } from "../support/guest.js";
import { ensureGuestImage, qemuAvailable, runGuest } from "../support/qemu.js";
import { skipUnless } from "../support/env.js";

const isRoot = process.getuid?.() === 0;
const prefix = `t${Array.from(crypto.randomBytes(5), (b) => "abcdefghijklmnopqrstuvwxyz0123456789"[b % 36]).join("")}`;
const slotName = `${prefix}-s`;
const slotPath = `/run/netns/${slotName}`;

interface IpLink {
  ifname: string;
  flags: string[];
  mtu: number;
  address: string;
}

async function link(netns: string, ifname: string): Promise<IpLink> {
  const r = await runOk(["ip", "-n", netns, "-j", "link", "show", ifname]);
  const [l] = JSON.parse(r.stdout) as IpLink[];
  assert.ok(l, `${ifname} in ${netns}`);
  return l;
}

async function deleteSlot(): Promise<void> {
  await run(["ip", "netns", "delete", slotName]);
}

describe("guest support", { skip: isRoot ? false : "needs root" }, () => {
  before(async () => {
    registerCleanup(() => {
      // Synchronous fallback if the process dies before `after` runs.
      try {
        fs.rmSync(slotPath);
      } catch {
        // gone
      }
    });
    await runOk(["ip", "netns", "add", slotName]);
    await runOk(["ip", "-n", slotName, "-batch", "-"], {
      input: [
        "link set lo up",
        `tuntap add ${TAP_NAME} mode tap`,
        `addr add ${GATEWAY_IP}/30 dev ${TAP_NAME}`,
        `link set ${TAP_NAME} address ${TAP_MAC} mtu 1450 up`,
        "",
      ].join("\n"),
    });
  });

  after(async () => {
    await deleteSlot();
  });

  test("stand-in: carrier follows the relay, ping and TCP through tap0", async () => {
    assert.ok((await link(slotName, TAP_NAME)).flags.includes("NO-CARRIER"), "tap0 unattached at first");
    const guest = await startGuestStandIn({ slotNetnsPath: slotPath, name: `${prefix}-g`, mtu: 1450 });
    let iperf: Promise<unknown> | undefined;
    try {
      const tap = await link(slotName, TAP_NAME);
      assert.ok(tap.flags.includes("LOWER_UP"), `tap0 flags while held: ${tap.flags.join(",")}`);
      const g0 = await link(guest.netns, "g0");
      assert.equal(g0.address, GUEST_MAC);
      assert.equal(g0.mtu, 1450);
      const addr = await guest.exec(["ip", "-4", "-o", "addr", "show", "dev", "g0"]);
      assert.match(addr.stdout, new RegExp(`inet ${GUEST_IP.replace(/\./g, "\\.")}/30 `));

      // No ping binary on the host: busybox's applet.
      const ping = await guest.exec(["busybox", "ping", "-c", "2", "-W", "2", GATEWAY_IP]);
      assert.equal(ping.code, 0, ping.stdout + ping.stderr);
      assert.match(ping.stdout, /2 packets received/);

      // TCP with offloads (TSO segments far above the MTU) survives the relay both ways.
      iperf = run(["ip", "netns", "exec", slotName, "iperf3", "-s", "-1", "-B", GATEWAY_IP], { timeoutMs: 20_000 });
      let client = { code: -1, stdout: "", stderr: "" };
      for (let i = 0; i < 50; i++) {
        client = await guest.exec(["iperf3", "-c", GATEWAY_IP, "-t", "1", "-J"], { timeoutMs: 15_000 });
        // iperf3 -J can report "Connection refused" in its JSON and still exit 0.
        if (!/Connection refused/.test(client.stdout + client.stderr)) break;
        await new Promise((r) => setTimeout(r, 100)); // server not listening yet
      }
      assert.equal(client.code, 0, client.stdout.slice(-500) + client.stderr);
      const report = JSON.parse(client.stdout) as { error?: string; end?: { sum_received?: { bits_per_second: number } } };
      const bps = report.end?.sum_received?.bits_per_second;
      assert.ok(bps !== undefined, `iperf3 gave no result: ${report.error ?? client.stdout.slice(-500)}`);
      const gbps = bps / 1e9;
      assert.ok(gbps > 0.1, `guest -> slot ${gbps} Gbit/s`);
      console.log(`# stand-in TCP guest -> slot: ${gbps.toFixed(2)} Gbit/s`);
    } finally {
      await iperf;
      await guest.stop();
    }
    await guest.stop(); // idempotent
    const tap = await link(slotName, TAP_NAME);
    assert.ok(tap.flags.includes("NO-CARRIER"), `tap0 flags after stop: ${tap.flags.join(",")}`);
    assert.ok(!fs.existsSync(guest.netnsPath), "guest namespace deleted");
  });

  test("QEMU guest boots on the slot and pings the gateway", { timeout: 300_000 }, async (t) => {
    if (skipUnless(qemuAvailable(), "qemu-system-x86_64 not installed")) {
      t.skip("qemu-system-x86_64 not installed");
      return;
    }
    const image = await ensureGuestImage();
    const result = await runGuest({
      slotNetnsPath: slotPath,
      mtu: 1450,
      image,
      timeoutMs: 90_000,
      script: [
        `ping -c 2 -W 2 ${GATEWAY_IP} >/dev/null && echo RESULT ping=ok || echo RESULT ping=fail`,
        "echo RESULT mac=$(cat /sys/class/net/eth0/address)",
        "echo RESULT mtu=$(cat /sys/class/net/eth0/mtu)",
        "echo RESULT addr=$(ip -4 -o addr show dev eth0 | awk '{print $4}')",
      ].join("\n"),
    });
    assert.equal(result.markers.ping, "ok", result.output);
    assert.equal(result.markers.mac, GUEST_MAC);
    assert.equal(result.markers.mtu, "1450");
    assert.equal(result.markers.addr, `${GUEST_IP}/30`);
    assert.equal(result.markers.exit, "0");
    console.log(
      `# QEMU guest: boot to check ${(result.bootMs / 1000).toFixed(2)} s, to exit ${(result.totalMs / 1000).toFixed(2)} s`,
    );
    // QEMU has exited: nothing holds tap0 any more.
    assert.ok((await link(slotName, TAP_NAME)).flags.includes("NO-CARRIER"));
  });
});
