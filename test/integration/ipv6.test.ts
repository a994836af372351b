// IPv6 for guests (profile `"dual": { "ipv6": true }`, daemon --link-cidr6) end to end: a
// guest stand-in on a dual lease reaches an IPv6 listener in the test's upstream namespace
// through the eBPF 1:1 translation and the root table's masquerade; a lease without the
// profile gets no IPv6 through; release removes the translation, so the next lease on the
// same slot (a one-slot pool reuses it) has none, and the slot is back to its golden state.
import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { isRoot, sh, skipUnless, waitFor } from "../support/env.js";
import { run, startGuestStandIn, type GuestStandIn } from "../support/guest.js";
import { SERVER6_PORT as PORT, configureIpv6, ipv6Suite, serveIpv6In } from "../support/ipv6.js";
import { openPinnedDataplane } from "../../src/kernel/bpf.js";
import { fingerprintOf } from "../../src/dataplane/dataplane.js";
import { diffFingerprints } from "../../src/dataplane/fingerprint.js";
import { loadGolden } from "../../src/dataplane/golden.js";
import { startCapture } from "../support/isolation.js";
import { GATEWAY_IP6, GUEST_IP6, HOST_LINK_IP6, SLOT_LINK_IP6, bpfPinDir, outsideAddress6, parseCidr, parseCidr6, slotAddressing } from "../../src/dataplane/topology.js";
import { ip6ToBigInt } from "../../src/core/addr.js";
import type { Lease } from "../../src/core/types.js";

const skip = skipUnless(isRoot(), "needs root");

async function curl6(guest: GuestStandIn, address: string, pathname: string): Promise<{ ok: boolean; body: string }> {
  const r = await guest.exec(["curl", "-sS", "-g", "--max-time", "4", `http://[${address}]:${PORT}${pathname}`], { timeoutMs: 10_000 });
  return { ok: r.code === 0, body: r.stdout + r.stderr };
}

