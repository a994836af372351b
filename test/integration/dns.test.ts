// egress.allowDomains end to end: a daemon whose DNS forwarder asks a DNS server started in
// the test's upstream namespace (fixed A records, no internet), a guest stand-in that asks
// its lease's guest.dns, and packets to the addresses the answers name.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { cleanupServing, CLI, REPO_ROOT, createUpstream, startServerIn, type NetnsServer, isRoot, nsExec, skipUnless, startDaemon, testPrefix, waitFor, type DaemonHandle, type Upstream } from "../support/env.js";
import { startDnsServer, type DnsServer } from "../support/dns-server.js";
import { startGuestStandIn, type GuestStandIn } from "../support/guest.js";
import { NetslotClient } from "../../src/sdk/index.js";
import { diffFingerprints } from "../../src/dataplane/fingerprint.js";
import { fingerprintOf } from "../../src/dataplane/dataplane.js";
import { loadGolden } from "../../src/dataplane/golden.js";
import { parseCidr } from "../../src/dataplane/topology.js";
import { GRACE_SECONDS } from "../../src/daemon/dns-forwarder.js";
import { admittedElements } from "../../src/dataplane/ruleset.js";
import { addSetElements, NFPROTO_INET } from "../../src/kernel/nftsets.js";
import { withNetns } from "../../src/kernel/netns.js";
import { run } from "../support/guest.js";
import { ensureGuestImage, qemuAvailable, runGuest } from "../support/qemu.js";
import type { UpgradeResult } from "../../src/core/types.js";

const skip = skipUnless(isRoot(), "needs root");

/** A DNS query for `name`'s A record over TCP (2-byte length first), as octal escapes for the guest's printf. */
function tcpQueryOctal(name: string): string {
  const q = Buffer.concat([
    Buffer.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
    ...name.split(".").map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])),
    Buffer.from([0, 0, 1, 0, 1]),
  ]);
  return [...Buffer.concat([Buffer.from([0, q.length]), q])].map((b) => `\\${b.toString(8).padStart(3, "0")}`).join("");
}
const HTTP_PORT = 8080;
/** Answers "upstream" on HTTP_PORT. */
const HTTP_SERVER = `require("http").createServer((q, s) => s.end("upstream\\n")).listen(${HTTP_PORT}, () => console.log("listening"))`;
const TOKEN = "sandbox-token-0123456789";
const TTL = 1;

const QUERY = path.join(REPO_ROOT, "dist", "test", "support", "dns-query.js");
const V6 = "2001:db8:53::7";

interface Answer {
  timeout?: boolean;
  id?: number;
  rcode?: number;
  tc?: boolean;
  addresses?: string[];
}

async function ask(guest: GuestStandIn, name: string, server: string, ...flags: string[]): Promise<Answer> {
  const r = await guest.exec([process.execPath, QUERY, name, server, ...flags]);
  const out = JSON.parse(r.stdout) as Answer[] | Answer;
  return Array.isArray(out) ? out[0]! : out;
}

async function http(guest: GuestStandIn, address: string): Promise<boolean> {
  const r = await guest.exec(["curl", "-s", "--max-time", "2", `http://${address}:${HTTP_PORT}/`]);
  return r.code === 0 && r.stdout === "upstream\n";
}

/** The admitted addresses in a slot's set, as nft lists them (expired ones are not). */
function admitted(netns: string, set = "egress_admit"): string[] {
  const json = JSON.parse(nsExec(netns, ["nft", "-j", "list", "set", "inet", "netslot", set])) as {
    nftables: Array<{ set?: { elem?: Array<{ elem?: { val?: unknown } } | string> } }>;
  };
  return (json.nftables.find((o) => o.set)?.set?.elem ?? []).map((e) => JSON.stringify(typeof e === "string" ? e : e.elem?.val));
}


