// The IPv6 rows of the isolation matrix from a real guest: Debian's kernel with a busybox
// initramfs under QEMU (TCG) on a `dual` lease (slot A), one boot running every probe as its
// /check.sh. Slot B holds another dual lease with a guest stand-in serving on its IPv6
// address, so "reached B" would show in its answer. The host watches the other side: a
// capture in the upstream namespace (spoofed sources must never arrive there) and captures on
// slot A's tap0 and eth0 and the host end of its veth (the guest's own neighbour discovery and
// router solicitations must stay on tap0). The stand-in rows are in ipv6.test.ts.
import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { isRoot, skipUnless } from "../support/env.js";
import { startGuestStandIn, type GuestStandIn } from "../support/guest.js";
import { SERVER6_PORT as PORT, configureIpv6, ipv6Suite, serveIpv6In } from "../support/ipv6.js";
import { ensureGuestImage, qemuAvailable, runGuest, type GuestRun } from "../support/qemu.js";
import { startCapture } from "../support/isolation.js";
import { GATEWAY_IP6, GUEST_IP6, GUEST_MAC, parseCidr, slotAddressing } from "../../src/dataplane/topology.js";
import type { Lease } from "../../src/core/types.js";

const skip = skipUnless(isRoot(), "needs root") || skipUnless(qemuAvailable(), "qemu-system-x86_64 is not installed");
const SPOOF6 = "fd00:a9fe::99";
/** ping6 payload sizes: each probe is recognisable at the upstream by its ICMPv6 length (size + 8). */
const SIZE = { control: 201, spoofUla: 203, spoofNeighbour: 205 } as const;

interface ScriptParams {
  up6: string;
  host6: string;
  outsideA6: string;
  outsideB6: string;
}

/**
 * The guest's /check.sh (busybox sh): configures lease.guest.ipv6 as a VM would, then probes.
 * Prints `RESULT name=value`; "reached"/"blocked" for pings, the HTTP body (spaces as _) for
 * fetches. busybox wget -T segfaults in this guest, so it is bounded with timeout.
 */
function guestScript(lease: Lease, p: ScriptParams): string {
  const v6 = lease.guest.ipv6!;
  return `
res() { echo "RESULT $1=$2"; }
fetch() { timeout 6 wget -q -O - "http://[$1]:${PORT}/$2" 2>/dev/null | head -c 200 | tr -d '\\n' | tr ' ' '_'; }
p6() { ping6 -c 1 -W 2 "$@" >/dev/null 2>&1 && echo reached || echo blocked; }
[ -d /proc/sys/net/ipv6 ] && res kernel_ipv6 yes || { res kernel_ipv6 no; exit 0; }
# No DAD (the address is the lease's), and no autoconfiguration from whatever advertises.
echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad
echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_ra
ip -6 addr add ${v6.ip}/${v6.prefixLength} dev eth0 && res addr6 ok
ip -6 route add default via ${v6.gateway} dev eth0 && res route6 ok
# (1) the IPv6 upstream, over HTTP and ICMPv6 (the ICMP one is the capture's positive control).
res control6 "$(fetch ${p.up6} qemu-control)"
ping6 -c 1 -W 3 -s ${SIZE.control} ${p.up6} >/dev/null 2>&1 && res ping_up6 reached || res ping_up6 blocked
# (2) another slot's outside address, the guest's own, the host's address, the gateway's link-local.
res b_out6_icmp $(p6 ${p.outsideB6})
res b_out6_http "$(fetch ${p.outsideB6} qemu-b)"
res a_out6_icmp $(p6 ${p.outsideA6})
res a_out6_http "$(fetch ${p.outsideA6} qemu-a)"
res host6_icmp $(p6 ${p.host6})
res gw6_icmp $(p6 -I eth0 ${GATEWAY_IP6})
# (3) spoofed sources: an address of the guest's /64 that is not the lease's, and slot B's outside address.
ip -6 addr add ${SPOOF6}/128 dev eth0 && res spoof_addr ok
ip -6 addr add ${p.outsideB6}/128 dev eth0 && res spoof_neigh_addr ok
ping6 -c 2 -W 2 -s ${SIZE.spoofUla} -I ${SPOOF6} ${p.up6} >/dev/null 2>&1 && res spoof_ula reached || res spoof_ula blocked
ping6 -c 2 -W 2 -s ${SIZE.spoofNeighbour} -I ${p.outsideB6} ${p.up6} >/dev/null 2>&1 && res spoof_neigh reached || res spoof_neigh blocked
ip -6 addr del ${SPOOF6}/128 dev eth0
ip -6 addr del ${p.outsideB6}/128 dev eth0
res control6_after "$(fetch ${p.up6} qemu-after)"
exit 0
`;
}