describe("IPv6 for guests (profile ipv6, --link-cidr6)", { skip }, () => {
  const guests: GuestStandIn[] = [];
  const { prefix, linkCidr6, upstream, daemon, serverLog } = ipv6Suite({
    poolSize: 1,
    profiles: { plain: {} },
    teardown: async () => {
      for (const g of guests) await g.stop();
    },
  });

  async function guestOn(lease: Lease): Promise<GuestStandIn> {
    const g = await startGuestStandIn({ slotNetnsPath: lease.slot.netns, name: `${prefix}-g${guests.length}`, mtu: lease.guest.mtu });
    guests.push(g);
    return g;
  }

  it("a dual lease carries the guest's IPv6 and the slot's outside IPv6 address", async () => {
    const lease = await daemon.client.acquire({ profile: "dual", bindToProcess: false, autoRenew: false });
    try {
      const cidr6 = parseCidr6(linkCidr6);
      assert.deepEqual(
        { ip: lease.guest.ipv6?.ip, prefixLength: lease.guest.ipv6?.prefixLength, gateway: lease.guest.ipv6?.gateway },
        { ip: GUEST_IP6, prefixLength: 64, gateway: GATEWAY_IP6 },
      );
      assert.match(lease.guest.ipv6!.networkConfig, /fd00:a9fe::21\/64/);
      assert.equal(lease.slot.outsideAddress6, outsideAddress6(cidr6, lease.slot.index));
      assert.equal(ip6ToBigInt(lease.slot.outsideAddress6), cidr6.base + 1n + BigInt(lease.slot.index), "slot n: base + 1 + n");
      const plain = await daemon.client.acquire({ profile: "plain", bindToProcess: false, autoRenew: false, waitSeconds: 0 }).catch((e: unknown) => e);
      assert.ok(plain instanceof Error, "a one-slot pool");
    } finally {
      await daemon.client.release(lease.id);
    }
  });

  it("a dual guest reaches an IPv6 upstream, masqueraded to the uplink's IPv6 address; release removes the translation", async () => {
    const lease = await daemon.client.acquire({ profile: "dual", bindToProcess: false, autoRenew: false, waitSeconds: 30 });
    const a = slotAddressing(prefix, parseCidr(daemon.linkCidr), lease.slot.index);
    const guest = await guestOn(lease);
    await configureIpv6(guest, lease);
    const got = await curl6(guest, upstream.address6!, "/dual");
    assert.ok(got.ok, `the dual guest did not reach [${upstream.address6}]:${PORT}: ${got.body}`);
    assert.equal(got.body.trim(), `v6 ${upstream.hostAddress6}`, "the upstream sees the uplink's IPv6 address (masquerade)");
    // The translation is the lease's map entry, bound to eth0's ifindex.
    const bpf = openPinnedDataplane(bpfPinDir(prefix))!;
    try {
      assert.deepEqual(bpf.getSlot6(a.slotIfindex), { outsideAddress6: lease.slot.outsideAddress6, guestAddress6: GUEST_IP6, outsideAddress: a.outsideAddress });
    } finally {
      bpf.close();
    }
    await guest.stop();
    await daemon.client.release(lease.id);
    await waitFor(async () => (await daemon.client.health()).pool.free === 1, 20_000);
    const after = openPinnedDataplane(bpfPinDir(prefix))!;
    try {
      assert.equal(after.getSlot6(a.slotIfindex), undefined, "the IPv6 entry outlived the lease");
    } finally {
      after.close();
    }
    const golden = loadGolden(daemon.stateDir);
    assert.ok(golden, "the daemon saved its golden fingerprint");
    // Left out: the host end's reachability probe (a unicast neighbour solicitation, up to 5 s
    // after the last forwarded packet) may re-teach eth0 the host end's link-local address
    // after the scrub, as an ARP probe re-teaches the IPv4 next hop.
    const nextHop = /^neighbours: \+ neigh inet6 fe80::1 lladdr \S+ dev eth0 dynamic$/;
    const diff = diffFingerprints(golden, fingerprintOf(prefix, parseCidr(daemon.linkCidr), lease.slot.index)).filter((d) => !nextHop.test(d));
    assert.deepEqual(diff, [], "the released slot differs from a fresh one");
  });

  it("a lease without the ipv6 profile gets no IPv6 through, on the slot a dual lease used", async () => {
    const lease = await daemon.client.acquire({ profile: "plain", bindToProcess: false, autoRenew: false, waitSeconds: 30 });
    assert.equal(lease.guest.ipv6, undefined);
    assert.equal(lease.slot.outsideAddress6, undefined);
    const guest = await guestOn(lease);
    // The guest configures IPv6 anyway, as a hostile guest would.
    await configureIpv6(guest, lease);
    const before = serverLog();
    const got = await curl6(guest, upstream.address6!, "/plain");
    assert.ok(!got.ok, `a lease without ipv6 reached the IPv6 upstream: ${got.body}`);
    assert.ok(!serverLog().slice(before.length).includes("/plain"), "the upstream logged the request");
    // IPv4 works as ever on the same lease.
    const v4 = await run(["ip", "netns", "exec", guest.netns, "ping", "-c", "1", "-W", "2", upstream.address]);
    assert.equal(v4.code, 0, `IPv4 from the same guest: ${v4.stdout}${v4.stderr}`);
    await guest.stop();
    await daemon.client.release(lease.id);
  });

  it("the root table gains a constant number of IPv6 rules", () => {
    const rules = sh("nft", ["list", "table", "inet", prefix]);
    assert.match(rules, /ip6 saddr [0-9a-f:]+\/112 masquerade/);
    assert.match(rules, /icmpv6 type \{ nd-neighbor-solicit, nd-neighbor-advert \} accept/);
  });
});

