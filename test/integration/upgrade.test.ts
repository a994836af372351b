// In-place upgrade of the eBPF data path on real slots: three slots built with bpf/nat.o,
// then a changed build of bpf/nat.c (-D NETSLOT_UPGRADE_TEST: one extra no-op
// instruction, new tags) is rolled out with upgradeDataplane. Checks, through tc and
// bpftool: every slot's filters and the pins carry the new tags, the maps (ids and
// entries, VNIs included) are the same, the new pinned programs still NAT correctly
// (BPF_PROG_TEST_RUN), a second run is a no-op, an interrupted upgrade is finished by the
// next one, and a changed map layout gets a new map with every slot's entry. Runs as root.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { REPO_ROOT, freeLinkCidr, isRoot, nsExec, sh, testPrefix, skipUnless } from "../support/env.js";
import { SlotDataplane, bpfPinDir, type DataplaneOptions } from "../../src/dataplane/dataplane.js";
import { upgradeDataplane } from "../../src/dataplane/upgrade.js";
import { DUMMY_VNI, GUEST_IP, TAP_MAC, parseCidr, slotMacFor } from "../../src/dataplane/topology.js";
import { IPPROTO_UDP, assertIpCsum, assertL4Csum, ether, ipv4, parse, udp, vxlan } from "../support/packets.js";
import { loadDataplane, openPinnedDataplane, progTestRun, removePinned, upgradePrograms } from "../../src/kernel/bpf.js";
import { DEFAULT_VXLAN_PORT, TC_ACT_OK } from "../../src/kernel/bpfmaps.js";
import { withNetns } from "../../src/kernel/netns.js";
import { Rtnl } from "../../src/kernel/netlink/rtnl.js";

const skip = skipUnless(isRoot(), "needs root");
const ORIGINAL = path.join(REPO_ROOT, "bpf", "nat.o");
const SLOTS = [0, 1, 2];
const TENANT_VNI = 5000;
const REMOTE = "198.51.100.20";
const EXTRA_MAC = slotMacFor(0x3fff); // a map entry of no slot: must survive too

// ---- frames (test/support/packets.ts, independent of the code under test) ----

/** Ethernet + IPv4 + UDP (with checksum) carrying `data`. */
function udpFrame(srcMac: string, dstMac: string, src: string, dst: string, dport: number, data: Buffer): Buffer {
  return Buffer.concat([ether(dstMac, srcMac), ipv4({ src, dst, proto: IPPROTO_UDP, id: 0, payload: udp(src, dst, 40000, dport, data) })]);
}

/** Source, destination and UDP payload of a frame, after checking both checksums verify. */
function checkedUdp(frame: Buffer): { src: string; dst: string; payload: Buffer } {
  const p = parse(frame);
  assertIpCsum(p.ip.subarray(0, p.ihl), "IPv4 header");
  assertL4Csum(p);
  return { src: p.src, dst: p.dst, payload: p.l4.subarray(8) };
}

// ---- kernel state as tc and bpftool see it ----

interface TcJsonFilter {
  pref?: number;
  kind?: string;
  options?: { handle?: string; bpf_name?: string; prog?: { id: number; tag: string } };
}

/** `tc -j filter show dev eth0 ingress|egress` in the slot: the bpf filters with a program. */
function tcFilters(ns: string, direction: "ingress" | "egress"): Array<{ pref: number; handle: string; name: string; id: number; tag: string }> {
  const list = JSON.parse(nsExec(ns, ["tc", "-j", "filter", "show", "dev", "eth0", direction])) as TcJsonFilter[];
  return list
    .filter((f) => f.kind === "bpf" && f.options?.prog)
    .map((f) => ({ pref: f.pref!, handle: f.options!.handle!, name: f.options!.bpf_name!, id: f.options!.prog!.id, tag: f.options!.prog!.tag }));
}

function bpftool(args: string[]): Record<string, unknown> {
  return JSON.parse(sh("bpftool", ["-j", ...args])) as Record<string, unknown>;
}

