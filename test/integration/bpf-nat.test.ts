// The tc NAT programs of bpf/nat.o against the real kernel: loaded and pinned into a
// test-only directory, maps filled through src/kernel/bpf.ts, then run with
// BPF_PROG_TEST_RUN on frames built here. Every checksum is recomputed independently
// from the output bytes. `bpftool` only checks what the kernel holds.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { loadDataplane, openPinnedDataplane, progTestRun, removePinned, type Dataplane } from "../../src/kernel/bpf.js";
import { SyscallError } from "../../src/kernel/libc.js";
import { ip6ToBytes } from "../../src/core/addr.js";
import {
  ADMITTED_MARK,
  DEFAULT_VXLAN_PORT,
  DropReason,
  TC_ACT_OK,
  TC_ACT_SHOT,
} from "../../src/kernel/bpfmaps.js";
import { DUMMY_VNI, GUEST_IP, GUEST_IP6, GUEST_MAC, HOST_LINK_IP6, SLOT_LINK_IP6, TAP_MAC, slotMacFor } from "../../src/dataplane/topology.js";
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, checksum, ip4, pseudoSum, ether, type Ipv4Opts, ipv4, ipv6, parse6, assertL4Csum6, tcp, udp, icmp, vxlan, type Parsed, parse, assertIpCsum, assertL4Csum } from "../support/packets.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const OBJECT = path.join(ROOT, "bpf", "nat.o");
const ID = "t" + Array.from(randomBytes(5), (b) => "abcdefghijklmnopqrstuvwxyz0123456789"[b % 36]).join("");
const PIN_DIR = `/sys/fs/bpf/netslot-test-${ID}`;

const SLOT_MAC = slotMacFor(7);
const OTHER_MAC = slotMacFor(8); // in the map, no tenant network
const UNKNOWN_MAC = slotMacFor(9); // not in the map
const OUTSIDE = "10.200.128.7";
const OTHER_OUTSIDE = "10.200.128.8";
const SLOT_ADDR = "10.200.0.15";
const VTEP = "192.0.2.10";
const REMOTE = "198.51.100.20";
const TENANT_VNI = 5000;
/** BPF_PROG_TEST_RUN runs the program on the loopback device: skb->ifindex is 1. */
const RUN_IFINDEX = 1;


function assertFrameValid(frame: Buffer): Parsed {
  const p = parse(frame);
  assertIpCsum(p.ip.subarray(0, p.ihl), "outer");
  assertL4Csum(p);
  return p;
}

// ---- the tests ----

let dp: Dataplane;

function egress(frame: Buffer) {
  return progTestRun(dp.egressProgFd, frame);
}

function ingress(frame: Buffer) {
  return progTestRun(dp.ingressProgFd, frame);
}

function guestFrame(payload: Buffer, proto: number, dst = REMOTE, extra: Partial<Ipv4Opts> = {}): Buffer {
  return Buffer.concat([ether(TAP_MAC, SLOT_MAC), ipv4({ src: GUEST_IP, dst, proto, payload, ...extra })]);
}

function toSlotFrame(payload: Buffer, proto: number, src = REMOTE, dst = OUTSIDE, mac = SLOT_MAC): Buffer {
  return Buffer.concat([ether(mac, "02:aa:00:00:00:01"), ipv4({ src, dst, proto, payload })]);
}