/** Sends one ICMPv6 message (type, code, body hex) from the guest with a raw socket; the kernel fills the checksum. */
const SEND_ICMP6 = `
import socket, sys
dst, ifname, kind = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
# Not to the guest itself: its own stack would take the rogue prefix and gateway.
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
idx = socket.if_nametoindex(ifname)
if kind == "ra":
    # Router advertisement: lifetime 1800 s, with a prefix information option 2001:db8:bad::/64.
    msg = bytes([134, 0, 0, 0, 64, 0, 0x07, 0x08]) + bytes(8)
    msg += bytes([3, 4, 64, 0xc0]) + (86400).to_bytes(4, "big") * 2 + bytes(4) + socket.inet_pton(socket.AF_INET6, "2001:db8:bad::")
else:
    # Unsolicited neighbour advertisement (override) for the target given as kind, with the guest's MAC.
    msg = bytes([136, 0, 0, 0, 0x20, 0, 0, 0]) + socket.inet_pton(socket.AF_INET6, kind) + bytes([2, 1, 2, 0, 0xa9, 0xfe, 0, 0x15])
for _ in range(3):
    s.sendto(msg, (dst, 0, 0, idx))
`;

/** One DHCPv6 "advertise" from port 547 to the all-DHCP-agents group, as a rogue server would send. */
const SEND_DHCP6 = `
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
s.bind(("::", 547))
idx = socket.if_nametoindex(sys.argv[1])
for _ in range(3):
    s.sendto(bytes([2, 0, 0, 1]), ("ff02::1:2", 546, 0, idx))
    s.sendto(bytes([2, 0, 0, 1]), ("ff02::1", 546, 0, idx))
`;