describe("in-place upgrade of the eBPF data path", { skip }, () => {
  const prefix = testPrefix();
  const uplink = `${prefix}u`;
  const pinDir = bpfPinDir(prefix);
  const scratchPins = `/sys/fs/bpf/netslot-test-${prefix}-layout`;
  let tmp: string;
  let changed: string;
  let options: DataplaneOptions;
  let dp: SlotDataplane | undefined;
  let oldTags: { egress: string; ingress: string };
  let newTags: { egress: string; ingress: string };
  let mapIds: { slots: number; config: number };
  let entriesBefore: Array<{ mac: string; outsideAddress: string; vni: number }>;

  const sortedEntries = () => {
    const pinned = openPinnedDataplane(pinDir);
    assert.ok(pinned, "pins missing");
    try {
      return pinned.slotEntries().sort((a, b) => a.mac.localeCompare(b.mac));
    } finally {
      pinned.close();
    }
  };
  const pinnedTag = (name: string) => bpftool(["prog", "show", "pinned", path.join(pinDir, name)]).tag as string;
  const mapId = (name: string) => bpftool(["map", "show", "pinned", path.join(pinDir, name)]).id as number;

  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "netslot-upgrade-"));
    changed = path.join(tmp, "nat.o");
    sh("clang", [
      "-O2", "-g", "-Wall", "-Werror", "-target", "bpf",
      `-I/usr/include/${sh("clang", ["-print-multiarch"]).trim() || "x86_64-linux-gnu"}`,
      `-I${path.join(REPO_ROOT, "bpf")}`,
      "-D", "NETSLOT_UPGRADE_TEST=1",
      "-c", path.join(REPO_ROOT, "bpf", "nat.c"), "-o", changed,
    ]);
    sh("ip", ["link", "add", uplink, "type", "veth", "peer", "name", `${prefix}v`]);
    sh("ip", ["link", "set", uplink, "up"]);
    options = { prefix, linkCidr: parseCidr(freeLinkCidr()), uplink, vtepRemote: "198.18.250.2", vtepPort: DEFAULT_VXLAN_PORT, bpfObject: ORIGINAL };
    dp = SlotDataplane.open(options);
    for (const i of SLOTS) dp.buildSlot(i);
    oldTags = dp.programTags();
    // A tenant VNI on slot 1 and an entry of no slot: the upgrade must keep both.
    const pinned = openPinnedDataplane(pinDir)!;
    try {
      pinned.setSlotVni(dp.addressing(1).slotMac, TENANT_VNI);
      pinned.putSlot(EXTRA_MAC, { outsideAddress: "192.0.2.77", vni: 77, ifindex: 0 });
    } finally {
      pinned.close();
    }
    entriesBefore = sortedEntries();
    mapIds = { slots: mapId("slots"), config: mapId("config") };
  });

  after(() => {
    try {
      dp?.close();
    } finally {
      SlotDataplane.purge(prefix);
      removePinned(scratchPins);
      sh("ip", ["link", "del", uplink], { allowFail: true });
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it("starts with the original programs on every slot", () => {
    assert.equal(entriesBefore.length, SLOTS.length + 1);
    assert.equal(entriesBefore.find((e) => e.mac === dp!.addressing(1).slotMac)?.vni, TENANT_VNI);
    for (const i of SLOTS) {
      const ns = dp!.addressing(i).name;
      assert.deepEqual(tcFilters(ns, "ingress").map((f) => [f.pref, f.handle, f.name, f.tag]), [[1, "0x1", "nat_ingress", oldTags.ingress]]);
      assert.deepEqual(tcFilters(ns, "egress").map((f) => [f.pref, f.handle, f.name, f.tag]), [[1, "0x1", "nat_egress", oldTags.egress]]);
    }
  });

  it("switches every slot's filters to the changed programs and re-pins them, keeping the maps", (t) => {
    const logs: string[] = [];
    const r = upgradeDataplane({ ...options, bpfObject: changed }, SLOTS, (m) => logs.push(m));
    t.diagnostic(
      `upgrade: ${r.slotsSwitched} slots in ${r.ms.toFixed(1)} ms (load, switch, re-pin); per slot median ` +
        `${r.slotMs?.median.toFixed(3)} ms, mean ${r.slotMs?.mean.toFixed(3)} ms, max ${r.slotMs?.max.toFixed(3)} ms`,
    );
    assert.equal(r.upgraded, true);
    assert.equal(r.slotsSwitched, SLOTS.length);
    assert.deepEqual(r.skipped, []);
    assert.ok(r.tags);
    newTags = r.tags;
    assert.notEqual(newTags.egress, oldTags.egress);
    assert.notEqual(newTags.ingress, oldTags.ingress);
    assert.ok(logs.some((m) => m.includes("upgraded")), logs.join("\n"));

    for (const i of SLOTS) {
      const ns = dp!.addressing(i).name;
      // Still exactly one filter per hook, same priority and handle, new program.
      assert.deepEqual(tcFilters(ns, "ingress").map((f) => [f.pref, f.handle, f.name, f.tag]), [[1, "0x1", "nat_ingress", newTags.ingress]], ns);
      assert.deepEqual(tcFilters(ns, "egress").map((f) => [f.pref, f.handle, f.name, f.tag]), [[1, "0x1", "nat_egress", newTags.egress]], ns);
    }
    assert.equal(pinnedTag("nat_egress"), newTags.egress);
    assert.equal(pinnedTag("nat_ingress"), newTags.ingress);
    assert.deepEqual(fs.readdirSync(pinDir).sort(), ["config", "nat_egress", "nat_ingress", "policies", "policy_cidrs", "rates", "slots", "slots6", "unattributed"]);
    // Same map objects, same contents; the new programs use them.
    assert.deepEqual({ slots: mapId("slots"), config: mapId("config") }, mapIds);
    assert.deepEqual(sortedEntries(), entriesBefore);
    const progMaps = bpftool(["prog", "show", "pinned", path.join(pinDir, "nat_egress")]).map_ids as number[];
    assert.deepEqual([...progMaps].sort(), [mapIds.slots, mapIds.config, mapId("rates"), mapId("unattributed"), mapId("policies"), mapId("policy_cidrs"), mapId("slots6")].sort());
    // The adopting path sees the new programs too.
    const adopted = loadDataplane(ORIGINAL, pinDir);
    try {
      assert.equal(adopted.adopted, true);
      assert.equal(adopted.egressProgTag, newTags.egress);
    } finally {
      adopted.close();
    }
  });

  it("the new pinned programs still NAT: guest source, VXLAN VNI, inbound destination", () => {
    const pinned = openPinnedDataplane(pinDir);
    assert.ok(pinned);
    try {
      const a = dp!.addressing(1);
      // The entry stays bound to the slot's eth0; BPF_PROG_TEST_RUN runs on loopback
      // (ifindex 1), so the test binds it there for the runs.
      const entry = pinned.getSlot(a.slotMac)!;
      assert.equal(entry.ifindex, a.slotIfindex);
      pinned.putSlot(a.slotMac, { ...entry, ifindex: 1 });
      // Guest → remote: source rewritten to slot 1's outside address.
      const out = progTestRun(pinned.egressProgFd, udpFrame(a.slotMac, TAP_MAC, GUEST_IP, REMOTE, 53, Buffer.from("query")));
      assert.equal(out.retval, TC_ACT_OK);
      assert.deepEqual(checkedUdp(out.packet).src, a.outsideAddress);
      // The slot's own VXLAN with the dummy VNI leaves with the lease's VNI (kept in the map).
      const inner = Buffer.alloc(42, 0xab);
      const vx = progTestRun(
        pinned.egressProgFd,
        udpFrame(a.slotMac, TAP_MAC, a.slotAddress, "198.18.250.2", DEFAULT_VXLAN_PORT, vxlan(DUMMY_VNI, inner)),
      );
      assert.equal(vx.retval, TC_ACT_OK);
      const vxPayload = checkedUdp(vx.packet).payload;
      assert.equal(vxPayload.readUInt32BE(4) >>> 8, TENANT_VNI);
      assert.deepEqual(vxPayload.subarray(8), inner);
      // Remote → outside address: destination rewritten to the guest.
      const back = progTestRun(pinned.ingressProgFd, udpFrame("02:aa:00:00:00:01", a.slotMac, REMOTE, a.outsideAddress, 40001, Buffer.from("answer")));
      assert.equal(back.retval, TC_ACT_OK);
      assert.equal(checkedUdp(back.packet).dst, GUEST_IP);
      pinned.putSlot(a.slotMac, entry);
    } finally {
      pinned.close();
    }
  });

  it("a second upgrade with the same object changes nothing", () => {
    const ids = SLOTS.map((i) => tcFilters(dp!.addressing(i).name, "egress")[0]!.id);
    const r = upgradeDataplane({ ...options, bpfObject: changed }, SLOTS);
    assert.equal(r.upgraded, false);
    assert.equal(r.slotsSwitched, 0);
    assert.deepEqual(SLOTS.map((i) => tcFilters(dp!.addressing(i).name, "egress")[0]!.id), ids);
    assert.equal(pinnedTag("nat_egress"), newTags.egress);
  });

  it("an upgrade interrupted before re-pinning is finished by the next one (back to the original)", () => {
    // Slot 0 switched, then the "daemon dies": no commit, the pins still name the changed programs.
    const partial = upgradePrograms(ORIGINAL, pinDir);
    assert.ok(partial);
    assert.equal(partial.egressTag, oldTags.egress);
    try {
      withNetns(dp!.addressing(0).netnsPath, () => {
        const rtnl = Rtnl.open();
        try {
          const eth0 = rtnl.linkByName("eth0")!;
          rtnl.replaceBpfFilter(eth0.index, "ingress", partial.ingressProgFd, "nat_ingress");
          rtnl.replaceBpfFilter(eth0.index, "egress", partial.egressProgFd, "nat_egress");
        } finally {
          rtnl.close();
        }
      });
    } finally {
      partial.abandon();
    }
    assert.equal(pinnedTag("nat_egress"), newTags.egress);
    assert.equal(tcFilters(dp!.addressing(0).name, "egress")[0]!.tag, oldTags.egress);

    const r = upgradeDataplane(options, SLOTS);
    assert.equal(r.upgraded, true);
    assert.equal(r.slotsSwitched, SLOTS.length);
    for (const i of SLOTS) {
      const ns = dp!.addressing(i).name;
      assert.deepEqual(tcFilters(ns, "ingress").map((f) => [f.pref, f.handle, f.tag]), [[1, "0x1", oldTags.ingress]]);
      assert.deepEqual(tcFilters(ns, "egress").map((f) => [f.pref, f.handle, f.tag]), [[1, "0x1", oldTags.egress]]);
    }
    assert.equal(pinnedTag("nat_egress"), oldTags.egress);
    assert.equal(pinnedTag("nat_ingress"), oldTags.ingress);
    assert.deepEqual(sortedEntries(), entriesBefore);
  });

  it("skips a slot without its filters and leaves it alone", () => {
    const ns = dp!.addressing(2).name;
    nsExec(ns, ["tc", "filter", "del", "dev", "eth0", "egress"]);
    const r = upgradeDataplane({ ...options, bpfObject: changed }, SLOTS);
    assert.equal(r.upgraded, true);
    assert.equal(r.slotsSwitched, 2);
    assert.equal(r.skipped.length, 1);
    assert.equal(r.skipped[0]!.index, 2);
    assert.match(r.skipped[0]!.reason, /no nat_egress filter/);
    assert.deepEqual(tcFilters(ns, "egress"), []);
    assert.equal(tcFilters(ns, "ingress")[0]!.tag, oldTags.ingress);
  });

  it("creates and pins maps the pin directory predates (rates, added with network profiles; unattributed; the egress policy maps; slots6)", () => {
    removePinned(scratchPins);
    const dp2 = loadDataplane(ORIGINAL, scratchPins);
    dp2.close();
    // What a netslot before bandwidth profiles pinned: no rates map.
    fs.rmSync(path.join(scratchPins, "rates"));
    fs.rmSync(path.join(scratchPins, "unattributed"));
    fs.rmSync(path.join(scratchPins, "policies"));
    fs.rmSync(path.join(scratchPins, "policy_cidrs"));
    fs.rmSync(path.join(scratchPins, "slots6"));
    const up = upgradePrograms(changed, scratchPins);
    assert.ok(up, "the changed programs are an upgrade");
    up.commit();
    assert.deepEqual(fs.readdirSync(scratchPins).sort(), ["config", "nat_egress", "nat_ingress", "policies", "policy_cidrs", "rates", "slots", "slots6", "unattributed"]);
    const dp3 = loadDataplane(ORIGINAL, scratchPins);
    try {
      assert.equal(dp3.adopted, true);
      dp3.setRate("10.200.200.1", { ingress: { bytesPerSecond: 1000, burstBytes: 131072 } });
      assert.deepEqual(dp3.getRate("10.200.200.1"), { ingress: { bytesPerSecond: 1000, burstBytes: 131072 } });
      dp3.setSlotPolicy("10.200.200.1", { profile: 7, hostAddress: "10.200.0.0", restricted: true });
      assert.deepEqual(dp3.getSlotPolicy("10.200.200.1"), { profile: 7, hostAddress: "10.200.0.0", restricted: true });
      assert.equal(dp3.syncPolicyCidrs([{ profile: 7, base: 0xc0000200, prefixLength: 24, deny: false }]), 0);
      assert.deepEqual(dp3.policyCidrs(), [{ profile: 7, base: 0xc0000200, prefixLength: 24, deny: false }]);
    } finally {
      dp3.close();
    }
    removePinned(scratchPins);
  });

  it("migrates the NAT entries when the object's map layout differs from the pinned maps: no purge", () => {
    // Another size of the slots map (NETSLOT_MAX_SLOTS): a new layout that the encoding of
    // the entries shares, so the same code can check them.
    const resized = path.join(tmp, "nat-resized.o");
    sh("clang", [
      "-O2", "-g", "-Wall", "-Werror", "-target", "bpf",
      `-I/usr/include/${sh("clang", ["-print-multiarch"]).trim() || "x86_64-linux-gnu"}`,
      `-I${path.join(REPO_ROOT, "bpf")}`,
      "-D", "NETSLOT_MAX_SLOTS=32768",
      "-c", path.join(REPO_ROOT, "bpf", "nat.c"), "-o", resized,
    ]);
    const before = mapId("slots");
    const whole = SLOTS.filter((i) => i !== 2); // slot 2 lost its egress filter above
    const logs: string[] = [];
    const r = upgradeDataplane({ ...options, bpfObject: resized }, whole, (m) => logs.push(m), (i) => (i === 1 ? TENANT_VNI : 0));
    assert.equal(r.upgraded, true, logs.join("\n"));
    assert.ok(logs.some((m) => /map layout changed: 2 NAT entries migrated/.test(m)), logs.join("\n"));
    const info = bpftool(["map", "show", "pinned", path.join(pinDir, "slots")]);
    assert.equal(info.max_entries, 32768, "the new map is pinned");
    assert.notEqual(info.id, before);
    // Every slot's entry, in the new map, with its tenant VNI.
    const entries = sortedEntries();
    for (const i of whole) {
      const a = dp!.addressing(i);
      assert.deepEqual(entries.find((e) => e.mac === a.slotMac), {
        mac: a.slotMac,
        outsideAddress: a.outsideAddress,
        vni: i === 1 ? TENANT_VNI : 0,
        // Migrated unbound, then bound to the slot's eth0 before its filters switched.
        ifindex: a.slotIfindex,
      });
    }
    // The slots' filters run programs that read the new map.
    for (const i of whole) {
      const f = tcFilters(dp!.addressing(i).name, "egress")[0]!;
      const progMaps = bpftool(["prog", "show", "id", String(f.id)]).map_ids as number[];
      assert.ok(progMaps.includes(info.id as number), `slot ${i}: program ${f.id} uses maps ${progMaps.join(",")}`);
    }
  });
});
