// The core end to end on real kernel objects: a daemon builds a pool, slots are checked
// through the kernel, a guest stand-in on a leased slot sends real traffic.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { daemonSuite, isRoot, nsExec, nftJsonIn, rootRuleCount, sh, waitFor, skipUnless } from "../support/env.js";
import { startGuestStandIn, type GuestStandIn } from "../support/guest.js";
import { GATEWAY_IP, GUEST_MAC, TAP_MAC, slotAddressing, parseCidr } from "../../src/dataplane/topology.js";
import type { Lease } from "../../src/core/types.js";

const skip = skipUnless(isRoot(), "needs root");

interface IpLink {
  ifname: string;
  address: string;
  mtu: number;
  flags: string[];
  link_type?: string;
  linkinfo?: { info_kind?: string; info_data?: { id?: number; remote?: string; port?: number } };
}

function linksIn(netns: string): IpLink[] {
  return JSON.parse(nsExec(netns, ["ip", "-j", "-d", "link", "show"])) as IpLink[];
}

describe("core: pool of real slots", { skip }, () => {
  const guests: GuestStandIn[] = [];
  const POOL = 4;
  const { prefix, upstream, daemon } = daemonSuite({
    poolSize: POOL,
    upstream: { routeMetadata: true },
    teardown: async () => {
      for (const g of guests) await g.stop();
    },
  });

  it("reports a ready pool of the configured size", async () => {
    const health = await daemon.client.health();
    assert.equal(health.status, "ready");
    const pool = await daemon.client.pool();
    assert.equal(pool.size, POOL);
    assert.equal(pool.free, POOL);
    assert.equal(pool.leased, 0);
  });

  it("builds each slot as real kernel objects", () => {
    const cidr = parseCidr(daemon.linkCidr);
    for (let i = 0; i < POOL; i++) {
      const a = slotAddressing(prefix, cidr, i);
      assert.ok(fs.existsSync(a.netnsPath), `${a.netnsPath} exists`);
      const links = linksIn(a.name);
      const tap = links.find((l) => l.ifname === "tap0");
      assert.ok(tap, "tap0 exists");
      assert.equal(tap.address, TAP_MAC);
      const eth0 = links.find((l) => l.ifname === "eth0");
      assert.ok(eth0, "eth0 exists");
      assert.equal(eth0.address, a.slotMac);
      assert.equal(eth0.linkinfo?.info_kind, "veth");
      const addrs = nsExec(a.name, ["ip", "-4", "-o", "addr", "show"]);
      assert.match(addrs, new RegExp(`tap0\\s+inet ${GATEWAY_IP.replace(/\./g, "\\.")}/30`));
      assert.match(addrs, new RegExp(`eth0\\s+inet ${a.slotAddress.replace(/\./g, "\\.")}/31`));
      // Firewall tables live inside the slot.
      const tables = nftJsonIn(a.name, ["list", "tables"]).nftables.flatMap((e) => ("table" in e ? [e.table as { family: string; name: string }] : []));
      assert.deepEqual(tables.map((t) => `${t.family} ${t.name}`).sort(), ["inet netslot", "netdev netslot"]);
      // eBPF NAT on eth0, both directions.
      const ingress = nsExec(a.name, ["tc", "filter", "show", "dev", "eth0", "ingress"]);
      const egress = nsExec(a.name, ["tc", "filter", "show", "dev", "eth0", "egress"]);
      assert.match(ingress, /bpf.*nat_ingress.*direct-action/);
      assert.match(egress, /bpf.*nat_egress.*direct-action/);
      // Host side: veth with its /31 and the route to the outside address.
      const hostAddrs = sh("ip", ["-4", "-o", "addr", "show", "dev", a.hostVeth]);
      assert.match(hostAddrs, new RegExp(`inet ${a.hostAddress.replace(/\./g, "\\.")}/31`));
      const route = sh("ip", ["-4", "route", "show", `${a.outsideAddress}/32`]);
      assert.match(route, new RegExp(`via ${a.slotAddress.replace(/\./g, "\\.")} dev ${a.hostVeth} proto 222`));
    }
  });

  it("keeps a fixed root table in its own table", () => {
    const count = rootRuleCount(prefix);
    assert.ok(count > 0 && count < 20, `root rule count ${count}`);
  });

  let lease: Lease;
  let guest: GuestStandIn;

  it("leases a slot and a guest stand-in reaches the upstream, seen as the host", async () => {
    lease = await daemon.client.acquire({ ttlSeconds: 600, labels: { test: "core" }, bindToProcess: false, autoRenew: false });
    assert.equal(lease.guest.ip, "169.254.0.21");
    assert.equal(lease.guest.mac, GUEST_MAC);
    assert.equal(lease.slot.tap, "tap0");
    guest = await startGuestStandIn({ slotNetnsPath: lease.slot.netns, name: `${prefix}-g0`, mtu: lease.guest.mtu });
    guests.push(guest);
    const ping = await guest.exec(["ping", "-c", "2", "-W", "2", upstream.address]);
    assert.equal(ping.code, 0, ping.stdout + ping.stderr);
    // The upstream sees the host's masqueraded address, never the guest or outside address.
    const server = await spawnUdpEcho(upstream.netns);
    try {
      const seen = await guest.exec(["sh", "-c", `echo hello | timeout 3 socat -T1 - UDP:${upstream.address}:7777`]);
      const log = server.read();
      assert.match(log, new RegExp(`from ${upstream.hostAddress.replace(/\./g, "\\.")}`), `server saw: ${log}; client: ${seen.stdout}${seen.stderr}`);
    } finally {
      server.stop();
    }
  });

  it("the host reaches the guest under the slot's outside address", () => {
    const out = sh("ping", ["-c", "2", "-W", "2", lease.slot.outsideAddress]);
    assert.match(out, /2 received/);
  });

  it("the guest cannot reach another slot, the host's addresses or the metadata address", async () => {
    const cidr = parseCidr(daemon.linkCidr);
    const other = slotAddressing(prefix, cidr, (lease.slot.index + 1) % POOL);
    const own = slotAddressing(prefix, cidr, lease.slot.index);
    const targets = [other.outsideAddress, other.slotAddress, own.hostAddress, upstream.hostAddress, "169.254.169.254"];
    for (const target of targets) {
      const r = await guest.exec(["ping", "-c", "1", "-W", "1", target]);
      assert.notEqual(r.code, 0, `guest reached ${target}`);
    }
    // The metadata address is really reachable from the host: the drop is the firewall's.
    assert.match(sh("ping", ["-c", "1", "-W", "2", "169.254.169.254"]), /1 received/);
  });

  it("renews, lists and releases; a second release is lease_not_found", async () => {
    const renewed = await daemon.client.renew(lease.id, 1200);
    assert.ok(Date.parse(renewed.expiresAt!) > Date.parse(lease.expiresAt!));
    const listed = await daemon.client.list();
    assert.ok(listed.some((l) => l.id === lease.id));
    await guest.stop();
    await daemon.client.release(lease.id);
    await assert.rejects(daemon.client.release(lease.id), (err: { code?: string }) => err.code === "lease_not_found");
  });
});

async function spawnUdpEcho(netns: string): Promise<{ read(): string; stop(): void }> {
  // A tiny UDP server that logs each sender; it runs inside the upstream namespace.
  const script = `const d=require('dgram').createSocket('udp4');d.on('message',(m,r)=>{console.log('from '+r.address);d.send(m,r.port,r.address)});d.bind(7777,()=>console.log('listening'))`;
  const file = `/tmp/${netns}-udp.log`;
  sh("sh", ["-c", `ip netns exec ${netns} ${process.execPath} -e "${script}" > ${file} 2>&1 & echo $! > ${file}.pid`]);
  // Bound before the guest sends: a datagram to an unbound port is refused, not queued.
  await waitFor(() => fs.readFileSync(file, "utf8").includes("listening"), 10_000);
  return {
    read: () => fs.readFileSync(file, "utf8"),
    stop: () => {
      sh("sh", ["-c", `kill $(cat ${file}.pid) 2>/dev/null; rm -f ${file} ${file}.pid`], { allowFail: true });
    },
  };
}