describe("eBPF NAT programs (BPF_PROG_TEST_RUN)", () => {
  before(() => {
    assert.ok(fs.existsSync(OBJECT), `${OBJECT} is missing: run npm run build (make -C bpf)`);
    dp = loadDataplane(OBJECT, PIN_DIR);
    dp.setConfig({ guestAddress: GUEST_IP, vxlanPort: DEFAULT_VXLAN_PORT, dummyVni: DUMMY_VNI });
    dp.putSlot(SLOT_MAC, { outsideAddress: OUTSIDE, vni: 0, ifindex: RUN_IFINDEX });
    dp.putSlot(OTHER_MAC, { outsideAddress: OTHER_OUTSIDE, vni: 0, ifindex: RUN_IFINDEX });
  });

  after(() => {
    try {
      dp?.close();
    } finally {
      removePinned(PIN_DIR);
    }
  });

  it("pins both programs and their maps, visible to bpftool", () => {
    assert.equal(dp.adopted, false);
    assert.deepEqual(fs.readdirSync(PIN_DIR).sort(), ["config", "nat_egress", "nat_ingress", "policies", "policy_cidrs", "rates", "slots", "slots6", "unattributed"]);
    const show = JSON.parse(execFileSync("bpftool", ["-j", "prog", "show", "pinned", `${PIN_DIR}/nat_egress`], { encoding: "utf8" })) as {
      id: number;
      tag: string;
      type: string;
    };
    assert.equal(show.id, dp.egressProgId);
    assert.equal(show.tag, dp.egressProgTag);
    assert.equal(show.type, "sched_cls");
    const map = JSON.parse(execFileSync("bpftool", ["-j", "map", "show", "pinned", `${PIN_DIR}/slots`], { encoding: "utf8" })) as {
      bytes_key: number;
      bytes_value: number;
      max_entries: number;
    };
    assert.deepEqual([map.bytes_key, map.bytes_value, map.max_entries], [8, 12, 65536]);
  });

  it("map operations round-trip", () => {
    assert.deepEqual(dp.getConfig(), { guestAddress: GUEST_IP, vxlanPort: DEFAULT_VXLAN_PORT, dummyVni: 0 });
    const mac = slotMacFor(0x1234);
    assert.equal(dp.getSlot(mac), undefined);
    dp.putSlot(mac, { outsideAddress: "10.200.200.1", vni: 42, ifindex: 70000 });
    assert.deepEqual(dp.getSlot(mac), { outsideAddress: "10.200.200.1", vni: 42, ifindex: 70000 });
    dp.setSlotVni(mac, 0xffffff);
    // The VNI changes, the binding to eth0 stays.
    assert.deepEqual(dp.getSlot(mac), { outsideAddress: "10.200.200.1", vni: 0xffffff, ifindex: 70000 });
    const entries = dp.slotEntries();
    assert.deepEqual(
      entries.map((e) => e.mac).sort(),
      [SLOT_MAC, OTHER_MAC, mac].sort(),
    );
    assert.deepEqual(entries.find((e) => e.mac === mac), { mac, outsideAddress: "10.200.200.1", vni: 0xffffff, ifindex: 70000 });
    assert.equal(dp.deleteSlot(mac), true);
    assert.equal(dp.deleteSlot(mac), false);
    assert.throws(() => dp.setSlotVni(mac, 1), (err: unknown) => err instanceof SyscallError && err.errno === 2);
    assert.throws(() => dp.putSlot(mac, { outsideAddress: OUTSIDE, vni: 1 << 24, ifindex: 1 }), /VNI out of range/);
    // bpftool sees the same bytes: key is the MAC plus two zero bytes.
    const dump = JSON.parse(execFileSync("bpftool", ["-j", "map", "dump", "pinned", `${PIN_DIR}/slots`], { encoding: "utf8" })) as Array<{
      key: string[];
      value: string[];
    }>;
    const ours = dump.find((e) => e.key.slice(0, 6).map((x) => x.replace(/^0x/, "")).join(":") === SLOT_MAC);
    assert.ok(ours, "slot entry not found in bpftool dump");
    assert.deepEqual(ours.key.slice(6).map(Number), [0, 0]);
    assert.deepEqual(ours.value.slice(0, 4).map(Number), [10, 200, 128, 7]);
  });

  it("loading again with the same pin directory adopts the same programs and maps", () => {
    const again = loadDataplane(OBJECT, PIN_DIR);
    try {
      assert.equal(again.adopted, true);
      assert.equal(again.egressProgId, dp.egressProgId);
      assert.equal(again.ingressProgId, dp.ingressProgId);
      assert.equal(again.egressProgTag, dp.egressProgTag);
      assert.equal(again.ingressProgTag, dp.ingressProgTag);
      assert.deepEqual(again.getSlot(SLOT_MAC), { outsideAddress: OUTSIDE, vni: 0, ifindex: RUN_IFINDEX });
    } finally {
      again.close();
    }
    // Closing the second handle leaves the first usable.
    assert.deepEqual(dp.getSlot(SLOT_MAC), { outsideAddress: OUTSIDE, vni: 0, ifindex: RUN_IFINDEX });
    const opened = openPinnedDataplane(PIN_DIR);
    assert.ok(opened);
    try {
      assert.equal(opened.ingressProgId, dp.ingressProgId);
    } finally {
      opened.close();
    }
    assert.equal(openPinnedDataplane(`${PIN_DIR}-none`), undefined);
  });

  it("refuses a pin directory with a partial set of objects, and reuses an empty one", () => {
    const dir = `${PIN_DIR}-c`;
    try {
      fs.mkdirSync(dir);
      const fresh = loadDataplane(OBJECT, dir); // empty directory: loads
      assert.equal(fresh.adopted, false);
      fresh.close();
      fs.rmSync(path.join(dir, "config"));
      assert.throws(() => loadDataplane(OBJECT, dir), /incomplete set of pinned objects/);
    } finally {
      removePinned(dir);
    }
  });

  it("removePinned is idempotent and a missing directory means a fresh load", () => {
    const dir = `${PIN_DIR}-b`;
    try {
      const fresh = loadDataplane(OBJECT, dir);
      const id = fresh.egressProgId;
      assert.equal(fresh.adopted, false);
      assert.notEqual(id, dp.egressProgId);
      fresh.unpin();
      assert.equal(fs.existsSync(dir), false);
      fresh.unpin();
      removePinned(dir);
    } finally {
      removePinned(dir);
    }
  });

  describe("egress (frames leaving the slot)", () => {
    it("rewrites the guest source of TCP and fixes both checksums", () => {
      const frame = guestFrame(tcp(GUEST_IP, REMOTE, 40000, 443, Buffer.from("hello, world!")), IPPROTO_TCP);
      const r = egress(frame);
      assert.equal(r.retval, TC_ACT_OK);
      const p = assertFrameValid(r.packet);
      assert.equal(p.src, OUTSIDE);
      assert.equal(p.dst, REMOTE);
      assert.deepEqual(r.packet.subarray(0, 14), frame.subarray(0, 14));
      assert.deepEqual(p.l4.subarray(0, 16), parse(frame).l4.subarray(0, 16));
    });

    it("handles IPv4 options (ihl > 5)", () => {
      const options = Buffer.from([0x01, 0x01, 0x01, 0x00, 0x94, 0x04, 0x00, 0x00]); // NOPs, router alert
      const payload = tcp(GUEST_IP, REMOTE, 40001, 80, Buffer.from("odd length."));
      const r = egress(guestFrame(payload, IPPROTO_TCP, REMOTE, { options }));
      assert.equal(r.retval, TC_ACT_OK);
      const p = assertFrameValid(r.packet);
      assert.equal(p.ihl, 28);
      assert.equal(p.src, OUTSIDE);
    });

    it("rewrites UDP with a checksum and leaves a zero UDP checksum zero", () => {
      const withCsum = egress(guestFrame(udp(GUEST_IP, REMOTE, 5353, 53, Buffer.from("query")), IPPROTO_UDP));
      assert.equal(withCsum.retval, TC_ACT_OK);
      const p = assertFrameValid(withCsum.packet);
      assert.equal(p.src, OUTSIDE);
      assert.notEqual(p.l4.readUInt16BE(6), 0);

      const noCsum = egress(guestFrame(udp(GUEST_IP, REMOTE, 5353, 53, Buffer.from("query"), false), IPPROTO_UDP));
      const q = assertFrameValid(noCsum.packet);
      assert.equal(q.src, OUTSIDE);
      assert.equal(q.l4.readUInt16BE(6), 0);
    });

    it("rewrites a UDP checksum that becomes 0 to 0xffff", () => {
      // Search a payload whose checksum after NAT computes to 0, then check it is sent as 0xffff.
      const want = (data: Buffer) => {
        const u = udp(OUTSIDE, REMOTE, 1000, 2000, data, false);
        return checksum(u, pseudoSum(ip4(OUTSIDE), ip4(REMOTE), IPPROTO_UDP, u.length));
      };
      const data = Buffer.alloc(4);
      const base = want(data);
      // Adding x to one word lowers the checksum by x: pick x so it lands on 0.
      data.writeUInt16BE(base, 0);
      assert.equal(want(data), 0);
      const r = egress(guestFrame(udp(GUEST_IP, REMOTE, 1000, 2000, data), IPPROTO_UDP));
      const p = assertFrameValid(r.packet);
      assert.equal(p.l4.readUInt16BE(6), 0xffff);
    });

    it("rewrites ICMP echo (no pseudo-header)", () => {
      const r = egress(guestFrame(icmp(8, 0, Buffer.from([0, 1, 0, 1]), Buffer.from("ping")), IPPROTO_ICMP));
      assert.equal(r.retval, TC_ACT_OK);
      const p = assertFrameValid(r.packet);
      assert.equal(p.src, OUTSIDE);
    });

    it("rewrites the quoted destination of an ICMP error the guest sends", () => {
      // The guest got UDP from REMOTE to its own address and answers port unreachable.
      const quoted = ipv4({ src: REMOTE, dst: GUEST_IP, proto: IPPROTO_UDP, payload: udp(REMOTE, GUEST_IP, 5000, 6000, Buffer.from("data")) });
      const frame = guestFrame(icmp(3, 3, Buffer.alloc(4), quoted), IPPROTO_ICMP);
      const r = egress(frame);
      assert.equal(r.retval, TC_ACT_OK);
      const p = assertFrameValid(r.packet);
      assert.equal(p.src, OUTSIDE);
      const inner = parse(Buffer.concat([Buffer.alloc(14), p.l4.subarray(8)]));
      assert.equal(inner.src, REMOTE);
      assert.equal(inner.dst, OUTSIDE);
      assertIpCsum(inner.ip.subarray(0, inner.ihl), "inner");
    });

    it("rewrites the quoted guest address of an ICMP error from the slot's own stack", () => {
      const quoted = ipv4({ src: REMOTE, dst: GUEST_IP, proto: IPPROTO_TCP, payload: tcp(REMOTE, GUEST_IP, 443, 40000, Buffer.alloc(0)).subarray(0, 8) });
      const frame = Buffer.concat([ether(TAP_MAC, SLOT_MAC), ipv4({ src: SLOT_ADDR, dst: REMOTE, proto: IPPROTO_ICMP, payload: icmp(11, 0, Buffer.alloc(4), quoted) })]);
      const r = egress(frame);
      assert.equal(r.retval, TC_ACT_OK);
      const p = assertFrameValid(r.packet);
      assert.equal(p.src, SLOT_ADDR);
      const inner = parse(Buffer.concat([Buffer.alloc(14), p.l4.subarray(8)]));
      assert.equal(inner.dst, OUTSIDE);
      assertIpCsum(inner.ip.subarray(0, inner.ihl), "inner");
    });

    it("rewrites only the IP header of a later fragment", () => {
      const body = Buffer.from("0123456789abcdef");
      const frame = guestFrame(body, IPPROTO_UDP, REMOTE, { fragOff: 0x0002 });
      const r = egress(frame);
      assert.equal(r.retval, TC_ACT_OK);
      const p = parse(r.packet);
      assertIpCsum(p.ip.subarray(0, p.ihl), "fragment");
      assert.equal(p.src, OUTSIDE);
      assert.deepEqual(p.l4, body);
    });

    it("drops and counts IPv4 it cannot attribute: an unknown MAC, or a MAC bound to another device", () => {
      const frame = (mac: string) =>
        Buffer.concat([ether(TAP_MAC, mac), ipv4({ src: GUEST_IP, dst: REMOTE, proto: IPPROTO_TCP, payload: tcp(GUEST_IP, REMOTE, 1, 2, Buffer.alloc(0)) })]);
      const stolen = slotMacFor(10);
      // Another slot's entry: its eth0 is another device than the one the frame is on.
      dp.putSlot(stolen, { outsideAddress: "10.200.128.10", vni: TENANT_VNI, ifindex: 0x10000 + 10 });
      try {
        const before = dp.unattributedDrops();
        for (const mac of [UNKNOWN_MAC, stolen]) {
          const out = egress(frame(mac));
          assert.equal(out.retval, TC_ACT_SHOT, mac);
          assert.equal(out.cb[0], DropReason.unattributed);
          const back = ingress(toSlotFrame(tcp(REMOTE, "10.200.128.10", 1, 2, Buffer.alloc(0)), IPPROTO_TCP, REMOTE, "10.200.128.10", mac));
          assert.equal(back.retval, TC_ACT_SHOT, mac);
          assert.equal(back.cb[0], DropReason.unattributed);
        }
        assert.equal(dp.unattributedDrops() - before, 4n);
        // Bound to the device the frame is on: translated.
        dp.putSlot(stolen, { outsideAddress: "10.200.128.10", vni: TENANT_VNI, ifindex: RUN_IFINDEX });
        const ok = egress(frame(stolen));
        assert.equal(ok.retval, TC_ACT_OK);
        assert.equal(parse(ok.packet).src, "10.200.128.10");
        assert.equal(dp.unattributedDrops() - before, 4n);
      } finally {
        dp.deleteSlot(stolen);
      }
    });

    it("leaves frames of other sources and non-IP untouched", () => {
      const cases = [
        Buffer.concat([ether(TAP_MAC, SLOT_MAC), ipv4({ src: SLOT_ADDR, dst: REMOTE, proto: IPPROTO_TCP, payload: tcp(SLOT_ADDR, REMOTE, 1, 2, Buffer.alloc(0)) })]),
        Buffer.concat([ether("ff:ff:ff:ff:ff:ff", SLOT_MAC, 0x0806), Buffer.alloc(28, 1)]),
        // IPv4 ethertype, version 6: not parsed. (A frame shorter than an IPv4 header
        // cannot be tested: BPF_PROG_TEST_RUN refuses it with EINVAL.)
        Buffer.concat([ether(TAP_MAC, SLOT_MAC), Buffer.from([0x65]), Buffer.alloc(39)]),
      ];
      for (const frame of cases) {
        const r = egress(frame);
        assert.equal(r.retval, TC_ACT_OK);
        assert.deepEqual(r.packet, frame);
      }
    });

    describe("VXLAN from the slot's device", () => {
      const inner = Buffer.concat([ether("02:00:00:00:00:02", GUEST_MAC), Buffer.alloc(46, 7)]);
      const vxFrame = (vni: number, withCsum = false, mac = SLOT_MAC, port = DEFAULT_VXLAN_PORT) =>
        Buffer.concat([
          ether("02:aa:00:00:00:01", mac),
          ipv4({ src: SLOT_ADDR, dst: VTEP, proto: IPPROTO_UDP, payload: udp(SLOT_ADDR, VTEP, 51000, port, vxlan(vni, inner), withCsum) }),
        ]);

      it("drops it while the lease has no tenant network", () => {
        dp.setSlotVni(SLOT_MAC, 0);
        const r = egress(vxFrame(0));
        assert.equal(r.retval, TC_ACT_SHOT);
        assert.equal(r.cb[0], DropReason.noTenantNetwork);
      });

      it("rewrites the dummy VNI to the lease's VNI, with and without a UDP checksum", () => {
        dp.setSlotVni(SLOT_MAC, TENANT_VNI);
        try {
          for (const withCsum of [false, true]) {
            const frame = vxFrame(0, withCsum);
            const r = egress(frame);
            assert.equal(r.retval, TC_ACT_OK);
            const p = assertFrameValid(r.packet);
            assert.equal(p.l4.readUInt32BE(12) >>> 8, TENANT_VNI);
            assert.equal(p.l4[15], 0, "reserved byte kept");
            assert.equal(p.l4[8], 0x08, "flags kept");
            assert.equal(p.src, SLOT_ADDR);
            assert.equal(p.l4.readUInt16BE(6) !== 0, withCsum);
            assert.deepEqual(p.l4.subarray(16), inner);
          }
        } finally {
          dp.setSlotVni(SLOT_MAC, 0);
        }
      });

      it("drops VXLAN whose VNI is not the dummy VNI, and truncated VXLAN", () => {
        dp.setSlotVni(SLOT_MAC, TENANT_VNI);
        try {
          const r = egress(vxFrame(77));
          assert.equal(r.retval, TC_ACT_SHOT);
          assert.equal(r.cb[0], DropReason.vniNotDummy);
          const short = Buffer.concat([
            ether("02:aa:00:00:00:01", SLOT_MAC),
            ipv4({ src: SLOT_ADDR, dst: VTEP, proto: IPPROTO_UDP, payload: udp(SLOT_ADDR, VTEP, 51000, DEFAULT_VXLAN_PORT, Buffer.alloc(4)) }),
          ]);
          const s = egress(short);
          assert.equal(s.retval, TC_ACT_SHOT);
          assert.equal(s.cb[0], DropReason.vxlanTruncated);
          // Another UDP port is not VXLAN.
          const other = egress(vxFrame(77, false, SLOT_MAC, 4790));
          assert.equal(other.retval, TC_ACT_OK);
        } finally {
          dp.setSlotVni(SLOT_MAC, 0);
        }
      });
    });
  });

  describe("bandwidth (the rates token bucket)", () => {
    it("passes frames while the bucket holds their IP bytes, then drops with the rate reason; no entry, no limit", () => {
      const frame = guestFrame(tcp(GUEST_IP, REMOTE, 40000, 443, Buffer.alloc(1000)), IPPROTO_TCP);
      const ipBytes = frame.length - 14;
      // 1 byte/s: nothing refills during the test; the bucket holds exactly three frames.
      dp.setRate(OUTSIDE, { egress: { bytesPerSecond: 1, burstBytes: 3 * ipBytes } });
      try {
        for (let i = 0; i < 3; i++) assert.equal(egress(frame).retval, TC_ACT_OK, `frame ${i}`);
        const over = egress(frame);
        assert.equal(over.retval, TC_ACT_SHOT);
        assert.equal(over.cb[0], DropReason.rate);
        // The other direction has no limit in this entry.
        assert.equal(ingress(toSlotFrame(tcp(REMOTE, OUTSIDE, 443, 40000, Buffer.alloc(1000)), IPPROTO_TCP)).retval, TC_ACT_OK);
      } finally {
        dp.setRate(OUTSIDE, undefined);
      }
      assert.equal(dp.getRate(OUTSIDE), undefined);
      assert.equal(egress(frame).retval, TC_ACT_OK);
    });
  });

  describe("egress policy (the shared policy_cidrs trie, the slot's policies entry)", () => {
    const PROFILE = 0x1234abcd;
    const HOST = "10.200.0.14";
    const to = (dst: string, mark?: number) => {
      const r = progTestRun(dp.egressProgFd, guestFrame(tcp(GUEST_IP, dst, 40000, 443, Buffer.from("x")), IPPROTO_TCP, dst), 1, mark === undefined ? {} : { mark });
      return r.retval === TC_ACT_OK ? "pass" : r.cb[0] === DropReason.policy ? "policy" : `drop ${r.cb[0]}`;
    };
    const ip = (a: string) => a.split(".").reduce((n, o) => n * 256 + Number(o), 0);
    const cidr = (c: string, deny: boolean) => {
      const [a, len] = c.split("/");
      return { profile: PROFILE, base: ip(a!), prefixLength: Number(len), deny };
    };

    it("an allow-list passes its CIDRs and the host link address, drops the rest with the policy reason; a deny inside an allow wins", () => {
      // What policyCidrs compiles allow [198.51.100.0/24, 203.0.113.0/24], deny [198.51.100.128/25] to.
      assert.equal(dp.syncPolicyCidrs([cidr("198.51.100.0/24", false), cidr("198.51.100.128/25", true), cidr("203.0.113.0/24", false), { ...cidr("203.0.113.0/24", false), profile: PROFILE + 1, deny: true }]), 0);
      dp.setSlotPolicy(OUTSIDE, { profile: PROFILE, hostAddress: HOST, restricted: true });
      try {
        assert.equal(to("198.51.100.20"), "pass");
        assert.equal(to("203.0.113.255"), "pass");
        assert.equal(to("198.51.100.200"), "policy", "denied /25 inside the allowed /24");
        assert.equal(to("192.0.2.1"), "policy", "not in the list");
        assert.equal(to(HOST), "pass", "answers to the host and guest.dns");
        // Another profile's entries do not leak into this one.
        assert.equal(to("203.0.113.7"), "pass");
        // A frame the slot's nftables marked as admitted by DNS passes the allow-list, not a deny.
        assert.equal(to("192.0.2.1", ADMITTED_MARK), "pass");
        assert.equal(to("198.51.100.200", ADMITTED_MARK), "policy");
        assert.equal(to("192.0.2.1", ADMITTED_MARK + 1), "policy");
        // Frames of other slots (no entry) are not judged.
        const other = Buffer.concat([ether(TAP_MAC, OTHER_MAC), ipv4({ src: GUEST_IP, dst: "192.0.2.1", proto: IPPROTO_TCP, payload: tcp(GUEST_IP, "192.0.2.1", 1, 2, Buffer.alloc(1)) })]);
        assert.equal(egress(other).retval, TC_ACT_OK);
        // Not an allow-list: only the denies count.
        dp.setSlotPolicy(OUTSIDE, { profile: PROFILE, hostAddress: HOST, restricted: false });
        assert.equal(to("192.0.2.1"), "pass");
        assert.equal(to("198.51.100.200"), "policy");
        assert.equal(to("198.51.100.20"), "pass");
      } finally {
        dp.setSlotPolicy(OUTSIDE, undefined);
      }
      assert.equal(dp.getSlotPolicy(OUTSIDE), undefined);
      assert.equal(to("192.0.2.1"), "pass");
      assert.equal(dp.syncPolicyCidrs([]), 4);
      assert.deepEqual(dp.policyCidrs(), []);
    });
  });

  describe("ingress (frames entering the slot)", () => {
    it("rewrites the outside destination of TCP, UDP and ICMP to the guest", () => {
      for (const [proto, payload] of [
        [IPPROTO_TCP, tcp(REMOTE, OUTSIDE, 443, 40000, Buffer.from("response"))],
        [IPPROTO_UDP, udp(REMOTE, OUTSIDE, 53, 5353, Buffer.from("answer!"))],
        [IPPROTO_ICMP, icmp(0, 0, Buffer.from([0, 1, 0, 1]), Buffer.from("pong"))],
      ] as const) {
        const r = ingress(toSlotFrame(payload, proto));
        assert.equal(r.retval, TC_ACT_OK);
        const p = assertFrameValid(r.packet);
        assert.equal(p.dst, GUEST_IP, `proto ${proto}`);
        assert.equal(p.src, REMOTE);
      }
    });

    it("undoes the egress rewrite exactly", () => {
      const original = guestFrame(tcp(GUEST_IP, REMOTE, 40000, 443, Buffer.from("round trip")), IPPROTO_TCP);
      const out = egress(original).packet;
      // Swap the frame around as the reply: the same transform backwards must restore the addresses.
      const p = parse(out);
      const reply = toSlotFrame(tcp(REMOTE, p.src, 443, 40000, Buffer.from("round trip")), IPPROTO_TCP, REMOTE, p.src);
      const back = parse(ingress(reply).packet);
      assert.equal(back.dst, GUEST_IP);
      assert.deepEqual(back.l4, parse(toSlotFrame(tcp(REMOTE, GUEST_IP, 443, 40000, Buffer.from("round trip")), IPPROTO_TCP, REMOTE, GUEST_IP)).l4);
    });

    it("rewrites the quoted outside source of an ICMP error to the guest", () => {
      // A router reports that the guest's (NATed) UDP could not be delivered.
      const quoted = ipv4({ src: OUTSIDE, dst: REMOTE, proto: IPPROTO_UDP, payload: udp(OUTSIDE, REMOTE, 6000, 5000, Buffer.from("data")) });
      const r = ingress(toSlotFrame(icmp(3, 1, Buffer.alloc(4), quoted), IPPROTO_ICMP, "203.0.113.1"));
      assert.equal(r.retval, TC_ACT_OK);
      const p = assertFrameValid(r.packet);
      assert.equal(p.dst, GUEST_IP);
      const inner = parse(Buffer.concat([Buffer.alloc(14), p.l4.subarray(8)]));
      assert.equal(inner.src, GUEST_IP);
      assert.equal(inner.dst, REMOTE);
      assertIpCsum(inner.ip.subarray(0, inner.ihl), "inner");
    });

    it("does not rewrite another slot's outside address; drops unknown destination MACs", () => {
      const toOther = toSlotFrame(tcp(REMOTE, OTHER_OUTSIDE, 1, 2, Buffer.alloc(0)), IPPROTO_TCP, REMOTE, OTHER_OUTSIDE, SLOT_MAC);
      assert.deepEqual(ingress(toOther).packet, toOther);
      const unknown = toSlotFrame(tcp(REMOTE, OUTSIDE, 1, 2, Buffer.alloc(0)), IPPROTO_TCP, REMOTE, OUTSIDE, UNKNOWN_MAC);
      const r = ingress(unknown);
      assert.equal(r.retval, TC_ACT_SHOT);
      assert.equal(r.cb[0], DropReason.unattributed);
    });

    describe("VXLAN to the slot's address", () => {
      const inner = Buffer.concat([ether(GUEST_MAC, "02:00:00:00:00:02"), Buffer.alloc(46, 9)]);
      const vxFrame = (vni: number, withCsum = false, mac = SLOT_MAC) =>
        Buffer.concat([
          ether(mac, "02:aa:00:00:00:01"),
          ipv4({ src: VTEP, dst: SLOT_ADDR, proto: IPPROTO_UDP, payload: udp(VTEP, SLOT_ADDR, 51000, DEFAULT_VXLAN_PORT, vxlan(vni, inner), withCsum) }),
        ]);

      it("rewrites the lease's VNI to the dummy VNI, with and without a UDP checksum", () => {
        dp.setSlotVni(SLOT_MAC, TENANT_VNI);
        try {
          for (const withCsum of [false, true]) {
            const r = ingress(vxFrame(TENANT_VNI, withCsum));
            assert.equal(r.retval, TC_ACT_OK);
            const p = assertFrameValid(r.packet);
            assert.equal(p.l4.readUInt32BE(12) >>> 8, 0);
            assert.equal(p.l4[8], 0x08);
            assert.equal(p.dst, SLOT_ADDR);
            assert.deepEqual(p.l4.subarray(16), inner);
          }
        } finally {
          dp.setSlotVni(SLOT_MAC, 0);
        }
      });

      it("drops other VNIs, the dummy VNI itself, and everything without a tenant network", () => {
        dp.setSlotVni(SLOT_MAC, TENANT_VNI);
        try {
          for (const vni of [TENANT_VNI + 1, 0]) {
            const r = ingress(vxFrame(vni, true));
            assert.equal(r.retval, TC_ACT_SHOT, `VNI ${vni}`);
            assert.equal(r.cb[0], DropReason.vniMismatch);
          }
        } finally {
          dp.setSlotVni(SLOT_MAC, 0);
        }
        const r = ingress(vxFrame(TENANT_VNI));
        assert.equal(r.retval, TC_ACT_SHOT);
        assert.equal(r.cb[0], DropReason.noTenantNetwork);
        // OTHER_MAC's slot never had a tenant network.
        const o = ingress(vxFrame(0, false, OTHER_MAC));
        assert.equal(o.retval, TC_ACT_SHOT);
        assert.equal(o.cb[0], DropReason.noTenantNetwork);
      });
    });
  });

  describe("IPv6 (slots6: a lease with the ipv6 profile)", () => {
    const OUTSIDE6 = "fd00:77::8";
    const REMOTE6 = "2001:db8::20";
    const nat6 = { outsideAddress6: OUTSIDE6, guestAddress6: GUEST_IP6, outsideAddress: OUTSIDE };
    const out6 = (src: string, dst: string, proto: number, payload: Buffer, csumAt?: number, ext?: { nextHeader: number; bytes: Buffer }) =>
      Buffer.concat([ether(TAP_MAC, SLOT_MAC, 0x86dd), ipv6({ src, dst, proto, payload, ...(csumAt !== undefined ? { csumAt } : {}), ...(ext ? { ext } : {}) })]);
    const in6 = (src: string, dst: string, proto: number, payload: Buffer, csumAt?: number) =>
      Buffer.concat([ether(SLOT_MAC, "02:aa:00:00:00:01", 0x86dd), ipv6({ src, dst, proto, payload, ...(csumAt !== undefined ? { csumAt } : {}) })]);
    const tcp6 = (data: string) => {
      const t = Buffer.alloc(20 + data.length);
      t.writeUInt16BE(40000, 0);
      t.writeUInt16BE(443, 2);
      t[12] = 0x50;
      Buffer.from(data).copy(t, 20);
      return t;
    };
    const udp6 = (data: string) => {
      const u = Buffer.alloc(8 + data.length);
      u.writeUInt16BE(5353, 0);
      u.writeUInt16BE(53, 2);
      u.writeUInt16BE(u.length, 4);
      Buffer.from(data).copy(u, 8);
      return u;
    };
    const echo6 = Buffer.concat([Buffer.from([128, 0, 0, 0, 0, 1, 0, 1]), Buffer.from("ping6")]);
    /** A neighbour solicitation for `target`: ICMPv6 135, reserved, target address. */
    const ns = (target: string) => {
      const m = Buffer.alloc(24);
      m[0] = 135;
      ip6ToBytes(target).copy(m, 8);
      return m;
    };

    before(() => dp.setSlot6(RUN_IFINDEX, nat6));
    after(() => dp.setSlot6(RUN_IFINDEX, undefined));

    it("out: the guest's address becomes the outside address, TCP, UDP and ICMPv6 checksums stay valid", () => {
      for (const [proto, payload, csumAt] of [
        [IPPROTO_TCP, tcp6("hello, world!"), 16],
        [IPPROTO_UDP, udp6("query"), 6],
        [IPPROTO_ICMPV6, echo6, 2],
      ] as const) {
        const r = egress(out6(GUEST_IP6, REMOTE6, proto, payload, csumAt));
        assert.equal(r.retval, TC_ACT_OK, `proto ${proto}: drop reason ${r.cb[0]}`);
        const p = parse6(r.packet);
        assert.equal(p.src, OUTSIDE6);
        assert.equal(p.dst, REMOTE6);
        assertL4Csum6(p);
      }
    });

    it("in: the outside address becomes the guest's, checksums stay valid", () => {
      for (const [proto, payload, csumAt] of [
        [IPPROTO_TCP, tcp6("reply"), 16],
        [IPPROTO_UDP, udp6("answer"), 6],
        [IPPROTO_ICMPV6, echo6, 2],
      ] as const) {
        const r = ingress(in6(REMOTE6, OUTSIDE6, proto, payload, csumAt));
        assert.equal(r.retval, TC_ACT_OK, `proto ${proto}: drop reason ${r.cb[0]}`);
        const p = parse6(r.packet);
        assert.equal(p.src, REMOTE6);
        assert.equal(p.dst, GUEST_IP6);
        assertL4Csum6(p);
      }
    });

    it("drops a foreign source out, a foreign destination in, and extension headers", () => {
      const spoofed = egress(out6("fd00:a9fe::99", REMOTE6, IPPROTO_TCP, tcp6("x"), 16));
      assert.equal(spoofed.retval, TC_ACT_SHOT);
      assert.equal(spoofed.cb[0], DropReason.ipv6Refused);
      const otherSlot = ingress(in6(REMOTE6, "fd00:77::9", IPPROTO_TCP, tcp6("x"), 16));
      assert.equal(otherSlot.retval, TC_ACT_SHOT);
      assert.equal(otherSlot.cb[0], DropReason.ipv6Refused);
      // Hop-by-hop options (next header 0) ahead of TCP: the checksum is out of reach.
      const hbh = Buffer.from([IPPROTO_TCP, 0, 1, 4, 0, 0, 0, 0]);
      const ext = egress(out6(GUEST_IP6, REMOTE6, IPPROTO_TCP, tcp6("x"), 16, { nextHeader: 0, bytes: hbh }));
      assert.equal(ext.retval, TC_ACT_SHOT);
      assert.equal(ext.cb[0], DropReason.ipv6Refused);
    });

    it("passes neighbour discovery between the veth ends untouched, and nothing else link-local", () => {
      const sol = ns(SLOT_LINK_IP6);
      const fromHost = in6(HOST_LINK_IP6, "ff02::1:ff00:2", IPPROTO_ICMPV6, sol, 2);
      const r = ingress(fromHost);
      assert.equal(r.retval, TC_ACT_OK);
      assert.deepEqual(r.packet, fromHost);
      const fromSlot = out6(SLOT_LINK_IP6, HOST_LINK_IP6, IPPROTO_ICMPV6, Buffer.concat([Buffer.from([136]), sol.subarray(1)]), 2);
      assert.deepEqual(egress(fromSlot).packet, fromSlot);
      const ping = egress(out6(SLOT_LINK_IP6, HOST_LINK_IP6, IPPROTO_ICMPV6, echo6, 2));
      assert.equal(ping.retval, TC_ACT_SHOT);
    });

    it("a slot whose lease has no IPv6 passes none", () => {
      dp.setSlot6(RUN_IFINDEX, undefined);
      try {
        for (const r of [egress(out6(GUEST_IP6, REMOTE6, IPPROTO_TCP, tcp6("x"), 16)), ingress(in6(REMOTE6, OUTSIDE6, IPPROTO_TCP, tcp6("x"), 16))]) {
          assert.equal(r.retval, TC_ACT_SHOT);
          assert.equal(r.cb[0], DropReason.ipv6Off);
        }
      } finally {
        dp.setSlot6(RUN_IFINDEX, nat6);
      }
      assert.deepEqual(dp.getSlot6(RUN_IFINDEX), nat6);
    });
  });
});