describe("IPv6 isolation from a real QEMU guest (dual leases)", { skip }, () => {
  let a: Lease;
  let b: Lease;
  let gb: GuestStandIn | undefined;
  let guest: GuestRun | undefined;
  let m: Record<string, string> = {};
  let upLines: string[] = [];
  let tapLines: string[] = [];
  let outLines: string[] = [];
  const { prefix, upstream, daemon, serverLog } = ipv6Suite({ poolSize: 2, teardown: () => gb?.stop() });

  before(async () => {
    const image = await ensureGuestImage();
    a = await daemon.client.acquire({ profile: "dual", bindToProcess: false, autoRenew: false });
    b = await daemon.client.acquire({ profile: "dual", bindToProcess: false, autoRenew: false });
    assert.ok(a.guest.ipv6 && a.slot.outsideAddress6 && b.slot.outsideAddress6, "dual leases carry IPv6");

    // Slot B: a stand-in on the same guest address, serving on [::]:PORT (a reached probe answers "v6 …").
    gb = await startGuestStandIn({ slotNetnsPath: b.slot.netns, name: `${prefix}-gb`, mtu: b.guest.mtu });
    await configureIpv6(gb, b);
    await serveIpv6In(gb);

    const hostVeth = slotAddressing(prefix, parseCidr(daemon.linkCidr), a.slot.index).hostVeth;
    const slotNs = a.slot.netns.replace("/run/netns/", "");
    const captures = await Promise.all([
      startCapture(upstream.netns, "eth0", ["ip6"]),
      startCapture(slotNs, "tap0", ["ip6"]),
      startCapture(slotNs, "eth0", ["ip6"]),
      startCapture(undefined, hostVeth, ["ip6"]),
    ]);
    try {
      guest = await runGuest({
        slotNetnsPath: a.slot.netns,
        script: guestScript(a, { up6: upstream.address6!, host6: upstream.hostAddress6!, outsideA6: a.slot.outsideAddress6, outsideB6: b.slot.outsideAddress6 }),
        mtu: a.guest.mtu,
        image,
        timeoutMs: 120_000,
      });
      m = guest.markers;
    } finally {
      const [up, tap, eth0, veth] = await Promise.all(captures.map((c) => c.stop()));
      upLines = up!;
      tapLines = tap!;
      outLines = [...eth0!, ...veth!];
    }
    process.stderr.write(`# [${prefix}] qemu guest (IPv6): boot ${Math.round(guest.bootMs)} ms, total ${Math.round(guest.totalMs)} ms; ${JSON.stringify(m)}\n`);
  });

  const ran = () => {
    if (!guest) throw new Error("the guest did not run (see before hook)");
    assert.equal(m["kernel_ipv6"], "yes", "the guest kernel has no IPv6");
  };

  it("the guest configures lease.guest.ipv6 (address, default route via the gateway) and reaches the IPv6 upstream", () => {
    ran();
    assert.equal(m["addr6"], "ok");
    assert.equal(m["route6"], "ok");
    assert.equal(m["control6"], `v6_${upstream.hostAddress6}`, "the upstream answers, seeing the uplink's IPv6 address (masquerade)");
    assert.equal(m["ping_up6"], "reached");
    assert.ok(serverLog().includes('"url":"/qemu-control"'), "the upstream logged the guest's request");
    assert.ok(upLines.some((l) => l.includes(`length ${SIZE.control + 8}`) && l.includes("echo request")), "the capture saw the control ping");
  });

  it("the guest cannot reach another slot's outside IPv6 address, nor its own", async () => {
    ran();
    // Positive control: slot B's stand-in does serve, so a probe that got there would be answered.
    const local = await gb!.exec(["curl", "-sS", "-g", "--max-time", "2", `http://[::1]:${PORT}/local`]);
    assert.equal(local.stdout.trim(), "v6 ::1", `slot B's server: ${local.stderr}`);
    assert.equal(m["b_out6_icmp"], "blocked");
    assert.equal(m["b_out6_http"], "", "slot B's stand-in answered");
    assert.equal(m["a_out6_icmp"], "blocked");
    assert.equal(m["a_out6_http"], "");
  });

  it("the guest cannot reach the host: the uplink's IPv6 address, nor fe80::1 beyond routing through it", () => {
    ran();
    assert.equal(m["host6_icmp"], "blocked", "the guest pinged the host's IPv6 address");
    assert.equal(m["gw6_icmp"], "blocked", "the guest pinged its gateway's link-local address");
  });

  it("spoofed IPv6 sources from the guest do not leave: nothing of them arrives at the upstream", () => {
    ran();
    assert.equal(m["spoof_addr"], "ok");
    assert.equal(m["spoof_neigh_addr"], "ok");
    assert.equal(m["spoof_ula"], "blocked");
    assert.equal(m["spoof_neigh"], "blocked");
    // The guest really sent them (they are on its tap0) ...
    for (const source of [SPOOF6, b.slot.outsideAddress6!]) {
      assert.ok(tapLines.some((l) => l.includes(`${source} > ${upstream.address6}: ICMP6, echo request`)), `no packet from ${source} on tap0:\n${tapLines.join("\n")}`);
    }
    // ... and none arrived, whatever their source became on the way.
    const arrived = upLines.filter((l) => l.includes(`length ${SIZE.spoofUla + 8}`) || l.includes(`length ${SIZE.spoofNeighbour + 8}`) || l.includes(SPOOF6));
    assert.deepEqual(arrived, [], "a spoofed packet reached the upstream");
    assert.ok(!serverLog().includes("fd00:a9fe"), "the upstream saw the guest's untranslated address");
    assert.equal(m["control6_after"], `v6_${upstream.hostAddress6}`, "control after the spoof");
  });

  it("the guest's own neighbour discovery and router solicitations stay in its slot", () => {
    ran();
    // The guest's link-local address, from its own frames on tap0.
    const ll = tapLines.map((l) => (l.startsWith(`${GUEST_MAC} >`) || l.includes(` ${GUEST_MAC} >`) ? /(fe80::[0-9a-f:]+) > /.exec(l)?.[1] : undefined)).find((x) => x);
    assert.ok(ll, `the guest sent nothing from a link-local address on tap0:\n${tapLines.join("\n")}`);
    assert.ok(tapLines.some((l) => l.includes(`${ll} >`) && /router solicitation|neighbor solicitation|multicast listener/.test(l)), `the guest sent no ND/RS/MLD on tap0:\n${tapLines.join("\n")}`);
    const leaked = outLines.filter((l) => (l.includes(`${ll} >`) || l.includes(`${GUEST_IP6} >`) || l.includes(`${SPOOF6} >`)) && /ICMP6/.test(l) && !/echo/.test(l));
    assert.deepEqual(leaked, [], "the guest's ND traffic left its slot");
  });

  // Row (4) of issue 13 for the real guest: the guest's busybox has no tool that sends a
  // router advertisement or a DHCPv6 answer (no raw ICMPv6 sender, nc is TCP/UDP to one
  // peer), so the crafted RA/DHCPv6/NA row runs from the stand-in only (ipv6.test.ts).
  it("router advertisements from a real guest: not run, the guest image has no RA sender (stand-in row in ipv6.test.ts)", { skip: "no RA/DHCPv6 sender in the guest's busybox; covered by the stand-in in ipv6.test.ts" }, () => {});
});
