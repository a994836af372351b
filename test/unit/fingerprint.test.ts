// Fingerprint canonicalisation and comparison on hand-made data: no kernel, no root.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { canonicalNft, diffFingerprints, fingerprintHash, liveHolders, placeholders, type Fingerprint } from "../../src/dataplane/fingerprint.js";
import { parseCidr, slotAddressing } from "../../src/dataplane/topology.js";

function baseline(): Fingerprint {
  return {
    version: 1,
    links: {
      eth0: { address: "<slot-mac>", flags: "up,broadcast,multicast", kind: "veth", mtu: "1500" },
      lo: { flags: "up,loopback", mtu: "65536" },
      tap0: { address: "02:00:a9:fe:00:16", flags: "up,broadcast,multicast", kind: "tun", mtu: "1500" },
    },
    addresses: ["inet <slot-addr>/31 dev eth0 scope global permanent"],
    routes: ["<link-net> src <slot-addr> dev eth0 table main proto kernel scope link", "default via <host-addr> dev eth0 table main proto boot scope global"],
    rules: ["0: from all proto kernel lookup local", "32766: from all proto kernel lookup main"],
    nexthops: [],
    neighbours: [],
    qdiscs: ["dev eth0 clsact handle ffff:0 parent ffff:fff1"],
    tcFilters: ["dev eth0 ingress prio 1 proto 0x0003 handle 0x1 bpf nat_ingress tag aa direct-action"],
    tcActions: [],
    nftables: ['table {"family":"inet","name":"netslot"}', 'chain {"family":"inet","name":"forward","table":"netslot"}', 'rule {"chain":"forward","expr":[1]}', 'rule {"chain":"forward","expr":[2]}'],
    bpf: ["<slot-mac> outside <outside-addr> vni 0 bound to eth0"],
    bpfAttachments: [],
    conntrack: { count: 0, entries: [] },
    sysctls: { "net.ipv4.ip_forward": "1", "net.ipv6.conf.all.disable_ipv6": "1" },
    xfrm: { states: [], policies: [] },
    sockets: [],
    processes: [],
    tapHolders: [],
  };
}

const clone = (f: Fingerprint): Fingerprint => JSON.parse(JSON.stringify(f)) as Fingerprint;

describe("placeholders", () => {
  const cidr = parseCidr("10.200.0.0/16");
  const s0 = placeholders(slotAddressing("nsl", cidr, 0));
  const s7 = placeholders(slotAddressing("nsl", cidr, 7));

  it("makes slot 0 and slot 7 texts equal", () => {
    const texts = (i: number) => {
      const a = slotAddressing("nsl", cidr, i);
      return [
        `inet ${a.slotAddress}/31 dev eth0`,
        `${a.linkNetwork} src ${a.slotAddress} dev eth0`,
        `default via ${a.hostAddress} dev eth0`,
        `local ${a.slotAddress}/32 src ${a.slotAddress}`,
        `${a.slotMac.toUpperCase()} outside ${a.outsideAddress} vni 0`,
        `udp ${a.slotAddress}:4789`,
        `ns ${a.name} here`,
      ];
    };
    assert.deepEqual(texts(0).map(s0), texts(7).map(s7));
    assert.deepEqual(texts(7).map(s7), [
      "inet <slot-addr>/31 dev eth0",
      "<link-net> src <slot-addr> dev eth0",
      "default via <host-addr> dev eth0",
      "local <slot-addr>/32 src <slot-addr>",
      "<slot-mac> outside <outside-addr> vni 0",
      "udp <slot-addr>:4789",
      "ns <slot> here",
    ]);
  });

  it("replaces whole tokens only", () => {
    // slot 0: host 10.200.0.0, slot 10.200.0.1, outside 10.200.128.0
    assert.equal(s0("10.200.0.10 10.200.0.1 110.200.0.1 10.200.0.1.5"), "10.200.0.10 <slot-addr> 110.200.0.1 10.200.0.1.5");
    assert.equal(s0("nsl-0 nsl-01 nsl-0a xnsl-0 nsl-0"), "<slot> nsl-01 nsl-0a xnsl-0 <slot>");
    assert.equal(s0("02:6e:00:00:00:00 02:6e:00:00:00:001"), "<slot-mac> 02:6e:00:00:00:001");
  });

  it("leaves networks that merely start at a slot address alone", () => {
    // Slot 0's host address is the link CIDR's base; the firewall's 10.200.0.0/16 is a network.
    assert.equal(s0('"10.200.0.0/16"'), '"10.200.0.0/16"');
    assert.equal(s0("10.200.0.0/31"), "<link-net>");
    assert.equal(s0("10.200.0.0/32"), "<host-addr>/32");
    // Slot 0's outside address is the base of the outside range.
    assert.equal(s0("10.200.128.0/17 10.200.128.0"), "10.200.128.0/17 <outside-addr>");
    assert.equal(s7("10.200.0.15/31"), "<slot-addr>/31");
  });
});

