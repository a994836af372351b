// The rendered nftables scripts as data: structure, statelessness of the slot ruleset,
// the root table's wildcard and its rule count independent of the pool size.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  admittedElements,
  clearEgressPolicyScript,
  deleteRootScript,
  foreignTables,
  resetScript,
  rootRuleCount,
  rootRuleset,
  slotRuleset,
  slotTables,
} from "../../src/dataplane/ruleset.js";
import { GUEST_IP, GUEST_MAC, METADATA_IP } from "../../src/dataplane/topology.js";

const LINK = "10.200.0.0/16";

/** Rule lines of one chain in a rendered script: the lines after the hook line up to `}`. */
function chainRules(script: string, table: string, chain: string): string[] {
  const start = script.indexOf(`table ${table} {`);
  assert.ok(start >= 0, `table ${table} rendered`);
  const body = script.slice(start);
  const chainStart = body.indexOf(`chain ${chain} {`);
  assert.ok(chainStart >= 0, `chain ${chain} in ${table}`);
  const lines = body.slice(chainStart).split("\n").slice(1);
  const rules: string[] = [];
  for (const line of lines) {
    const t = line.trim();
    if (t === "}") break;
    if (t.startsWith("type ")) continue;
    rules.push(t);
  }
  return rules;
}

function balanced(script: string): void {
  let depth = 0;
  for (const ch of script) {
    if (ch === "{") depth++;
    if (ch === "}") depth--;
    assert.ok(depth >= 0, "no unmatched }");
  }
  assert.equal(depth, 0, "braces balanced");
}

