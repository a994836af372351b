// Profiles in the config file: validation names the field; the policy they compile to.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { BURST_SECONDS, MAX_PROFILE_CIDRS, ProfileCatalog, bandwidthOf, egressPolicy, normalise, parseProfiles, policyCidrs, profileId, rateLimit } from "../../src/core/profiles.js";
import { MAX_POLICY_CIDRS } from "../../src/kernel/bpfmaps.js";
import { ConfigError, DEFAULTS, checkConfigFile, validateConfig, type DaemonConfig } from "../../src/daemon/config.js";

function config(extra: Partial<DaemonConfig>): DaemonConfig {
  return { ...DEFAULTS, ...extra };
}

/** `profiles` as the daemon reads it: the schema (structure), then parseProfiles (CIDRs, names). */
function loadProfiles(value: unknown) {
  return parseProfiles(checkConfigFile({ profiles: value }).profiles);
}

describe("profiles in the config file", () => {
  it("accepts the issue's egress examples and canonicalises CIDRs", () => {
    const p = parseProfiles({ isolated: { egress: { allow: [] } }, mirror: { egress: { allow: ["203.0.113.0/24", "198.51.100.7"] } } });
    assert.deepEqual(p, { isolated: { egress: { allow: [] } }, mirror: { egress: { allow: ["203.0.113.0/24", "198.51.100.7/32"] } } });
  });

  it("errors name the field", () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ m: { egress: { allow: ["203.0.113.1/24"] } } }, /^ProfileError: profiles\.m\.egress\.allow\[0\]: .*host bits/],
      [{ m: { egress: { allow: "203.0.113.0/24" } } }, /^ConfigError: config file: profiles\.m\.egress\.allow: must be a list$/],
      [{ m: { egress: { deny: [42] } } }, /^ConfigError: config file: profiles\.m\.egress\.deny\[0\]: must be a string$/],
      [{ m: { egress: { alow: [] } } }, /^ConfigError: config file: profiles\.m\.egress\.alow: unknown key; expected one of allow, deny, allowDomains$/],
      [{ m: { speed: 1 } }, /^ConfigError: config file: profiles\.m\.speed: unknown key/],
      [{ "bad name": {} }, /^ConfigError: config file: profiles\.bad name: a name is 1-64 characters of \[A-Za-z0-9_.-\]$/],
      [{ m: [] }, /^ConfigError: config file: profiles\.m: must be an object$/],
      [[], /^ConfigError: config file: profiles: must be an object$/],
    ];
    for (const [value, pattern] of cases) assert.throws(() => loadProfiles(value), pattern);
  });

  it("allowDomains: names and *.suffix, canonical; they make an allow-list", () => {
    const p = parseProfiles({ m: { egress: { allowDomains: ["Deb.Example.org.", "*.pkg.example.org"] } } });
    assert.deepEqual(p["m"]!.egress!.allowDomains, ["deb.example.org", "*.pkg.example.org"]);
    assert.deepEqual(egressPolicy(p["m"]), { allow: [], deny: [] });
    for (const bad of ["", "a..b", "*", "x.*.org", "-a.org", 3]) {
      assert.throws(() => loadProfiles({ m: { egress: { allowDomains: [bad] } } }), /profiles\.m\.egress\.allowDomains\[0\]/);
    }
  });

  it("ipv6 is a boolean; false is the same as absent", () => {
    assert.throws(() => loadProfiles({ m: { ipv6: "yes" } }), /profiles\.m\.ipv6: must be true or false/);
    assert.deepEqual(parseProfiles({ dual: { ipv6: true }, off: { ipv6: false } }), { dual: { ipv6: true }, off: {} });
  });

  it("a consumer's profiles must exist", () => {
    const profiles = { isolated: { egress: { allow: [] } } };
    const consumer = { name: "sandbox", token: "x".repeat(16) };
    validateConfig(config({ profiles, consumers: [{ ...consumer, profiles: ["isolated"] }] }));
    assert.throws(
      () => validateConfig(config({ profiles, consumers: [{ ...consumer, profiles: ["mirror"] }] })),
      (err: unknown) => err instanceof ConfigError && /consumers\[0\]\.profiles\[0\]: no profile "mirror"/.test(err.message),
    );
  });
});

describe("egress policy", () => {
  it("no egress section, or only an empty deny, is no policy", () => {
    assert.equal(egressPolicy(undefined), undefined);
    assert.equal(egressPolicy({}), undefined);
    assert.equal(egressPolicy({ egress: { deny: [] } }), undefined);
  });

  it("allow [] restricts to nothing; allow absent restricts nothing", () => {
    assert.deepEqual(egressPolicy({ egress: { allow: [] } }), { allow: [], deny: [] });
    assert.deepEqual(egressPolicy({ egress: { deny: ["10.0.0.0/8"] } }), { allow: undefined, deny: ["10.0.0.0/8"] });
  });

  it("normalise drops duplicates and covered CIDRs", () => {
    assert.deepEqual(normalise(["10.1.0.0/16", "10.0.0.0/8", "192.0.2.1/32", "10.0.0.0/8", "192.0.2.0/24"]), ["10.0.0.0/8", "192.0.2.0/24"]);
  });
});

