// The stateless eBPF NAT with real traffic: a guest stand-in on a leased slot talks TCP,
// UDP (also fragmented) and ICMP to an upstream namespace, gets an ICMP error back, and is
// reached by the host under the slot's outside address. tcpdump at both ends verifies the
// checksums the peers receive; the slot's conntrack table stays empty throughout.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { createUpstream, exited, isRoot, nsExec, startDaemon, stopChild, testPrefix, type DaemonHandle, type Upstream, skipUnless } from "../support/env.js";
import { startGuestStandIn, registerCleanup, run, type GuestStandIn } from "../support/guest.js";
import { tcpdumpListening } from "../support/isolation.js";
import { GUEST_IP, bpfPinDir, parseCidr, slotAddressing, type SlotAddressing } from "../../src/dataplane/topology.js";
import { openPinnedDataplane } from "../../src/kernel/bpf.js";
import { withNetns } from "../../src/kernel/netns.js";
import * as libc from "../../src/kernel/libc.js";
import type { Lease } from "../../src/core/types.js";

const skip = skipUnless(isRoot(), "needs root");

const AF_INET = 2;
const SIOCETHTOOL = 0x8946;
const ETHTOOL_GTXCSUM = 0x16;
const ETHTOOL_STXCSUM = 0x17;

/**
 * `ethtool -K <ifname> tx on|off` inside a namespace, through SIOCETHTOOL (no ethtool
 * binary needed). Returns the setting afterwards. With tx checksum offload off, a sender
 * computes full TCP/UDP checksums, so tcpdump at the receiver checks what the eBPF
 * rewrite and the masquerade made of them instead of flagging a partial checksum.
 */
function setTxChecksum(netnsPath: string, ifname: string, on: boolean): boolean {
  return withNetns(netnsPath, () => {
    const value = Buffer.alloc(8); // struct ethtool_value { u32 cmd; u32 data; }
    const fd = libc.socket(AF_INET, libc.SOCK_DGRAM, 0);
    try {
      const ifr = Buffer.alloc(40); // struct ifreq: name[16], then ifr_data
      ifr.write(ifname, 0, 15, "latin1");
      ifr.writeBigUInt64LE(libc.addressOf(value), 16);
      value.writeUInt32LE(ETHTOOL_STXCSUM, 0);
      value.writeUInt32LE(on ? 1 : 0, 4);
      libc.ioctl(fd, SIOCETHTOOL, ifr);
      value.writeUInt32LE(ETHTOOL_GTXCSUM, 0);
      value.writeUInt32LE(0, 4);
      libc.ioctl(fd, SIOCETHTOOL, ifr);
      return value.readUInt32LE(4) !== 0;
    } finally {
      libc.close(fd);
    }
  });
}

/** Spawns a command inside a namespace and resolves once `marker` shows on stdout or stderr. */
async function spawnReady(netns: string, cmd: string[], marker: string, children: Set<ChildProcess>): Promise<{ child: ChildProcess; output(): string }> {
  const child = spawn("ip", ["netns", "exec", netns, ...cmd], { stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let out = "";
  child.stdout.on("data", (b: Buffer) => (out += b.toString()));
  child.stderr.on("data", (b: Buffer) => (out += b.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${cmd.join(" ")}: not ready after 10 s: ${out}`)), 10_000);
    const check = () => {
      if (out.includes(marker)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on("data", check);
    child.stderr.on("data", check);
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${cmd.join(" ")} exited (${signal ?? code}): ${out}`));
    });
  });
  return { child, output: () => out };
}

interface Capture {
  /** Stops tcpdump (SIGINT flushes) and returns its text output. */
  stop(): Promise<string>;
}