describe("egress.allowDomains through the lease's DNS forwarder", { skip }, () => {
  const prefix = testPrefix();
  let upstream: Upstream;
  let other: string;
  let httpServer: NetnsServer | undefined;
  let dnsServer: DnsServer | undefined;
  let daemon: DaemonHandle;
  let client: NetslotClient;
  let dir: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), `netslot-dns-${prefix}-`));
    upstream = createUpstream(prefix);
    other = upstream.address.replace(/\.2$/, ".3");
    nsExec(upstream.netns, ["ip", "addr", "add", `${other}/32`, "dev", "lo"]);
    httpServer = await startServerIn(upstream.netns, [process.execPath, "-e", HTTP_SERVER], "listening");
    const big = Array.from({ length: 60 }, (_, i) => `198.51.100.${i + 1}`);
    const records = { "deb.example.test": [other, V6], "a.pkg.example.test": [other], "blocked.example.test": [upstream.address], "big.example.test": big };
    dnsServer = await startDnsServer(upstream.netns, upstream.address, records, TTL);
    const configFile = path.join(dir, "config.json");
    fs.writeFileSync(configFile, JSON.stringify({ profiles: { names: { egress: { allowDomains: ["deb.example.test", "*.pkg.example.test", "big.example.test"] } } } }));
    daemon = await startDaemon({ prefix, uplink: upstream.uplink, poolSize: 1, extraArgs: ["--config", configFile, "--dns-upstream", upstream.address] });
    client = new NetslotClient({ socketPath: daemon.socket, token: TOKEN });
  });

  after(async () => {
    client?.close();
    await daemon?.cleanup();
    httpServer?.stop();
    dnsServer?.stop();
    upstream?.remove();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("an allowed name resolves and its address becomes reachable until TTL + grace; other names are REFUSED and stay blocked; release removes the admissions", async (t) => {
    const lease = await client.acquire({ profile: "names", bindToProcess: false, autoRenew: false });
    const netns = path.basename(lease.slot.netns);
    assert.ok(lease.guest.dns, "the lease carries guest.dns");
    const guest = await startGuestStandIn({ slotNetnsPath: lease.slot.netns, name: `${prefix}-g`, mtu: lease.guest.mtu });
    try {
      // An allow-list of names only: nothing is reachable before an answer.
      assert.equal(await http(guest, other), false);
      assert.equal(await http(guest, upstream.address), false);
      // The guest cannot ask the upstream directly either.
      assert.deepEqual(await ask(guest, "deb.example.test", upstream.address), { timeout: true });

      const refused = await ask(guest, "blocked.example.test", lease.guest.dns);
      assert.equal(refused.rcode, 5, "a name not allowed is REFUSED");
      assert.equal(refused.id, 0x1234);
      assert.equal(await http(guest, upstream.address), false, "its address stays blocked");

      const answer = await ask(guest, "deb.example.test", lease.guest.dns);
      assert.deepEqual(answer, { id: 0x1234, rcode: 0, tc: false, addresses: [other] });
      assert.deepEqual(admitted(netns), [JSON.stringify(other)]);
      // AAAA answers admit into the slot's IPv6 set, checked with the kernel.
      const six = await ask(guest, "deb.example.test", lease.guest.dns, "--aaaa");
      assert.deepEqual(six.addresses, [V6]);
      assert.deepEqual(admitted(netns, "egress_admit6"), [JSON.stringify(V6)]);
      assert.equal(await http(guest, other), true, "the answer's address is reachable");
      assert.equal(await http(guest, upstream.address), false, "another address of the same upstream is not");
      assert.equal((await ask(guest, "a.pkg.example.test", lease.guest.dns)).rcode, 0, "*.suffix matches a name under it");
      assert.equal((await ask(guest, "pkg.example.test", lease.guest.dns)).rcode, 5, "*.suffix does not match the suffix itself");

      // DNS over TCP through the same redirect: several queries on one connection, REFUSED
      // alike, and an answer too big for UDP (TC over UDP, whole over TCP) admits all it names.
      const r = await guest.exec([process.execPath, QUERY, "deb.example.test", lease.guest.dns, "--tcp", "--repeat", "3"]);
      const overTcp = JSON.parse(r.stdout) as Answer[];
      assert.deepEqual(overTcp.map((a) => [a.id, a.rcode, a.addresses]), [0x1234, 0x1235, 0x1236].map((id) => [id, 0, [other]]));
      assert.equal((await ask(guest, "blocked.example.test", lease.guest.dns, "--tcp")).rcode, 5, "REFUSED over TCP too");
      const truncated = await ask(guest, "big.example.test", lease.guest.dns);
      assert.deepEqual([truncated.rcode, truncated.tc, truncated.addresses], [0, true, []]);
      const whole = await ask(guest, "big.example.test", lease.guest.dns, "--tcp");
      assert.equal(whole.addresses?.length, 60);
      assert.equal(admitted(netns).filter((a) => a.startsWith('"198.51.100.')).length, 60, "the TCP answer's 60 addresses are admitted");
      assert.ok(dnsServer!.queries().includes("tcp big.example.test 1"), "upstream asked over TCP when the guest did");
      // The forwarder's counters, as Prometheus scrapes them: 3 names refused, 8 forwarded
      // (A, AAAA, *.suffix, 3 over one TCP connection, big over UDP and TCP).
      const metrics = await client.metrics();
      const sample = (series: string) => Number(new RegExp(`^${series.replace(/[{}]/g, "\\$&")} (\\d+)$`, "m").exec(metrics)?.[1]);
      assert.equal(sample('netslot_dns_queries_total{outcome="refused"}'), 3, metrics);
      assert.equal(sample('netslot_dns_queries_total{outcome="forwarded"}'), 8, metrics);
      assert.equal(sample('netslot_dns_queries_total{outcome="malformed"}'), 0, metrics);
      assert.equal(sample('netslot_dns_tcp_connections_total{result="accepted"}'), 3, metrics);
      assert.ok(sample("netslot_dns_admitted_addresses_total") >= 62, metrics);

      // The admission ends TTL + grace seconds after the last answer.
      const start = Date.now();
      await waitFor(() => admitted(netns).length === 0 && admitted(netns, "egress_admit6").length === 0, (TTL + GRACE_SECONDS + 10) * 1000, { intervalMs: 200 });
      const seconds = (Date.now() - start) / 1000;
      assert.ok(seconds >= GRACE_SECONDS - 2, `admission lasted ${seconds.toFixed(1)} s`);
      assert.equal(await http(guest, other), false, "blocked again after TTL + grace");

      // What one admission costs the daemon: one nfnetlink transaction in the slot (new or renewed).
      const times: number[] = [];
      for (let i = 0; i < 200; i++) {
        const key = Buffer.from([198, 51, 100, 200 + (i % 50)]);
        const start = process.hrtime.bigint();
        withNetns(lease.slot.netns, () => addSetElements(NFPROTO_INET, admittedElements([{ key, timeoutMs: 2000 }])));
        times.push(Number(process.hrtime.bigint() - start) / 1000);
      }
      times.sort((a, b) => a - b);
      t.diagnostic(`admission (setns + nfnetlink transaction): median ${times[100]!.toFixed(0)} µs, p99 ${times[198]!.toFixed(0)} µs`);
      assert.equal(admitted(netns).length, 50);

      // Admitted again, then released while admitted: the fingerprint sees it, the scrub removes it.
      assert.equal((await ask(guest, "deb.example.test", lease.guest.dns)).rcode, 0);
      assert.equal(admitted(netns).length > 0, true);
      const golden = loadGolden(daemon.stateDir);
      assert.ok(golden);
      const diff = diffFingerprints(golden, fingerprintOf(prefix, parseCidr(daemon.linkCidr), lease.slot.index));
      assert.ok(diff.some((d) => /egress_admit/.test(JSON.stringify(d))), `fingerprint covers the admission: ${JSON.stringify(diff)}`);
    } finally {
      await guest.stop();
      await client.release(lease.id);
    }
    await waitFor(async () => (await client.pool()).free === 1, 30_000);
    assert.deepEqual(admitted(netns), [], "the scrub removed the admissions");
    const golden = loadGolden(daemon.stateDir)!;
    assert.deepEqual(diffFingerprints(golden, fingerprintOf(prefix, parseCidr(daemon.linkCidr), lease.slot.index)), []);
  });
  it("a real QEMU guest resolves an allowed name through guest.dns and reaches it; a name not allowed is REFUSED; other upstream addresses stay unreachable", { skip: skipUnless(qemuAvailable(), "qemu-system-x86_64 is not installed") }, async (t) => {
    const image = await ensureGuestImage();
    const third = upstream.address.replace(/\.2$/, ".4");
    nsExec(upstream.netns, ["ip", "addr", "add", `${third}/32`, "dev", "lo"], { allowFail: true });
    // The previous test's release may still be scrubbing.
    await waitFor(async () => (await client.pool()).free === 1, 30_000);
    const lease = await client.acquire({ profile: "names", bindToProcess: false, autoRenew: false });
    const dns = lease.guest.dns!;
    const reach = (name: string, ip: string) =>
      `if timeout 4 wget -q -O - http://${ip}:${HTTP_PORT}/ 2>/dev/null | grep -q upstream; then echo "RESULT http_${name}=ok"; else echo "RESULT http_${name}=blocked"; fi\n`;
    // busybox nslookup asks over UDP (A and AAAA); TCP is a hand-made query through nc:
    // the 5th and 6th bytes of the reply are the flags (81 80: an answer; 81 85: REFUSED).
    const tcpFlags = (name: string, key: string) =>
      `printf '${tcpQueryOctal(name)}' | timeout 12 nc ${dns} 53 | od -An -tx1 -v | tr -d ' \\n' | cut -c9-12 | sed 's/^/RESULT ${key}=/'\n`;
    const script =
      reach("before", other) +
      `nslookup deb.example.test ${dns} > /tmp/allowed 2>&1; cat /tmp/allowed\n` +
      `if grep -q "${other}" /tmp/allowed; then echo "RESULT resolve_allowed=ok"; else echo "RESULT resolve_allowed=failed"; fi\n` +
      reach("allowed", other) +
      `nslookup blocked.example.test ${dns} > /tmp/blocked 2>&1; cat /tmp/blocked\n` +
      `if grep -q REFUSED /tmp/blocked; then echo "RESULT resolve_blocked=refused"; else echo "RESULT resolve_blocked=answered"; fi\n` +
      reach("blocked_name", upstream.address) +
      reach("third", third) +
      `if timeout 5 nslookup deb.example.test ${upstream.address} 2>&1 | grep -q "${other}"; then echo "RESULT direct_dns=answered"; else echo "RESULT direct_dns=blocked"; fi\n` +
      tcpFlags("a.pkg.example.test", "tcp_allowed") +
      tcpFlags("blocked.example.test", "tcp_blocked");
    try {
      const r = await runGuest({ slotNetnsPath: lease.slot.netns, script, mtu: lease.guest.mtu, image, timeoutMs: 150_000 });
      t.diagnostic(`guest boot ${Math.round(r.bootMs)} ms, checks ${Math.round(r.totalMs - r.bootMs)} ms`);
      const got = Object.fromEntries(
        ["http_before", "resolve_allowed", "http_allowed", "resolve_blocked", "http_blocked_name", "http_third", "direct_dns", "tcp_allowed", "tcp_blocked"].map((k) => [k, r.markers[k]]),
      );
      assert.deepEqual(
        got,
        {
          http_before: "blocked",
          resolve_allowed: "ok",
          http_allowed: "ok",
          resolve_blocked: "refused",
          http_blocked_name: "blocked",
          http_third: "blocked",
          direct_dns: "blocked",
          tcp_allowed: "8180",
          tcp_blocked: "8185",
        },
        r.checkOutput,
      );
    } finally {
      await client.release(lease.id);
      await waitFor(async () => (await client.pool()).free === 1, 30_000);
    }
  });
});

