// IPv6 for guests: addressing from --link-cidr6, its validation, the map encoding and the
// rules the firewalls gain (pure code; the kernel side is test/integration/ipv6.test.ts).
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { bigIntToIp6, ip6ToBigInt } from "../../src/core/addr.js";
import { formatCidr6, guestNetworkConfig6, maxSlots6, outsideAddress6, parseCidr6 } from "../../src/dataplane/topology.js";
import { ConfigError, DEFAULTS, validateConfig, type DaemonConfig } from "../../src/daemon/config.js";
import { decodeSlot6Value, encodeSlot6Value, SLOT6_VALUE_SIZE } from "../../src/kernel/bpfmaps.js";
import { rootRuleset, slotRuleset } from "../../src/dataplane/ruleset.js";
import { ProfileCatalog } from "../../src/core/profiles.js";

function config(extra: Partial<DaemonConfig>): DaemonConfig {
  return { ...DEFAULTS, ...extra };
}

describe("IPv6 addressing", () => {
  it("reads and prints IPv6 addresses in RFC 5952 form", () => {
    for (const [text, canon] of [
      ["2001:db8::1", "2001:db8::1"],
      ["2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
      ["::", "::"],
      ["1:0:0:1:0:0:0:1", "1:0:0:1::1"],
      ["::ffff:1.2.3.4", "::ffff:102:304"],
    ]) {
      assert.equal(bigIntToIp6(ip6ToBigInt(text!)), canon, text);
    }
    assert.throws(() => ip6ToBigInt("1::2::3"));
    assert.throws(() => ip6ToBigInt("10.0.0.1"));
  });

  it("gives slot n the outside address base + 1 + n, never the network's own", () => {
    const cidr = parseCidr6("fd00:1::/112");
    assert.equal(formatCidr6(cidr), "fd00:1::/112");
    assert.equal(outsideAddress6(cidr, 0), "fd00:1::1");
    assert.equal(outsideAddress6(cidr, 255), "fd00:1::100");
    assert.equal(maxSlots6(cidr), 65535);
    assert.throws(() => outsideAddress6(cidr, 65535), /does not fit/);
    assert.throws(() => parseCidr6("fd00:1::1/112"), /host bits/);
    assert.throws(() => parseCidr6("10.0.0.0/8"), /not an IPv6/);
  });

  it("validates --link-cidr6 against the pool, and IPv6 profiles need it", () => {
    validateConfig(config({ linkCidr6: "fd00:1::/112", poolSize: 256 }));
    assert.throws(() => validateConfig(config({ linkCidr6: "fd00:1::/120", poolSize: 256 })), (e: Error) => e instanceof ConfigError && /--pool-size 256 does not fit in --link-cidr6 fd00:1::\/120 \(at most 255 slots/.test(e.message));
    assert.throws(() => validateConfig(config({ linkCidr6: "fd00:1::1/64" })), /--link-cidr6: host bits set/);
    assert.throws(() => validateConfig(config({ profiles: { dual: { ipv6: true } } })), /profiles\.dual\.ipv6 needs --link-cidr6/);
    validateConfig(config({ profiles: { dual: { ipv6: true } }, linkCidr6: "fd00:1::/64" }));
    const catalog = new ProfileCatalog({ dual: { ipv6: true }, plain: {} });
    assert.equal(catalog.ipv6("dual"), true);
    assert.equal(catalog.ipv6("plain"), false);
    assert.equal(catalog.ipv6(undefined), false);
  });

  it("encodes the slots6 value as bpf/lib/nat6.h lays it out", () => {
    const v = { outsideAddress6: "fd00:1::7", guestAddress6: "fd00:a9fe::21", outsideAddress: "10.200.128.6" };
    const buf = encodeSlot6Value(v);
    assert.equal(buf.length, SLOT6_VALUE_SIZE);
    assert.equal(buf.subarray(0, 16).toString("hex"), "fd000001000000000000000000000007");
    assert.equal(buf.readUInt32BE(32), 0x0ac88006);
    assert.deepEqual(decodeSlot6Value(buf), v);
  });

  it("the guest's cloud-init network config has both families", () => {
    const text = guestNetworkConfig6();
    assert.match(text, /- 169\.254\.0\.21\/30/);
    assert.match(text, /- "fd00:a9fe::21\/64"/);
    assert.match(text, /to: "::\/0", via: "fe80::1", on-link: true/);
  });
});

describe("IPv6 rules", () => {
  it("without --link-cidr6 the slot drops IPv6 on tap0 and the root table has no ip6 rule", () => {
    assert.match(slotRuleset({ linkCidr: "10.200.0.0/16" }), /ether type ip6 drop/);
    assert.doesNotMatch(rootRuleset({ prefix: "p", linkCidr: "10.200.0.0/16", uplink: "eth0", vxlanPort: 4789 }), /ip6|icmpv6/);
  });

  it("with it the guest's IPv6 is anti-spoofed and kept from other slots and the metadata address", () => {
    const s = slotRuleset({ linkCidr: "10.200.0.0/16", linkCidr6: "fd00:1::/112" });
    assert.doesNotMatch(s, /ether type ip6 drop/);
    assert.match(s, /ip6 saddr != \{ fd00:a9fe::21, fe80::\/10, :: \} drop/);
    assert.match(s, /icmpv6 type \{ nd-router-advert, nd-redirect, 138 \} drop/);
    assert.match(s, /udp sport 547 drop/);
    assert.match(s, /iifname "tap0" ip6 daddr fd00:1::\/112 drop/);
    const r = rootRuleset({ prefix: "p", linkCidr: "10.200.0.0/16", uplink: "eth0", vxlanPort: 4789, linkCidr6: "fd00:1::/112" });
    assert.match(r, /oifname "eth0" ip6 saddr fd00:1::\/112 masquerade/);
  });
});