/** `tcpdump --immediate-mode -nn -l -vv <args>` in a namespace (or the root one), written to a file. */
async function startTcpdump(netns: string | undefined, args: string[], children: Set<ChildProcess>): Promise<Capture> {
  const file = path.join(os.tmpdir(), `netslot-dp-${process.pid}-${Math.random().toString(36).slice(2)}.txt`);
  const fd = fs.openSync(file, "w");
  const argv = ["tcpdump", "--immediate-mode", "-nn", "-l", "-vv", ...args];
  let child: ChildProcess;
  try {
    child = netns
      ? spawn("ip", ["netns", "exec", netns, ...argv], { stdio: ["ignore", fd, "pipe"] })
      : spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", fd, "pipe"] });
  } finally {
    fs.closeSync(fd);
  }
  children.add(child);
  const unregister = registerCleanup(() => fs.rmSync(file, { force: true }));
  await tcpdumpListening(child);
  return {
    async stop() {
      await new Promise((r) => setTimeout(r, 200)); // let the last packets land
      await stopChild(child, "SIGINT");
      children.delete(child);
      const text = fs.readFileSync(file, "utf8");
      fs.rmSync(file, { force: true });
      unregister();
      return text;
    },
  };
}

const BAD_CHECKSUM = /bad cksum|incorrect|wrong icmp cksum|bad udp cksum/i;

/**
 * Lines of a tcpdump -vv text that report a bad checksum, with the line before for context,
 * split into the packets' own headers and the packet quoted inside an ICMP error (tcpdump
 * prints its IP header on a tab-indented line).
 */