describe("DNS admissions across a live handover (netslot upgrade)", { skip }, () => {
  const prefix = testPrefix();
  const LONG_TTL = 20;
  let upstream: Upstream;
  let other: string;
  let httpServer: NetnsServer | undefined;
  let dnsServer: DnsServer | undefined;
  let daemon: DaemonHandle;
  let client: NetslotClient;
  let dir: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), `netslot-dnsh-${prefix}-`));
    upstream = createUpstream(prefix);
    other = upstream.address.replace(/\.2$/, ".3");
    nsExec(upstream.netns, ["ip", "addr", "add", `${other}/32`, "dev", "lo"]);
    httpServer = await startServerIn(upstream.netns, [process.execPath, "-e", HTTP_SERVER], "listening");
    dnsServer = await startDnsServer(upstream.netns, upstream.address, { "deb.example.test": [other], "blocked.example.test": [upstream.address] }, LONG_TTL);
    const configFile = path.join(dir, "config.json");
    fs.writeFileSync(configFile, JSON.stringify({ profiles: { names: { egress: { allowDomains: ["deb.example.test"] } } } }));
    daemon = await startDaemon({ prefix, uplink: upstream.uplink, poolSize: 1, extraArgs: ["--config", configFile, "--dns-upstream", upstream.address] });
    client = new NetslotClient({ socketPath: daemon.socket, token: TOKEN });
  });

  after(async () => {
    client?.close();
    await cleanupServing(daemon);
    httpServer?.stop();
    dnsServer?.stop();
    upstream?.remove();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("an admission made by daemon A stays effective under daemon B and expires on time; B's forwarder serves guest.dns", async (t) => {
    const lease = await client.acquire({ profile: "names", bindToProcess: false, autoRenew: false });
    const netns = path.basename(lease.slot.netns);
    const guest = await startGuestStandIn({ slotNetnsPath: lease.slot.netns, name: `${prefix}-g`, mtu: lease.guest.mtu });
    try {
      const answer = await ask(guest, "deb.example.test", lease.guest.dns!);
      const admittedAt = Date.now();
      assert.deepEqual(answer.addresses, [other]);
      assert.equal(await http(guest, other), true);

      const up = await run([process.execPath, CLI, "upgrade", "--json", "--socket", daemon.socket], { timeoutMs: 120_000 });
      assert.equal(up.code, 0, `${up.stdout}\n${up.stderr}\n${daemon.output().slice(-3000)}`);
      const r = JSON.parse(up.stdout) as UpgradeResult;
      assert.notEqual(r.current.pid, daemon.process.pid);
      const afterUpgrade = (Date.now() - admittedAt) / 1000;
      assert.ok(afterUpgrade < LONG_TTL, `the upgrade took ${afterUpgrade.toFixed(1)} s, longer than the TTL`);

      // Daemon B never saw the answer: the kernel still holds A's admission.
      assert.deepEqual(admitted(netns), [JSON.stringify(other)]);
      assert.equal(await http(guest, other), true, "A's admission passes traffic under B");
      assert.equal((await ask(guest, "blocked.example.test", lease.guest.dns!)).rcode, 5, "B's forwarder answers guest.dns (over UDP)");
      assert.equal((await ask(guest, "blocked.example.test", lease.guest.dns!, "--tcp")).rcode, 5, "and over TCP");
      assert.equal(await http(guest, upstream.address), false);

      // It expires TTL + grace after A admitted it, with no daemon timer behind it.
      await waitFor(() => admitted(netns).length === 0, (LONG_TTL + GRACE_SECONDS + 10) * 1000, { intervalMs: 200 });
      const lasted = (Date.now() - admittedAt) / 1000;
      t.diagnostic(`upgrade after ${afterUpgrade.toFixed(1)} s; admission lasted ${lasted.toFixed(1)} s (TTL ${LONG_TTL} + grace ${GRACE_SECONDS})`);
      assert.ok(Math.abs(lasted - (LONG_TTL + GRACE_SECONDS)) < 2.5, `admission lasted ${lasted.toFixed(1)} s`);
      assert.equal(await http(guest, other), false, "blocked once expired");
    } finally {
      await guest.stop();
      await client.release(lease.id);
    }
  });
});
