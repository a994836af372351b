// IPv6 for guests (profile `"dual": { "ipv6": true }`, daemon --link-cidr6) end to end: a
// guest stand-in on a dual lease reaches an IPv6 listener in the test's upstream namespace
// through the eBPF 1:1 translation and the root table's masquerade; a lease without the
// profile gets no IPv6 through; release removes the translation, so the next lease on the
// same slot (a one-slot pool reuses it) has none, and the slot is back to its golden state.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawn, type ChildProcess } from "node:child_process";
import { createUpstream, freeLinkCidr6, isRoot, sh, skipUnless, startDaemon, testPrefix, waitFor, type DaemonHandle, type Upstream } from "../support/env.js";
import { run, startGuestStandIn, type GuestStandIn } from "../support/guest.js";
import { openPinnedDataplane } from "../../src/kernel/bpf.js";
import { fingerprintOf } from "../../src/dataplane/dataplane.js";
import { diffFingerprints } from "../../src/dataplane/fingerprint.js";
import { loadGolden } from "../../src/dataplane/golden.js";
import { GATEWAY_IP6, GUEST_IP6, bpfPinDir, outsideAddress6, parseCidr, parseCidr6, slotAddressing } from "../../src/dataplane/topology.js";
import { ip6ToBigInt } from "../../src/core/addr.js";
import type { Lease } from "../../src/core/types.js";

const skip = skipUnless(isRoot(), "needs root");
const PORT = 8086;

/** Answers "v6 <remote address>" on [::]:PORT and logs each request as a JSON line. */
const SERVER6 = `
const http = require("http");
http.createServer((q, s) => {
  console.log(JSON.stringify({ url: q.url, remote: q.socket.remoteAddress }));
  s.end("v6 " + q.socket.remoteAddress + "\\n");
}).listen(Number(process.argv[1]), "::", () => console.log("listening"));
`;

/** Gives a stand-in guest the lease's IPv6 as a VM would configure it (address, on-link default route). */
async function configureIpv6(guest: GuestStandIn, lease: Lease): Promise<void> {
  const v6 = lease.guest.ipv6 ?? { ip: GUEST_IP6, prefixLength: 64, gateway: GATEWAY_IP6 };
  const r = await guest.exec([
    "sh",
    "-c",
    `sysctl -qw net.ipv6.conf.g0.disable_ipv6=0 net.ipv6.conf.g0.accept_dad=0 && ip -6 addr add ${v6.ip}/${v6.prefixLength} dev g0 nodad && ip -6 route add default via ${v6.gateway} dev g0`,
  ]);
  assert.equal(r.code, 0, r.stderr);
}

async function curl6(guest: GuestStandIn, address: string, pathname: string): Promise<{ ok: boolean; body: string }> {
  const r = await guest.exec(["curl", "-sS", "-g", "--max-time", "4", `http://[${address}]:${PORT}${pathname}`], { timeoutMs: 10_000 });
  return { ok: r.code === 0, body: r.stdout + r.stderr };
}

describe("IPv6 for guests (profile ipv6, --link-cidr6)", { skip }, () => {
  const prefix = testPrefix();
  const linkCidr6 = freeLinkCidr6();
  let dir: string;
  let upstream: Upstream;
  let server: ChildProcess | undefined;
  let serverLog = "";
  let daemon: DaemonHandle;
  const guests: GuestStandIn[] = [];

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), `netslot-ipv6-${prefix}-`));
    upstream = createUpstream(prefix, { ipv6: true });
    server = spawn("ip", ["netns", "exec", upstream.netns, process.execPath, "-e", SERVER6, String(PORT)], { stdio: ["ignore", "pipe", "inherit"] });
    server.stdout!.on("data", (b: Buffer) => (serverLog += b.toString()));
    await waitFor(() => serverLog.includes("listening"), 10_000);
    const configFile = path.join(dir, "config.json");
    fs.writeFileSync(configFile, JSON.stringify({ profiles: { dual: { ipv6: true }, plain: {} } }));
    daemon = await startDaemon({ prefix, uplink: upstream.uplink, poolSize: 1, extraArgs: ["--config", configFile, "--link-cidr6", linkCidr6] });
  });

  after(async () => {
    for (const g of guests) await g.stop();
    server?.kill("SIGKILL");
    await daemon?.cleanup();
    upstream?.remove();
    fs.rmSync(dir, { recursive: true, force: true });
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
    const before = serverLog;
    const got = await curl6(guest, upstream.address6!, "/plain");
    assert.ok(!got.ok, `a lease without ipv6 reached the IPv6 upstream: ${got.body}`);
    assert.ok(!serverLog.slice(before.length).includes("/plain"), "the upstream logged the request");
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
