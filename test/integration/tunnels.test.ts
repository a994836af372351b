// Tenant tunnels end to end: a daemon whose slots' vx0 point at a VPC gateway stand-in with
// three tenants. Leases carry a tenant network; guest stand-ins reach only their own
// tenant's HTTP server, the wire carries only the leases' VNIs (never the dummy VNI 0), the
// eBPF map follows leases, and no lease request creates or deletes a device.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createUpstream, freeLinkCidr, isRoot, nsExec, sh, startDaemon, testPrefix, waitFor, type DaemonHandle, type Upstream, skipUnless } from "../support/env.js";
import { startGuestStandIn, type GuestStandIn } from "../support/guest.js";
import { createVpcGateway, firstHost, freeTenantCidrs, type VpcGateway, type VpcTenant, type VxlanCapture } from "../support/vpc.js";
import { DUMMY_VNI, parseCidr, slotAddressing, type SlotAddressing } from "../../src/dataplane/topology.js";
import { NetslotApiError } from "../../src/sdk/index.js";
import type { Lease, TenantNetwork } from "../../src/core/types.js";

const skip = skipUnless(isRoot(), "needs root");

interface LinkId {
  ifname: string;
  ifindex: number;
}

/** Names and ifindexes of the links in a namespace (undefined: the root one), sorted. */
function linkIds(netns: string | undefined, filter: (name: string) => boolean = () => true): LinkId[] {
  const out = netns ? nsExec(netns, ["ip", "-j", "link", "show"]) : sh("ip", ["-j", "link", "show"]);
  return (JSON.parse(out) as LinkId[])
    .filter((l) => filter(l.ifname))
    .map((l) => ({ ifname: l.ifname, ifindex: l.ifindex }))
    .sort((a, b) => a.ifindex - b.ifindex);
}

interface MapEntry {
  mac: string;
  outsideAddress: string;
  vni: number;
}

/** `bpftool map dump pinned /sys/fs/bpf/netslot/<prefix>/slots -j`, decoded from the raw bytes. */
function dumpSlotsMap(prefix: string): MapEntry[] {
  const raw = JSON.parse(sh("bpftool", ["map", "dump", "pinned", `/sys/fs/bpf/netslot/${prefix}/slots`, "-j"])) as Array<{
    key: string[];
    value: string[];
  }>;
  return raw.map((e) => {
    const key = Buffer.from(e.key.map((h) => parseInt(h, 16)));
    const value = Buffer.from(e.value.map((h) => parseInt(h, 16)));
    return {
      mac: Array.from(key.subarray(0, 6), (b) => b.toString(16).padStart(2, "0")).join(":"),
      // struct slot_value: __be32 outside_addr; __u32 vni (host order, little-endian here); __u32 flags
      outsideAddress: Array.from(value.subarray(0, 4)).join("."),
      vni: value.readUInt32LE(4),
    };
  });
}