describe("bandwidth", () => {
  it("accepts egressMbit/ingressMbit and names a bad one", () => {
    assert.deepEqual(parseProfiles({ m: { bandwidth: { egressMbit: 50, ingressMbit: 200 } } }), { m: { bandwidth: { egressMbit: 50, ingressMbit: 200 } } });
    assert.throws(() => loadProfiles({ m: { bandwidth: { egressMbit: 0 } } }), /profiles\.m\.bandwidth\.egressMbit: must be more than 0$/);
    assert.throws(() => loadProfiles({ m: { bandwidth: { egressMbit: 100_001 } } }), /profiles\.m\.bandwidth\.egressMbit: must be at most 100000$/);
    assert.throws(() => loadProfiles({ m: { bandwidth: { ingressMbit: "fast" } } }), /profiles\.m\.bandwidth\.ingressMbit: must be a number$/);
    assert.throws(() => loadProfiles({ m: { bandwidth: { uplinkMbit: 5 } } }), /profiles\.m\.bandwidth\.uplinkMbit: unknown key/);
  });

  it("compiles to IP bytes per second with a bucket of 250 ms, at least 128 KiB", () => {
    assert.deepEqual(rateLimit(200), { bytesPerSecond: 25_000_000, burstBytes: 25_000_000 * BURST_SECONDS });
    assert.deepEqual(rateLimit(1), { bytesPerSecond: 125_000, burstBytes: 128 * 1024 });
    assert.deepEqual(bandwidthOf({ bandwidth: { ingressMbit: 1 } }), { ingress: rateLimit(1) });
    assert.equal(bandwidthOf({ egress: { allow: [] } }), undefined);
  });
});

describe("profile CIDRs in the shared eBPF trie", () => {
  const entries = (allow: string[] | undefined, deny: string[]) => {
    const p = egressPolicy({ egress: { ...(allow ? { allow } : {}), deny } })!;
    return policyCidrs(7, p).map((c) => `${c.base >>> 24}.${(c.base >>> 16) & 255}.${(c.base >>> 8) & 255}.${c.base & 255}/${c.prefixLength} ${c.deny ? "deny" : "allow"}`);
  };

  it("an allow CIDR inside a deny CIDR becomes a deny (deny wins for the longest match too); a deny inside an allow stays a deny", () => {
    assert.deepEqual(entries(["10.1.2.0/24", "192.0.2.0/24"], ["10.0.0.0/8", "192.0.2.128/25"]).sort(), [
      "10.0.0.0/8 deny",
      "10.1.2.0/24 deny",
      "192.0.2.0/24 allow",
      "192.0.2.128/25 deny",
    ]);
  });

  it("a CIDR in both lists is written once, as a deny; a deny-list alone has only denies", () => {
    assert.deepEqual(entries(["203.0.113.0/24"], ["203.0.113.0/24"]), ["203.0.113.0/24 deny"]);
    assert.deepEqual(entries(undefined, ["10.0.0.0/8"]), ["10.0.0.0/8 deny"]);
  });

  it("profile ids come from the names: stable across daemons, distinct in a catalog, and every entry carries its profile's", () => {
    assert.equal(profileId("mirror"), profileId("mirror"));
    assert.notEqual(profileId("mirror"), profileId("isolated"));
    const catalog = new ProfileCatalog(parseProfiles({ a: { egress: { allow: ["192.0.2.0/24"] } }, b: { egress: { deny: ["10.0.0.0/8"] } }, c: { bandwidth: { egressMbit: 5 } } }));
    assert.equal(catalog.policy("a")?.id, profileId("a"));
    assert.equal(catalog.policy("c"), undefined);
    assert.deepEqual(
      catalog.policyCidrs().map((c) => [c.profile, c.deny]),
      [
        [profileId("a"), false],
        [profileId("b"), true],
      ],
    );
  });
});

describe("the shared trie's bound", () => {
  it("all profiles' CIDRs together fit in the trie, or the config is refused naming profiles", () => {
    const list = Array.from({ length: 1024 }, (_, i) => `10.${i >> 8}.${i & 255}.0/24`);
    const many = Object.fromEntries(Array.from({ length: 129 }, (_, i) => [`p${i}`, { egress: { allow: list, deny: list } }]));
    assert.throws(() => parseProfiles(many), /^ProfileError: profiles: 264192 CIDRs in all profiles together; at most 262144/);
    delete many["p128"];
    assert.equal(Object.keys(parseProfiles(many)).length, 128);
    assert.equal(MAX_PROFILE_CIDRS, MAX_POLICY_CIDRS, "the config's bound is the map's size");
  });
});
