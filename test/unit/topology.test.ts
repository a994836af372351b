import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  cidrsOverlap,
  guestMtu,
  intToIp,
  ipToInt,
  kernelIpArg,
  linkRange,
  maxSlots,
  outsideRange,
  parseCidr,
  parseSlotName,
  slotAddressing,
  slotMacFor,
} from "../../src/dataplane/topology.js";
import { ConfigError, parseDaemonArgs } from "../../src/daemon/config.js";

describe("addressing", () => {
  const cidr = parseCidr("10.200.0.0/16");

  it("parses and prints IPv4 addresses and CIDRs", () => {
    assert.equal(ipToInt("10.200.1.2"), 0x0ac80102);
    assert.equal(intToIp(0x0ac80102), "10.200.1.2");
    assert.throws(() => ipToInt("10.200.1"), /not an IPv4/);
    assert.throws(() => ipToInt("10.200.1.256"), /not an IPv4/);
    assert.throws(() => parseCidr("10.200.0.1/16"), /host bits/);
    assert.throws(() => parseCidr("10.200.0.0/33"), /over 32/);
    assert.deepEqual(parseCidr("10.200.0.0/16"), { base: 0x0ac80000, prefixLength: 16, size: 65536 });
  });

  it("gives each slot a /31 in the lower half and an outside address in the upper half", () => {
    const a0 = slotAddressing("nsl", cidr, 0);
    assert.deepEqual(
      [a0.name, a0.netnsPath, a0.hostVeth, a0.hostAddress, a0.slotAddress, a0.linkNetwork, a0.outsideAddress],
      ["nsl-0", "/run/netns/nsl-0", "nsl-0", "10.200.0.0", "10.200.0.1", "10.200.0.0/31", "10.200.128.0"],
    );
    const a = slotAddressing("nsl", cidr, 3999);
    assert.equal(a.hostAddress, "10.200.31.62");
    assert.equal(a.slotAddress, "10.200.31.63");
    assert.equal(a.outsideAddress, "10.200.143.159");
    assert.equal(outsideRange(cidr), "10.200.128.0/17");
    assert.equal(linkRange(cidr), "10.200.0.0/17");
  });

  it("never hands two slots the same address or MAC", () => {
    const seen = new Set<string>();
    for (let i = 0; i < maxSlots(cidr); i++) {
      const a = slotAddressing("nsl", cidr, i);
      for (const v of [a.hostAddress, a.slotAddress, a.outsideAddress, a.slotMac]) {
        assert.ok(!seen.has(v), `${v} used twice (slot ${i})`);
        seen.add(v);
      }
    }
    assert.equal(seen.size, 4 * 16384);
  });

  it("refuses slot indices the CIDR cannot hold", () => {
    assert.equal(maxSlots(cidr), 16384);
    assert.throws(() => slotAddressing("nsl", cidr, 16384), /does not fit/);
    assert.throws(() => slotAddressing("nsl", cidr, -1), /does not fit/);
  });

  it("reads slot names back, and only its own prefix's", () => {
    assert.equal(parseSlotName("nsl", "nsl-42"), 42);
    assert.equal(parseSlotName("nsl", "nsl-042"), undefined);
    assert.equal(parseSlotName("nsl", "nsl2-4"), undefined);
    assert.equal(parseSlotName("nsl", "nsl-up"), undefined);
  });

  it("derives MACs, MTUs and the kernel ip= argument", () => {
    assert.equal(slotMacFor(0x012345), "02:6e:00:01:23:45");
    assert.equal(guestMtu(1400, false), 1400);
    assert.equal(guestMtu(1400, true), 1350);
    assert.equal(guestMtu(1500, false, 1400), 1400, "--guest-mtu below the uplink's");
    assert.equal(guestMtu(1500, true, 1400), 1400);
    assert.equal(guestMtu(1500, true, 1480), 1450, "a tunnel still needs its overhead");
    assert.equal(kernelIpArg(), "ip=169.254.0.21::169.254.0.22:255.255.255.252::eth0:off");
    assert.ok(cidrsOverlap(parseCidr("10.0.0.0/8"), cidr));
    assert.ok(!cidrsOverlap(parseCidr("10.201.0.0/16"), cidr));
  });
});

describe("daemon configuration", () => {
  it("has the documented defaults", () => {
    const c = parseDaemonArgs([]);
    assert.equal(c.poolSize, 256);
    assert.equal(c.prefix, "nsl");
    assert.equal(c.stateDir, "/var/lib/netslot");
    assert.equal(c.socket, "/run/netslot/api.sock");
    assert.equal(c.linkCidr, "10.200.0.0/16");
    assert.equal(c.uplink, undefined);
  });

  it("takes --flag value and --flag=value", () => {
    const c = parseDaemonArgs(["--pool-size", "16", "--prefix=abc", "--vtep-remote", "192.0.2.9", "--no-progress"]);
    assert.equal(c.poolSize, 16);
    assert.equal(c.prefix, "abc");
    assert.equal(c.vtepRemote, "192.0.2.9");
    assert.equal(c.progress, false);
  });

  it("rejects bad values with a clear message", () => {
    assert.throws(() => parseDaemonArgs(["--pool-size", "0"]), ConfigError);
    assert.throws(() => parseDaemonArgs(["--pool-size", "20000"]), /does not fit/);
    assert.throws(() => parseDaemonArgs(["--prefix", "Bad-Prefix"]), /prefix/);
    assert.throws(() => parseDaemonArgs(["--link-cidr", "10.0.0.1/16"]), /host bits/);
    assert.throws(() => parseDaemonArgs(["--vtep-remote", "nope"]), /IPv4/);
    assert.throws(() => parseDaemonArgs(["--bogus", "1"]), /unknown flag/);
    assert.throws(() => parseDaemonArgs(["--prefix", "abcdefgh", "--link-cidr", "10.0.0.0/8", "--pool-size", "100000"]), /at most 65536/);
  });
});