describe("tunnels: tenant networks over VXLAN", { skip }, () => {
  const prefix = testPrefix();
  const POOL = 2;
  const vniA = 1000 + Math.floor(Math.random() * 100_000);
  const vniB = vniA + 1;
  const vniC = vniA + 2;
  let upstream: Upstream | undefined;
  let vpc: VpcGateway | undefined;
  let daemon: DaemonHandle;
  let linkCidr: string;
  let tA: VpcTenant;
  let tB: VpcTenant;
  let tC: VpcTenant;
  const guests: GuestStandIn[] = [];
  const captures: VxlanCapture[] = [];

  // Links that must not change when leases with tenant networks come and go.
  const snapshot = () => ({
    root: linkIds(undefined, (name) => name.startsWith(prefix)),
    slots: Array.from({ length: POOL }, (_, i) => linkIds(`${prefix}-${i}`)),
  });

  before(async () => {
    linkCidr = freeLinkCidr();
    const [a, b, c] = freeTenantCidrs(3, [linkCidr]) as [string, string, string];
    tA = { vni: vniA, cidr: a, gatewayIp: firstHost(a), answer: `tenant-A-${vniA}` };
    tB = { vni: vniB, cidr: b, gatewayIp: firstHost(b), answer: `tenant-B-${vniB}` };
    tC = { vni: vniC, cidr: c, gatewayIp: firstHost(c), answer: `tenant-C-${vniC}` };
    upstream = createUpstream(prefix);
    vpc = await createVpcGateway({ prefix, linkCidr, tenants: [tA, tB, tC] });
    daemon = await startDaemon({ prefix, uplink: upstream.uplink, poolSize: POOL, linkCidr, vtepRemote: vpc.vtepAddress });
  });

  after(async () => {
    for (const c of captures) await c.stop().catch(() => undefined);
    for (const g of guests) await g.stop();
    await daemon?.cleanup();
    vpc?.remove();
    upstream?.remove();
  });

  const net = (t: VpcTenant): TenantNetwork => ({ vni: t.vni, cidr: t.cidr });
  const acquire = (t: VpcTenant) => daemon.client.acquire({ network: net(t), labels: { test: "tunnels" }, bindToProcess: false, autoRenew: false });
  const addressing = (lease: Lease): SlotAddressing => slotAddressing(prefix, parseCidr(linkCidr), lease.slot.index);
  const curl = (g: GuestStandIn, ip: string) => g.exec(["curl", "-sS", "-m", "3", `http://${ip}/`], { timeoutMs: 10_000 });

  let before0: ReturnType<typeof snapshot>;
  let leaseA: Lease;
  let leaseB: Lease;
  let guestA: GuestStandIn;
  let guestB: GuestStandIn;

  it("leases with tenant networks create no device, only a route into vx0", async () => {
    before0 = snapshot();
    leaseA = await acquire(tA);
    leaseB = await acquire(tB);
    assert.deepEqual(leaseA.network, net(tA));
    assert.deepEqual(leaseB.network, net(tB));
    assert.notEqual(leaseA.slot.index, leaseB.slot.index);
    assert.deepEqual(snapshot(), before0, "links (names and ifindexes) changed on lease");
    const slotA = addressing(leaseA).name;
    const routesA = nsExec(slotA, ["ip", "-4", "route", "show"]);
    assert.match(routesA, new RegExp(`^${tA.cidr.replace(/\./g, "\\.")} dev vx0`, "m"), routesA);
    assert.doesNotMatch(routesA, new RegExp(tB.cidr.split("/")[0]!.replace(/\./g, "\\.")), routesA);
    // vx0 still carries the dummy VNI; the real one lives only in the eBPF map.
    const vx = JSON.parse(nsExec(slotA, ["ip", "-j", "-d", "link", "show", "vx0"])) as Array<{ linkinfo?: { info_data?: { id?: number } } }>;
    assert.equal(vx[0]?.linkinfo?.info_data?.id, DUMMY_VNI);
  });

  it("each guest reaches only its own tenant; the wire carries the leases' VNIs, never 0", async () => {
    guestA = await startGuestStandIn({ slotNetnsPath: leaseA.slot.netns, name: `${prefix}-ga`, mtu: leaseA.guest.mtu });
    guests.push(guestA);
    guestB = await startGuestStandIn({ slotNetnsPath: leaseB.slot.netns, name: `${prefix}-gb`, mtu: leaseB.guest.mtu });
    guests.push(guestB);
    const capture = await vpc!.startCapture();
    captures.push(capture);

    const okA = await curl(guestA, tA.gatewayIp);
    assert.equal(okA.code, 0, `guest A → gateway A: ${okA.stderr}`);
    assert.equal(okA.stdout, tA.answer);
    const okB = await curl(guestB, tB.gatewayIp);
    assert.equal(okB.code, 0, `guest B → gateway B: ${okB.stderr}`);
    assert.equal(okB.stdout, tB.answer);

    // The other tenant's CIDR is not routed into the slot's tunnel: it goes to the host,
    // where the fixture's unreachable route kills it.
    const slotA = addressing(leaseA);
    assert.match(nsExec(slotA.name, ["ip", "-4", "route", "get", tB.gatewayIp]), new RegExp(`via ${slotA.hostAddress.replace(/\./g, "\\.")} dev eth0`));
    const crossAB = await curl(guestA, tB.gatewayIp);
    assert.notEqual(crossAB.code, 0, `guest A reached gateway B: ${crossAB.stdout}`);
    assert.doesNotMatch(crossAB.stdout, new RegExp(tB.answer));
    const crossBA = await curl(guestB, tA.gatewayIp);
    assert.notEqual(crossBA.code, 0, `guest B reached gateway A: ${crossBA.stdout}`);
    // Guest A asking for tenant C (a VNI no lease has) gets nothing either.
    const crossAC = await curl(guestA, tC.gatewayIp);
    assert.notEqual(crossAC.code, 0, `guest A reached gateway C: ${crossAC.stdout}`);

    await new Promise((r) => setTimeout(r, 200));
    const vnis = await capture.stop();
    const packets = capture.packets();
    assert.ok(vnis.includes(vniA) && vnis.includes(vniB), `VNIs on the wire: ${vnis.join(",")}\n${capture.raw()}`);
    assert.ok(!vnis.includes(DUMMY_VNI), `dummy VNI 0 on the wire:\n${capture.raw()}`);
    assert.deepEqual(vnis, [vniA, vniB], `only the leases' VNIs: ${vnis.join(",")}`);
    // Each VNI runs only between its own slot and the gateway.
    const slotB = addressing(leaseB);
    for (const p of packets) {
      const slot = p.vni === vniA ? slotA : slotB;
      const ends = [p.src, p.dst].sort();
      assert.deepEqual(ends, [slot.slotAddress, vpc!.vtepAddress].sort(), `VNI ${p.vni} between ${p.src} and ${p.dst}`);
    }
  });

  it("the eBPF map holds each leased slot's VNI", () => {
    const entries = dumpSlotsMap(prefix);
    assert.equal(entries.length, POOL);
    const a = addressing(leaseA);
    const b = addressing(leaseB);
    assert.deepEqual(entries.find((e) => e.mac === a.slotMac), { mac: a.slotMac, outsideAddress: a.outsideAddress, vni: vniA });
    assert.deepEqual(entries.find((e) => e.mac === b.slotMac), { mac: b.slotMac, outsideAddress: b.outsideAddress, vni: vniB });
  });

  it("after release, a new lease with another VNI on the same slot: the old VNI is gone from wire and map", async () => {
    await guestA.stop();
    await daemon.client.release(leaseA.id);
    await waitFor(async () => (await daemon.client.pool()).free === 1, 10_000);
    assert.deepEqual(snapshot(), before0, "links (names and ifindexes) changed on release");
    assert.ok(!dumpSlotsMap(prefix).some((e) => e.vni === vniA), "VNI A still in the map after release");

    const leaseC = await acquire(tC);
    assert.equal(leaseC.slot.index, leaseA.slot.index, "the only free slot is A's old one");
    assert.deepEqual(snapshot(), before0, "links (names and ifindexes) changed on the second lease");
    const slotC = addressing(leaseC);
    const routes = nsExec(slotC.name, ["ip", "-4", "route", "show"]);
    assert.doesNotMatch(routes, new RegExp(tA.cidr.split("/")[0]!.replace(/\./g, "\\.")), `tenant A's route survived: ${routes}`);
    assert.match(routes, new RegExp(`^${tC.cidr.replace(/\./g, "\\.")} dev vx0`, "m"), routes);

    const guestC = await startGuestStandIn({ slotNetnsPath: leaseC.slot.netns, name: `${prefix}-gc`, mtu: leaseC.guest.mtu });
    guests.push(guestC);
    const capture = await vpc!.startCapture();
    captures.push(capture);
    const okC = await curl(guestC, tC.gatewayIp);
    assert.equal(okC.code, 0, `guest C → gateway C: ${okC.stderr}`);
    assert.equal(okC.stdout, tC.answer);
    const oldA = await curl(guestC, tA.gatewayIp);
    assert.notEqual(oldA.code, 0, `guest C reached tenant A through the old lease: ${oldA.stdout}`);
    const okB = await curl(guestB, tB.gatewayIp);
    assert.equal(okB.code, 0, `guest B → gateway B after the other slot's turnover: ${okB.stderr}`);
    assert.equal(okB.stdout, tB.answer);
    await new Promise((r) => setTimeout(r, 200));
    const vnis = await capture.stop();
    assert.deepEqual(vnis, [vniB, vniC], `VNIs on the wire after turnover:\n${capture.raw()}`);

    const entries = dumpSlotsMap(prefix);
    assert.equal(entries.find((e) => e.mac === slotC.slotMac)?.vni, vniC);
    assert.ok(!entries.some((e) => e.vni === vniA), "VNI A still in the map");

    await guestC.stop();
    await daemon.client.release(leaseC.id);
    await waitFor(async () => (await daemon.client.pool()).free === 1, 10_000);
    assert.equal(dumpSlotsMap(prefix).find((e) => e.mac === slotC.slotMac)?.vni, 0, "released slot's VNI is back to 0");
    assert.deepEqual(snapshot(), before0, "links (names and ifindexes) changed after the last release");
  });

  it("rejects bad VNIs and CIDRs with invalid_request naming the field, and leaves the pool alone", async () => {
    const poolBefore = await daemon.client.pool();
    const leasesBefore = (await daemon.client.list()).map((l) => l.id).sort();
    const cases: Array<{ network: { vni: unknown; cidr: unknown }; field: string }> = [
      { network: { vni: 0, cidr: tA.cidr }, field: "/network/vni" },
      { network: { vni: 16777216, cidr: tA.cidr }, field: "/network/vni" },
      { network: { vni: "x", cidr: tA.cidr }, field: "/network/vni" },
      { network: { vni: vniA, cidr: "10.1.0.1/16" }, field: "/network/cidr" },
      { network: { vni: vniA, cidr: "300.0.0.0/8" }, field: "/network/cidr" },
      { network: { vni: vniA, cidr: "10.0.0.0/33" }, field: "/network/cidr" },
    ];
    for (const c of cases) {
      const what = JSON.stringify(c.network);
      await assert.rejects(
        daemon.client.acquire({ network: c.network as unknown as TenantNetwork, bindToProcess: false, autoRenew: false }),
        (err: unknown) => {
          assert.ok(err instanceof NetslotApiError, `${what}: ${String(err)}`);
          assert.equal(err.status, 400, `${what}: status`);
          assert.equal(err.code, "invalid_request", `${what}: code`);
          assert.equal(err.field, c.field, `${what}: field (${err.detail})`);
          return true;
        },
      );
    }
    assert.deepEqual(await daemon.client.pool(), poolBefore);
    assert.deepEqual((await daemon.client.list()).map((l) => l.id).sort(), leasesBefore);
  });
});