describe("slotRuleset", () => {
  const script = slotRuleset({ linkCidr: LINK });

  it("resets both tables in the same transaction before defining them", () => {
    const lines = script.split("\n");
    assert.deepEqual(lines.slice(0, 4), [
      "add table netdev netslot",
      "delete table netdev netslot",
      "add table inet netslot",
      "delete table inet netslot",
    ]);
    assert.match(script, /^table netdev netslot \{$/m);
    assert.match(script, /^table inet netslot \{$/m);
    balanced(script);
  });

  it("fresh form creates instead of resetting", () => {
    const fresh = slotRuleset({ linkCidr: LINK, fresh: true });
    assert.ok(fresh.startsWith("create table netdev netslot\ncreate table inet netslot\n"));
    assert.doesNotMatch(fresh, /delete table/);
    // Same definitions after the header.
    assert.equal(fresh.slice(fresh.indexOf("table netdev netslot {")), script.slice(script.indexOf("table netdev netslot {")));
  });

  it("is stateless: no ct expression, no NAT", () => {
    assert.doesNotMatch(script, /\bct\b/);
    assert.doesNotMatch(script, /\b(masquerade|snat|dnat|nat)\b/);
  });

  it("anti-spoofs on tap0 at netdev ingress", () => {
    assert.match(script, /type filter hook ingress device "tap0" priority -?\d+; policy accept;/);
    const rules = chainRules(script, "netdev netslot", "ingress");
    assert.ok(rules[0]!.startsWith(`ether saddr != ${GUEST_MAC} drop`), "MAC check first");
    assert.ok(rules.some((r) => r.startsWith("ether type != { ip, arp } drop")));
    assert.ok(rules.some((r) => r.startsWith(`ether type arp arp saddr ip != ${GUEST_IP} drop`)));
    assert.ok(rules.some((r) => r.startsWith(`ether type arp arp saddr ether != ${GUEST_MAC} drop`)));
    assert.ok(rules.some((r) => r.startsWith(`ether type ip ip saddr != ${GUEST_IP} drop`)));
    assert.ok(rules.some((r) => r.startsWith("ether type ip6 drop")));
    assert.ok(rules.every((r) => r.endsWith("drop") || /drop comment "netslot: [^"]+"$/.test(r)));
  });

  it("forwards only tap0 <-> eth0/vx0 and denies metadata and the link CIDR", () => {
    assert.match(script, /chain forward \{\n\s+type filter hook forward priority 0; policy drop;/);
    const rules = chainRules(script, "inet netslot", "forward");
    assert.deepEqual(
      rules.map((r) => r.replace(/ comment "[^"]*"$/, "")),
      [
        `iifname "tap0" ip daddr ${METADATA_IP} drop`,
        `iifname "tap0" ip daddr ${LINK} drop`,
        `iifname "tap0" ip daddr @egress_admit meta mark set 0x6e730001`,
        `iifname "tap0" ip6 daddr @egress_admit6 meta mark set 0x6e730001`,
        `iifname "tap0" oifname { "eth0", "vx0" } accept`,
        `iifname { "eth0", "vx0" } oifname "tap0" accept`,
      ],
    );
    assert.deepEqual(chainRules(script, "inet netslot", "input").map((r) => r.replace(/ comment "[^"]*"$/, "")), [
      `iifname "tap0" drop`,
    ]);
    assert.match(script, /chain output \{\n\s+type filter hook output priority 0; policy accept;\n\s+\}/);
  });

  it("every rule carries a netslot comment", () => {
    for (const [table, chain] of [
      ["netdev netslot", "ingress"],
      ["inet netslot", "forward"],
      ["inet netslot", "input"],
    ] as const) {
      for (const rule of chainRules(script, table, chain)) assert.match(rule, / comment "netslot: [^"]+"$/);
    }
  });

  it("canonicalises and validates the link CIDR", () => {
    assert.throws(() => slotRuleset({ linkCidr: "10.200.0.1/16" }), /host bits/);
    assert.throws(() => slotRuleset({ linkCidr: "10.200.0.0/16; flush ruleset" }), /CIDR/);
  });
});

describe("resetScript", () => {
  it("deletes the extra tables, skips netslot's own, then reapplies the idempotent ruleset", () => {
    const script = resetScript({ linkCidr: LINK, fresh: true }, [
      { family: "ip", name: "tenant" },
      { family: "bridge", name: "odd name", handle: 17 },
      ...slotTables(),
    ]);
    assert.ok(script.startsWith("delete table ip tenant\ndelete table bridge handle 17\nadd table netdev netslot\n"));
    assert.ok(script.endsWith(slotRuleset({ linkCidr: LINK })));
  });

  it("refuses names it cannot render safely and unknown families", () => {
    assert.throws(() => resetScript({ linkCidr: LINK }, [{ family: "ip", name: 'x"; flush ruleset' }]), /handle/);
    assert.throws(
      () => resetScript({ linkCidr: LINK }, [{ family: "ipx" as "ip", name: "x" }]),
      /unknown nftables family/,
    );
  });

  it("foreignTables picks tables from nft -j output except netslot's own", () => {
    const json = {
      nftables: [
        { metainfo: { version: "1.0.6", json_schema_version: 1 } },
        { table: { family: "netdev", name: "netslot", handle: 1 } },
        { table: { family: "inet", name: "netslot", handle: 2 } },
        { table: { family: "ip", name: "netslot", handle: 3 } },
        { table: { family: "inet", name: "tenant", handle: 4 } },
        { chain: { family: "inet", table: "tenant", name: "c", handle: 1 } },
      ],
    };
    assert.deepEqual(foreignTables(json), [
      { family: "ip", name: "netslot", handle: 3 },
      { family: "inet", name: "tenant", handle: 4 },
    ]);
    assert.throws(() => foreignTables({}), /nft JSON/);
  });
});

describe("rootRuleset", () => {
  const base = { prefix: "nsl", linkCidr: LINK, uplink: "eth0", vxlanPort: 4789 };

  it("owns one table, reset in the same transaction", () => {
    const script = rootRuleset(base);
    assert.ok(script.startsWith("add table inet nsl\ndelete table inet nsl\ntable inet nsl {\n"));
    assert.equal(script.match(/^table /gm)?.length, 1);
    balanced(script);
    assert.equal(deleteRootScript("nsl"), "add table inet nsl\ndelete table inet nsl\n");
  });

  it("masquerades the outside range out of the uplink", () => {
    const rules = chainRules(rootRuleset(base), "inet nsl", "postrouting");
    assert.deepEqual(rules.map((r) => r.replace(/ comment "[^"]*"$/, "")), [
      `oifname "eth0" ip saddr 10.200.128.0/17 masquerade`,
    ]);
    assert.match(rootRuleset(base), /type nat hook postrouting priority srcnat; policy accept;/);
  });

  it("matches slot interfaces by wildcard, forward and input policies stay accept", () => {
    const script = rootRuleset({ ...base, vtepRemote: "192.0.2.7" });
    assert.match(script, /type filter hook forward priority filter; policy accept;/);
    assert.match(script, /type filter hook input priority filter; policy accept;/);
    assert.deepEqual(chainRules(script, "inet nsl", "forward").map((r) => r.replace(/ comment "[^"]*"$/, "")), [
      `iifname "nsl-*" oifname "nsl-*" drop`,
      `iifname "nsl-*" ip saddr 10.200.128.0/17 ip daddr 192.0.2.7 drop`,
      `oifname "nsl-*" ct state established,related accept`,
      `oifname "nsl-*" ip saddr 192.0.2.7 ip daddr 10.200.0.0/17 udp dport 4789 accept`,
      `oifname "nsl-*" drop`,
      `iifname "nsl-*" ip daddr ${METADATA_IP} drop`,
    ]);
    assert.deepEqual(chainRules(script, "inet nsl", "input").map((r) => r.replace(/ comment "[^"]*"$/, "")), [
      `iifname "nsl-*" ct state established,related accept`,
      `iifname "nsl-*" drop`,
    ]);
    for (const chain of ["postrouting", "forward", "input"]) {
      for (const r of chainRules(script, "inet nsl", chain)) assert.match(r, / comment "netslot nsl: [^"]+"$/);
    }
  });

  it("leaves the VXLAN rule out without a VTEP", () => {
    assert.doesNotMatch(rootRuleset(base), /udp dport/);
  });

  it("does not depend on the pool size (no per-slot names or addresses)", () => {
    const small = rootRuleset({ ...base, linkCidr: "10.200.0.0/24" });
    const large = rootRuleset({ ...base, linkCidr: "10.0.0.0/10" });
    const count = (s: string) =>
      ["postrouting", "forward", "input"].reduce((n, c) => n + chainRules(s, "inet nsl", c).length, 0);
    assert.equal(count(small), 7);
    assert.equal(count(large), 7);
    assert.equal(count(rootRuleset({ ...base, linkCidr: "10.0.0.0/10", vtepRemote: "192.0.2.7" })), 9);
    assert.doesNotMatch(large, /nsl-\d/);
  });

  it("validates its inputs", () => {
    assert.throws(() => rootRuleset({ ...base, prefix: "Bad-" }), /prefix/);
    assert.throws(() => rootRuleset({ ...base, uplink: 'eth0" accept' }), /interface name/);
    assert.throws(() => rootRuleset({ ...base, uplink: "eth*" }), /interface name/);
    assert.throws(() => rootRuleset({ ...base, vtepRemote: "192.0.2" }), /IPv4/);
    assert.throws(() => rootRuleset({ ...base, vxlanPort: 0 }), /port/);
    assert.throws(() => deleteRootScript("x y"), /prefix/);
  });
});

describe("rootRuleCount", () => {
  it("counts rule objects, optionally of one table only", () => {
    const json = {
      nftables: [
        { metainfo: {} },
        { table: { family: "inet", name: "nsl", handle: 1 } },
        { chain: { family: "inet", table: "nsl", name: "forward" } },
        { rule: { family: "inet", table: "nsl", chain: "forward", expr: [] } },
        { rule: { family: "inet", table: "nsl", chain: "input", expr: [] } },
        { rule: { family: "inet", table: "other", chain: "input", expr: [] } },
        { rule: { family: "ip", table: "nsl", chain: "input", expr: [] } },
      ],
    };
    assert.equal(rootRuleCount(json), 4);
    assert.equal(rootRuleCount(json, "nsl"), 2);
    assert.throws(() => rootRuleCount(null), /nft JSON/);
  });
});

describe("DNS admissions", () => {
  it("the clear script flushes the admission sets", () => {
    assert.equal(clearEgressPolicyScript(), "flush set inet netslot egress_admit\nflush set inet netslot egress_admit6\n");
  });

  it("admissions are host intervals with the kernel timeout on the start element, per family", () => {
    const sets = admittedElements([
      { key: Buffer.from([192, 0, 2, 7]), timeoutMs: 11_000 },
      { key: Buffer.from("20010db80000000000000000000000ff", "hex"), timeoutMs: 40_000 },
      { key: Buffer.from([255, 255, 255, 255]), timeoutMs: 10_000 },
    ]);
    assert.deepEqual(
      sets.map((s) => ({ set: s.set, elements: s.elements.map((e) => `${e.key.toString("hex")}${e.intervalEnd ? " end" : ""}${e.timeoutMs ? ` ${e.timeoutMs}` : ""}`) })),
      [
        { set: "egress_admit", elements: ["c0000207 11000", "c0000208 end", "ffffffff 10000"] },
        { set: "egress_admit6", elements: ["20010db80000000000000000000000ff 40000", "20010db8000000000000000000000100 end"] },
      ],
    );
  });
});