describe("canonicalNft", () => {
  it("drops handles, counter values, quota use, last-used times and expiry; flattens prefixes", () => {
    const rule = {
      family: "inet",
      table: "t",
      chain: "c",
      handle: 12,
      expr: [
        { match: { op: "==", left: { payload: { protocol: "ip", field: "daddr" } }, right: { prefix: { addr: "10.0.0.0", len: 8 } } } },
        { counter: { packets: 10, bytes: 1000 } },
        { quota: { val: 5, val_unit: "mbytes", used: 3, used_unit: "kbytes", inv: false } },
        { last: { used: 1234 } },
        { accept: null },
      ],
    };
    const fresh = { ...rule, handle: 99, expr: rule.expr.map((e) => ("counter" in e ? { counter: { packets: 0, bytes: 0 } } : e)) };
    assert.deepEqual(canonicalNft(rule, "rule"), canonicalNft(fresh, "rule"));
    const out = JSON.stringify(canonicalNft(rule, "rule"));
    assert.match(out, /"prefix":"10\.0\.0\.0\/8"/);
    assert.doesNotMatch(out, /"handle"|"packets"|"bytes"|"used"/);
    assert.match(out, /"val":5/);
    const elem = canonicalNft({ set: { name: "s", handle: 3, elem: [{ elem: { val: "1.2.3.4", expires: 999, timeout: 60 } }] } }, "");
    assert.deepEqual(elem, { set: { elem: [{ elem: { timeout: 60, val: "1.2.3.4" } }], name: "s" } });
  });
});

describe("diffFingerprints", () => {
  it("is empty for equal fingerprints, and the hash is stable", () => {
    assert.deepEqual(diffFingerprints(baseline(), baseline()), []);
    assert.equal(fingerprintHash(baseline()), fingerprintHash(baseline()));
    assert.match(fingerprintHash(baseline()), /^[0-9a-f]{64}$/);
  });

  it("names every kind of difference", () => {
    const b = clone(baseline());
    b.routes.push("10.9.0.0/16 dev eth0 table main proto boot scope link");
    b.routes = b.routes.filter((r) => !r.startsWith("default"));
    b.sysctls["net.ipv4.ip_forward"] = "0";
    b.sysctls["net.ipv4.conf.x0.forwarding"] = "1";
    delete b.sysctls["net.ipv6.conf.all.disable_ipv6"];
    b.processes.push("1234 sleep");
    b.links.eth0!.mtu = "1400";
    b.links.dummy0 = { kind: "dummy", mtu: "1500", flags: "broadcast,noarp" };
    delete b.links.tap0;
    b.conntrack = { count: 1, entries: ["udp 10.0.0.1:1000 → 10.0.0.2:2000"] };
    b.xfrm.policies.push("dir out allow");
    b.tapHolders.push("tap0: held by 77 firecracker");
    b.bpfAttachments.push("tcx ingress eth0: tenant tag 59f4a931744dcdc6 type 3", "tcx ingress eth0: revision 2");
    const d = diffFingerprints(baseline(), b);
    for (const line of [
      "bpf attachments: + tcx ingress eth0: tenant tag 59f4a931744dcdc6 type 3",
      "bpf attachments: + tcx ingress eth0: revision 2",
      "routes: + 10.9.0.0/16 dev eth0 table main proto boot scope link",
      "routes: - default via <host-addr> dev eth0 table main proto boot scope global",
      "sysctl net.ipv4.ip_forward: 1 → 0",
      "sysctl net.ipv4.conf.x0.forwarding: + 1",
      "sysctl net.ipv6.conf.all.disable_ipv6: - 1",
      "processes: + 1234 sleep",
      "links eth0 mtu: 1500 → 1400",
      "links: + dummy0 (kind dummy, mtu 1500, flags broadcast,noarp)",
      "conntrack count: 0 → 1",
      "conntrack: + udp 10.0.0.1:1000 → 10.0.0.2:2000",
      "xfrm policies: + dir out allow",
      "tap holders: + tap0: held by 77 firecracker",
    ]) {
      assert.ok(d.includes(line), `missing "${line}" in:\n${d.join("\n")}`);
    }
    assert.ok(d.some((l) => l.startsWith("links: - tap0 (kind tun")), d.join("\n"));
    assert.notEqual(fingerprintHash(baseline()), fingerprintHash(b));
  });

  it("reports a reordered ruleset although no rule was added or removed", () => {
    const b = clone(baseline());
    b.nftables = [b.nftables[0]!, b.nftables[1]!, b.nftables[3]!, b.nftables[2]!];
    assert.deepEqual(diffFingerprints(baseline(), b), ["nftables: order changed"]);
  });

  it("counts duplicates", () => {
    const a = clone(baseline());
    const b = clone(baseline());
    b.sockets = ["udp 0.0.0.0:53 unconnected", "udp 0.0.0.0:53 unconnected"];
    a.sockets = ["udp 0.0.0.0:53 unconnected"];
    assert.deepEqual(diffFingerprints(a, b), ["sockets: + udp 0.0.0.0:53 unconnected"]);
  });
});

describe("liveHolders", () => {
  it("is undefined for a clean slot and names processes and tap holders", () => {
    assert.equal(liveHolders(baseline()), undefined);
    const b = clone(baseline());
    b.processes = ["42 sleep"];
    assert.match(liveHolders(b)!, /processes in the namespace: 42 sleep/);
    b.processes = [];
    b.tapHolders = ["tap0: held by 7 qemu"];
    assert.match(liveHolders(b)!, /tap held open: tap0: held by 7 qemu/);
  });
});