function badChecksumLines(text: string): { own: string[]; embedded: string[] } {
  const lines = text.split("\n");
  const own: string[] = [];
  const embedded: string[] = [];
  lines.forEach((line, i) => {
    if (!BAD_CHECKSUM.test(line)) return;
    const previous = lines[i - 1] ?? "";
    (/^\tIP \(/.test(previous) ? embedded : own).push(`${previous}\n${line}`);
  });
  return { own, embedded };
}

const EMBEDDED_CSUM_BUG =
  "the packet quoted in an ICMP error has a wrong TCP/UDP checksum: the eBPF rewrite of its address " +
  "(rewrite_icmp_inner_addr, bpf/lib/csum.h) must fix the quoted L4 checksum too, whose pseudo-header covers it";

/** Source addresses of the IPv4 packets in tcpdump -nn -v output ("IP (tos …)\n    a.b.c.d.port > …"). */
function ipSources(text: string): Set<string> {
  const sources = new Set<string>();
  for (const m of text.matchAll(/^\s+(\d+\.\d+\.\d+\.\d+)(?:\.\d+)? > \d+\.\d+\.\d+\.\d+/gm)) sources.add(m[1]!);
  return sources;
}

const esc = (ip: string) => ip.replace(/\./g, "\\.");

// Servers inside the upstream namespace: TCP echo on 7001, UDP echo on 7002; each logs the peer.
const UPSTREAM_SERVERS = `
const net = require("net"), dgram = require("dgram");
const [addr] = process.argv.slice(1);
let up = 0;
const ready = () => { if (++up === 2) console.log("ready"); };
net.createServer((s) => { console.log("tcp from " + s.remoteAddress); s.pipe(s); }).listen(7001, addr, ready);
const u = dgram.createSocket("udp4");
u.on("message", (m, r) => { console.log("udp from " + r.address + " len " + m.length); u.send(m, r.port, r.address); });
u.bind(7002, addr, ready);
`;

// Guest clients (run with node inside the guest namespace). Each prints one result line.
const TCP_ECHO_CLIENT = `
const net = require("net"), crypto = require("crypto");
const [addr, size] = process.argv.slice(1);
const payload = crypto.randomBytes(Number(size));
const got = [];
let n = 0;
const s = net.connect(7001, addr, () => s.end(payload));
s.on("data", (b) => { got.push(b); n += b.length; });
s.on("end", () => console.log(Buffer.concat(got).equals(payload) ? "tcp ok " + n : "tcp mismatch " + n));
s.on("error", (e) => { console.log("tcp error " + e.code); process.exit(1); });
setTimeout(() => { console.log("tcp timeout " + n); process.exit(1); }, 8000).unref();
`;

const UDP_ECHO_CLIENT = `
const dgram = require("dgram"), crypto = require("crypto");
const [addr, size] = process.argv.slice(1);
const payload = crypto.randomBytes(Number(size));
const s = dgram.createSocket("udp4");
s.on("message", (m) => { console.log(m.equals(payload) ? "udp ok " + m.length : "udp mismatch " + m.length); process.exit(0); });
s.on("error", (e) => { console.log("udp error " + e.code); process.exit(1); });
const send = () => s.send(payload, 7002, addr);
send();
const again = setInterval(send, 500); // UDP may lose the first datagram while ARP resolves
setTimeout(() => { clearInterval(again); console.log("udp timeout"); process.exit(1); }, 5000);
`;

// A connected UDP socket to a closed port: the ICMP port unreachable surfaces as ECONNREFUSED.
const UDP_CLOSED_PORT_CLIENT = `
const dgram = require("dgram");
const [addr, port] = process.argv.slice(1);
const s = dgram.createSocket("udp4");
const report = (e) => { console.log(e ? "error " + e.code : "no error"); process.exit(0); };
s.on("error", report);
s.connect(Number(port), addr, () => {
  s.send("probe-1");
  setTimeout(() => s.send("probe-2", (e) => e && report(e)), 500);
  setTimeout(() => s.send("probe-3", (e) => report(e)), 1500);
});
`;

// A TCP echo listener inside the guest (for the host → guest direction); logs each peer.
const GUEST_LISTENER = `
require("net").createServer((s) => { console.log("peer " + s.remoteAddress); s.pipe(s); }).listen(8080, "0.0.0.0", () => console.log("ready"));
`;

describe("datapath: stateless eBPF NAT with real traffic", { skip }, () => {
  const prefix = testPrefix();
  let upstream: Upstream | undefined;
  let daemon: DaemonHandle | undefined;
  let guest: GuestStandIn | undefined;
  let lease: Lease;
  let slot: SlotAddressing;
  let servers: { child: ChildProcess; output(): string };
  const children = new Set<ChildProcess>();
  const embeddedFindings: string[] = [];
  const unregisterChildren = registerCleanup(() => {
    for (const c of children) if (!exited(c)) c.kill("SIGKILL");
  });

  /** The slot namespace's conntrack table, three ways; all must be empty. */
  const assertNoConntrack = (when: string): void => {
    const count = Number(nsExec(slot.name, ["conntrack", "-C"]).trim());
    assert.equal(count, 0, `slot conntrack count ${when}`);
    const listed = nsExec(slot.name, ["conntrack", "-L"]).trim();
    assert.equal(listed, "", `slot conntrack entries ${when}`);
    const proc = nsExec(slot.name, ["sh", "-c", "test -e /proc/net/nf_conntrack && cat /proc/net/nf_conntrack || true"]).trim();
    assert.equal(proc, "", `slot /proc/net/nf_conntrack ${when}`);
  };

  const node = (script: string, ...args: string[]) => guest!.exec([process.execPath, "-e", script, ...args], { timeoutMs: 20_000 });

  before(async () => {
    upstream = createUpstream(prefix);
    daemon = await startDaemon({ prefix, uplink: upstream.uplink, poolSize: 2 });
    lease = await daemon.client.acquire({ labels: { test: "datapath" }, bindToProcess: false, autoRenew: false });
    slot = slotAddressing(prefix, parseCidr(daemon.linkCidr), lease.slot.index);
    guest = await startGuestStandIn({ slotNetnsPath: lease.slot.netns, name: `${prefix}-g`, mtu: lease.guest.mtu });
    servers = await spawnReady(upstream.netns, [process.execPath, "-e", UPSTREAM_SERVERS, upstream.address], "ready", children);
  });

  after(async () => {
    for (const c of children) await stopChild(c, "SIGKILL");
    unregisterChildren();
    await guest?.stop();
    await daemon?.cleanup();
    upstream?.remove();
  });

  it("starts with an empty conntrack table in the slot", () => {
    assertNoConntrack("before any traffic");
  });

  it("offloaded traffic (partial checksums, GSO): iperf3 TCP for 1 s, TCP and UDP echo, ping", async () => {
    const server = await spawnReady(upstream!.netns, ["iperf3", "-s", "-1", "--forceflush", "-B", upstream!.address, "-p", "5201"], "Server listening", children);
    const client = await guest!.exec(["iperf3", "-c", upstream!.address, "-p", "5201", "-t", "1", "-J"], { timeoutMs: 20_000 });
    await stopChild(server.child);
    assert.equal(client.code, 0, `iperf3: ${client.stderr}${client.stdout.slice(0, 2000)}`);
    const report = JSON.parse(client.stdout) as { end: { sum_received: { bytes: number } } };
    assert.ok(report.end.sum_received.bytes > 1_000_000, `iperf3 moved only ${report.end.sum_received.bytes} bytes`);
    const tcp = await node(TCP_ECHO_CLIENT, upstream!.address, "200000");
    assert.match(tcp.stdout, /^tcp ok 200000$/m, tcp.stdout + tcp.stderr);
    const udp = await node(UDP_ECHO_CLIENT, upstream!.address, "1000");
    assert.match(udp.stdout, /^udp ok 1000$/m, udp.stdout + udp.stderr);
    const ping = await guest!.exec(["ping", "-c", "3", "-i", "0.2", "-W", "2", upstream!.address]);
    assert.equal(ping.code, 0, ping.stdout + ping.stderr);
    assertNoConntrack("after offloaded traffic");
  });

  it("with full checksums from both ends, each peer receives only correct checksums", async () => {
    // Full checksums at the senders: what tcpdump verifies at the receivers is then exactly
    // what the eBPF rewrite (and the host's masquerade) made of them.
    assert.equal(setTxChecksum(guest!.netnsPath, "g0", false), false, "guest g0 tx checksum offload off");
    assert.equal(setTxChecksum(`/run/netns/${upstream!.netns}`, "eth0", false), false, "upstream eth0 tx checksum offload off");
    const atUpstream = await startTcpdump(upstream!.netns, ["-i", "eth0", "-Q", "in", "ip"], children);
    const atGuest = await startTcpdump(guest!.netns, ["-i", "g0", "-Q", "in", "ip"], children);
    // ICMP toward the slot, after the host's NAT and before the slot's eBPF: tells which one broke a checksum.
    const towardSlot = await startTcpdump(undefined, ["-i", slot.hostVeth, "-Q", "out", "icmp"], children);
    let upText: string;
    let guestText: string;
    let towardSlotText: string;
    try {
      const tcp = await node(TCP_ECHO_CLIENT, upstream!.address, "100000");
      assert.match(tcp.stdout, /^tcp ok 100000$/m, tcp.stdout + tcp.stderr);
      const udp = await node(UDP_ECHO_CLIENT, upstream!.address, "1000");
      assert.match(udp.stdout, /^udp ok 1000$/m, udp.stdout + udp.stderr);
      // Larger than the MTU: IP fragments both ways (later fragments carry no UDP header).
      const frag = await node(UDP_ECHO_CLIENT, upstream!.address, "3000");
      assert.match(frag.stdout, /^udp ok 3000$/m, frag.stdout + frag.stderr);
      const ping = await guest!.exec(["ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "1200", upstream!.address]);
      assert.equal(ping.code, 0, ping.stdout + ping.stderr);
      const refused = await node(UDP_CLOSED_PORT_CLIENT, upstream!.address, "7999");
      assert.match(refused.stdout, /^error ECONNREFUSED$/m, `no port unreachable reached the guest: ${refused.stdout}${refused.stderr}`);
    } finally {
      upText = await atUpstream.stop();
      guestText = await atGuest.stop();
      towardSlotText = await towardSlot.stop();
    }
    // tcpdump really verified checksums (full ones), in both directions.
    assert.match(upText, /\(correct\)/, `upstream saw no verified TCP checksum:\n${upText.slice(0, 3000)}`);
    assert.match(upText, /\[udp sum ok\]/, `upstream saw no verified UDP checksum:\n${upText.slice(0, 3000)}`);
    assert.match(guestText, /\(correct\)/, `guest saw no verified TCP checksum:\n${guestText.slice(0, 3000)}`);
    assert.match(guestText, /\[udp sum ok\]/, `guest saw no verified UDP checksum:\n${guestText.slice(0, 3000)}`);
    assert.match(guestText, /udp port 7999 unreachable/, `guest saw no port unreachable:\n${guestText.slice(0, 3000)}`);
    const upBad = badChecksumLines(upText);
    const guestBad = badChecksumLines(guestText);
    assert.deepEqual(upBad.own, [], "bad checksums received by the upstream");
    assert.deepEqual(guestBad.own, [], "bad checksums received by the guest");
    assert.deepEqual(upBad.embedded, [], "bad checksums in ICMP errors received by the upstream");
    embeddedFindings.push(...guestBad.embedded.map((l) => `guest ← port unreachable (nat_ingress):\n${l}`));
    assert.match(towardSlotText, /udp port 7999 unreachable/, towardSlotText);
    assert.deepEqual(badChecksumLines(towardSlotText), { own: [], embedded: [] }, "the host's NAT left a bad checksum in the ICMP error");
    // The upstream sees only the host's uplink address (masquerade), never the guest or outside address.
    assert.deepEqual([...ipSources(upText)], [upstream!.hostAddress], "sources seen by the upstream");
    assertNoConntrack("after checksum-verified traffic");
  });

  it("the guest address inside the slot, the outside address on the host veth, the uplink address upstream", async () => {
    const onTap = await startTcpdump(slot.name, ["-i", "tap0", "-Q", "in", "ip"], children);
    const onHostVeth = await startTcpdump(undefined, ["-i", slot.hostVeth, "-Q", "in", "ip"], children);
    const before = servers.output().length;
    let tapText: string;
    let vethText: string;
    try {
      const udp = await node(UDP_ECHO_CLIENT, upstream!.address, "500");
      assert.match(udp.stdout, /^udp ok 500$/m, udp.stdout + udp.stderr);
      const tcp = await node(TCP_ECHO_CLIENT, upstream!.address, "5000");
      assert.match(tcp.stdout, /^tcp ok 5000$/m, tcp.stdout + tcp.stderr);
    } finally {
      tapText = await onTap.stop();
      vethText = await onHostVeth.stop();
    }
    assert.deepEqual([...ipSources(tapText)], [GUEST_IP], `sources on the slot's tap0:\n${tapText.slice(0, 2000)}`);
    assert.deepEqual([...ipSources(vethText)], [lease.slot.outsideAddress], `sources on the host veth ${slot.hostVeth}:\n${vethText.slice(0, 2000)}`);
    const seen = servers.output().slice(before);
    assert.match(seen, new RegExp(`^udp from ${esc(upstream!.hostAddress)} len 500$`, "m"), seen);
    assert.match(seen, new RegExp(`^tcp from ${esc(upstream!.hostAddress)}$`, "m"), seen);
    assert.doesNotMatch(seen, new RegExp(`from (${esc(GUEST_IP)}|${esc(lease.slot.outsideAddress)})`), seen);
    assertNoConntrack("after the address checks");
  });

  it("the host reaches a TCP listener in the guest under the slot's outside address", async () => {
    const listener = await spawnReady(guest!.netns, [process.execPath, "-e", GUEST_LISTENER], "ready", children);
    try {
      const echoed = await new Promise<string>((resolve, reject) => {
        const s = net.connect({ host: lease.slot.outsideAddress, port: 8080, timeout: 5_000 });
        let got = "";
        s.on("connect", () => s.end("hello guest"));
        s.on("data", (b: Buffer) => (got += b.toString()));
        s.on("end", () => resolve(got));
        s.on("timeout", () => s.destroy(new Error("timeout")));
        s.on("error", reject);
      });
      assert.equal(echoed, "hello guest");
      // The guest sees the host's end of the slot link as its peer.
      assert.match(listener.output(), new RegExp(`^peer ${esc(slot.hostAddress)}$`, "m"), listener.output());
    } finally {
      await stopChild(listener.child);
      children.delete(listener.child);
    }
    assertNoConntrack("after host → guest TCP");
  });

  it("the host gets the guest's port unreachable for a closed port, with correct checksums", async () => {
    // Egress direction of the ICMP error rewrite: the quoted packet's destination is the guest.
    // The host's datagram must carry a full checksum (no tx offload on the host veth), else
    // the guest quotes a partial one and the quote is "bad" before any NAT touches it.
    assert.equal(setTxChecksum("/proc/self/ns/net", slot.hostVeth, false), false, "host veth tx checksum offload off");
    const onHostVeth = await startTcpdump(undefined, ["-i", slot.hostVeth, "-Q", "in", "icmp"], children);
    let text: string;
    try {
      const r = await run([process.execPath, "-e", UDP_CLOSED_PORT_CLIENT, lease.slot.outsideAddress, "9999"], { timeoutMs: 20_000 });
      assert.match(r.stdout, /^error ECONNREFUSED$/m, `no port unreachable from the guest reached the host: ${r.stdout}${r.stderr}`);
    } finally {
      text = await onHostVeth.stop();
    }
    assert.match(text, new RegExp(`${esc(lease.slot.outsideAddress)} > ${esc(slot.hostAddress)}: ICMP ${esc(lease.slot.outsideAddress)} udp port 9999 unreachable`), text);
    assert.doesNotMatch(text, new RegExp(esc(GUEST_IP)), `the guest address leaked out of the slot:\n${text}`);
    const bad = badChecksumLines(text);
    assert.deepEqual(bad.own, [], "bad checksums in the ICMP error received by the host");
    embeddedFindings.push(...bad.embedded.map((l) => `host ← port unreachable (nat_egress):\n${l}`));
    assertNoConntrack("after the guest's port unreachable");
  });

  // Kept apart so the finding does not hide the assertions above: both ICMP error tests
  // record what tcpdump reports about the packet quoted inside the error.
  it("the packet quoted in an ICMP error keeps a correct TCP/UDP checksum (both directions)", () => {
    assert.deepEqual(embeddedFindings, [], EMBEDDED_CSUM_BUG);
  });

  it("the slot's conntrack table is still empty at the end", () => {
    assertNoConntrack("at the end");
  });

  it("a slot whose eth0 takes another slot's MAC gets neither its address nor its own out: dropped and counted", async () => {
    const other = slotAddressing(prefix, parseCidr(daemon!.linkCidr), 1 - lease.slot.index);
    const drops = (): bigint => {
      const bpf = openPinnedDataplane(bpfPinDir(prefix))!;
      try {
        return bpf.unattributedDrops();
      } finally {
        bpf.close();
      }
    };
    const dropsBefore = drops();
    const before = servers.output().length;
    const onHostVeth = await startTcpdump(undefined, ["-i", slot.hostVeth, "-Q", "in", "ip"], children);
    const onOtherVeth = await startTcpdump(undefined, ["-i", other.hostVeth, "-Q", "in", "ip"], children);
    let vethText: string;
    let otherText: string;
    // What a root process in the slot (an escaped VMM) can do: take the other slot's MAC.
    nsExec(slot.name, ["ip", "link", "set", "eth0", "address", other.slotMac]);
    try {
      const udp = await node(UDP_ECHO_CLIENT, upstream!.address, "300");
      assert.match(udp.stdout, /^udp timeout$/m, udp.stdout + udp.stderr);
    } finally {
      nsExec(slot.name, ["ip", "link", "set", "eth0", "address", slot.slotMac]);
      // The host may have learnt the borrowed MAC for the slot's address meanwhile.
      await run(["ip", "neigh", "flush", "dev", slot.hostVeth]);
      vethText = await onHostVeth.stop();
      otherText = await onOtherVeth.stop();
    }
    assert.deepEqual([...ipSources(vethText)], [], `sources on the host veth ${slot.hostVeth}:\n${vethText.slice(0, 2000)}`);
    assert.deepEqual([...ipSources(otherText)], [], `sources on the other slot's host veth ${other.hostVeth}:\n${otherText.slice(0, 2000)}`);
    assert.doesNotMatch(servers.output().slice(before), /len 300/);
    const dropped = drops() - dropsBefore;
    assert.ok(dropped >= 1n, `unattributed drops rose by ${dropped}`);
    const metric = /^netslot_nat_unattributed_drops_total (\d+)$/m.exec(await daemon!.client.metrics());
    assert.ok(metric && BigInt(metric[1]!) >= dropsBefore + dropped, `metric: ${metric?.[0]}`);
    // Its own MAC back: the slot works again.
    const udp = await node(UDP_ECHO_CLIENT, upstream!.address, "400");
    assert.match(udp.stdout, /^udp ok 400$/m, udp.stdout + udp.stderr);
  });
});