describe("IPv6 isolation from a guest stand-in (two dual leases)", { skip }, () => {
  let a: Lease;
  let b: Lease;
  let ga: GuestStandIn;
  let gb: GuestStandIn;
  const { prefix, upstream, daemon, serverLog } = ipv6Suite({
    poolSize: 2,
    teardown: async () => {
      await ga?.stop();
      await gb?.stop();
    },
  });

  before(async () => {
    a = await daemon.client.acquire({ profile: "dual", bindToProcess: false, autoRenew: false });
    b = await daemon.client.acquire({ profile: "dual", bindToProcess: false, autoRenew: false });
    ga = await startGuestStandIn({ slotNetnsPath: a.slot.netns, name: `${prefix}-ga`, mtu: a.guest.mtu });
    gb = await startGuestStandIn({ slotNetnsPath: b.slot.netns, name: `${prefix}-gb`, mtu: b.guest.mtu });
    await configureIpv6(ga, a);
    await configureIpv6(gb, b);
    // Guest B serves on [::]:PORT too: a reached probe would be logged there.
    await serveIpv6In(gb);
  });

  const ping6 = async (g: GuestStandIn, target: string, from?: string) =>
    (await g.exec(["ping", "-6", "-c", "1", "-W", "2", ...(from ? ["-I", from] : []), target], { timeoutMs: 10_000 })).code === 0;

  it("control: both guests reach the IPv6 upstream at once", async () => {
    assert.ok((await curl6(ga, upstream.address6!, "/a")).ok);
    assert.ok((await curl6(gb, upstream.address6!, "/b")).ok);
  });

  it("a guest cannot reach another slot's outside IPv6 address, nor its own", async () => {
    for (const target of [b.slot.outsideAddress6!, a.slot.outsideAddress6!]) {
      assert.equal(await ping6(ga, target), false, `guest A pinged ${target}`);
      assert.equal((await curl6(ga, target, "/slot")).ok, false, `guest A reached ${target} over TCP`);
    }
  });

  it("a guest cannot reach the host: the uplink's IPv6 address, nor the host end's link-local address", async () => {
    // Positive control: the root namespace itself has the address.
    assert.match(sh("ip", ["-6", "addr", "show", "dev", upstream.uplink]), new RegExp(upstream.hostAddress6!.replace(/:/g, ":")));
    assert.equal(await ping6(ga, upstream.hostAddress6!), false, "guest A pinged the host's IPv6 address");
    // fe80::1 is the gateway on tap0 (the slot's own address): answered by nothing either.
    assert.equal(await ping6(ga, `${GATEWAY_IP6}%g0`), false, "guest A pinged its gateway's link-local address");
  });

  it("a spoofed IPv6 source is dropped before it leaves the slot", async () => {
    const spoof = "fd00:a9fe::99";
    const r = await ga.exec(["ip", "-6", "addr", "add", `${spoof}/128`, "dev", "g0", "nodad"]);
    assert.equal(r.code, 0, r.stderr);
    try {
      const before = serverLog().length;
      const got = await ga.exec(["curl", "-sS", "-g", "--max-time", "4", "--interface", spoof, `http://[${upstream.address6}]:${PORT}/spoof`], { timeoutMs: 10_000 });
      assert.notEqual(got.code, 0, "the spoofed request was answered");
      assert.ok(!serverLog().slice(before).includes("/spoof"), "the upstream logged the spoofed request");
      // Another slot's outside address as the source: same.
      assert.equal(await ping6(ga, upstream.address6!, b.slot.outsideAddress6).catch(() => false), false);
    } finally {
      await ga.exec(["ip", "-6", "addr", "del", `${spoof}/128`, "dev", "g0"]);
    }
    assert.ok((await curl6(ga, upstream.address6!, "/after-spoof")).ok, "control after the spoof");
  });

  it("router advertisements, DHCPv6 answers and neighbour advertisements from a guest reach nothing outside its slot", async () => {
    const hostVeth = slotAddressing(prefix, parseCidr(daemon.linkCidr), a.slot.index).hostVeth;
    const routesBefore = (await gb.exec(["ip", "-6", "route"])).stdout;
    const neighBefore = sh("ip", ["-6", "neigh", "show", "dev", hostVeth]);
    const slotNs = a.slot.netns.replace("/run/netns/", "");
    const captures = await Promise.all([startCapture(slotNs, "eth0", ["ip6"]), startCapture(undefined, hostVeth, ["ip6"]), startCapture(slotNs, "tap0", ["ip6"])]);
    const py = async (script: string, args: string[]) => {
      const r = await ga.exec(["python3", "-c", script, ...args], { timeoutMs: 15_000 });
      assert.equal(r.code, 0, r.stderr);
    };
    await py(SEND_ICMP6, ["ff02::1", "g0", "ra"]);
    await py(SEND_DHCP6, ["g0"]);
    for (const target of [GATEWAY_IP6, HOST_LINK_IP6, SLOT_LINK_IP6, "fd00:a9fe::1"]) await py(SEND_ICMP6, ["ff02::1", "g0", target]);
    await new Promise((r) => setTimeout(r, 500));
    const [eth0Lines, vethLines, tapLines] = await Promise.all(captures.map((c) => c.stop()));
    // The guest really sent them: they are on its tap0.
    assert.ok(tapLines!.some((l) => /router advertisement/.test(l)), `no RA on tap0: ${tapLines!.join("\n")}`);
    assert.ok(tapLines!.some((l) => /neighbor advertisement/.test(l)), "no NA on tap0");
    assert.ok(tapLines!.some((l) => /\.547 > ff02::1:2\.546/.test(l)), "no DHCPv6 answer on tap0");
    const leaked = [...eth0Lines!, ...vethLines!].filter((l) => /router advertisement|neighbor advertisement|dhcp6|\.546:/.test(l) && !/fe80::2 > fe80::1|fe80::1 > fe80::2/.test(l));
    assert.deepEqual(leaked, [], "the guest's RA/DHCPv6/NA left its slot");
    assert.equal((await gb.exec(["ip", "-6", "route"])).stdout, routesBefore, "guest B's IPv6 routes changed");
    assert.doesNotMatch((await gb.exec(["ip", "-6", "addr"])).stdout, /2001:db8:bad/, "guest B took the rogue prefix");
    assert.equal(sh("ip", ["-6", "neigh", "show", "dev", hostVeth]), neighBefore, "the host end's neighbour table changed");
    assert.doesNotMatch(sh("ip", ["-6", "neigh", "show"]), /02:00:a9:fe:00:15/, "a root neighbour entry points at the guest's MAC");
    assert.ok((await curl6(gb, upstream.address6!, "/b-after")).ok, "guest B still works");
    assert.ok((await curl6(ga, upstream.address6!, "/a-after")).ok, "guest A still works");
  });
});
