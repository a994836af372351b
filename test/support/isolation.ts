// The isolation matrix: what a guest on a leased slot must and must not be able to do,
// written once as a busybox sh script and run from either kind of guest (a guest stand-in
// namespace, or a real QEMU guest). The script only acts and prints `RESULT name=value`
// lines; the host watches the other side (captures, neighbour tables, server logs) and
// GUARANTEES turns both into assertions. docs/isolation.md maps each guarantee to the
// mechanism that enforces it. Test support only: spawns ip, tcpdump, node and busybox.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { createUpstream, freeLinkCidr, nsExec, sh, startDaemon, stopChild, waitForOutput, type DaemonHandle, type Upstream } from "./env.js";
import { registerCleanup, run, runOk, startGuestStandIn, type ExecResult, type GuestStandIn } from "./guest.js";
import { parseMarkers } from "./qemu.js";
import { createVpcGateway, firstHost, freeTenantCidrs, type VpcGateway, type VpcTenant } from "./vpc.js";
import { GATEWAY_IP, GUEST_IP, GUEST_MAC, METADATA_IP, TAP_MAC, parseCidr, slotAddressing, type SlotAddressing } from "../../src/dataplane/topology.js";
import type { Lease } from "../../src/core/types.js";

/** A destination the guest probes; every target in the matrix must stay unreachable. */
export interface Target {
  /** Marker-safe name ([A-Za-z0-9_]). */
  name: string;
  address: string;
  /** Probe with one ICMP echo (the kernel answers it if the packet gets there). */
  icmp: boolean;
  /** Probe with HTTP GET http://address:port/p/<name>, "reached" when the body holds `expect`. */
  http?: { port: number; expect: string };
}

/** Ping payload sizes: each probe is recognisable on the wire by its ICMP length (size + 8). */
export const PING_SIZE = {
  controlBefore: 101,
  spoofIpTestNet: 103,
  spoofIpNeighbour: 105,
  spoofMac: 107,
  controlAfter: 109,
} as const;

export interface MatrixParams {
  /** The guest's interface: eth0 in QEMU, g0 in the stand-in. */
  ifname: string;
  token: string;
  upstream: { address: string; address6: string; httpPort: number; barrierPort: number };
  /** The guest's own tenant gateway, when its lease has a network. */
  ownVpc?: { address: string; expect: string };
  targets: Target[];
  /** Two foreign source addresses: one from nowhere (TEST-NET-1), one another slot's outside address. */
  spoofTestNet: string;
  spoofNeighbour: string;
  spoofMac: string;
  arpClaims: string[];
  /** Address the guest gives itself for the IPv6 probe. */
  guestAddress6: string;
  barrier: { round: string; sourcePort: number; waitSeconds: number };
  /**
   * Crafted VXLAN straight at the VTEP with another tenant's VNI (inner frame: an ARP
   * request whose sender is `senderIp`), sent with `tool` (udpsend, base64).
   */
  vxlan?: { vtep: string; port: number; payloadHex: string; tool: string };
}

const SAFE = /^[A-Za-z0-9_.:/-]+$/;

function q(value: string | number): string {
  const text = String(value);
  if (!SAFE.test(text)) throw new Error(`unsafe value in guest script: ${text}`);
  return text;
}

/** Shell functions shared by the matrix and the partner's barrier script. */
function prelude(p: MatrixParams): string {
  return `IF=${q(p.ifname)}
UP=${q(p.upstream.address)}
TOKEN=${q(p.token)}
R=$(mktemp -d /tmp/netslot-iso.XXXXXX)
res() { echo "RESULT $1=$2" >> "$R/results"; }
mark() { res "t.$1" "$(cut -d' ' -f1 /proc/uptime)"; }
# busybox wget -T segfaults in the test guest: bound it with timeout instead.
http_probe() { if timeout 5 wget -q -O - "$2" 2>/dev/null | grep -q "$3"; then res "$1" reached; else res "$1" blocked; fi; }
icmp_probe() { if ping -c 1 -W 2 "$2" >/dev/null 2>&1; then res "$1" reached; else res "$1" blocked; fi; }
# Same source port in every guest: the masquerade, not luck, must keep the flows apart.
barrier() {
  out=$(printf 'GO %s %s\\n' ${q(p.barrier.round)} "$1" | timeout ${p.barrier.waitSeconds + 5} nc -p ${q(p.barrier.sourcePort)} "$UP" ${q(p.upstream.barrierPort)} 2>&1)
  case "$out" in
    *together*) res concurrent together ;;
    *) res concurrent "alone:$(echo "$out" | tr -c 'A-Za-z0-9_.:-' _ | cut -c1-60)" ;;
  esac
}
finish() { cat "$R/results"; rm -rf "$R"; }
`;
}

/** The guest side of the matrix, for busybox sh (the QEMU guest's only shell). */
export function matrixScript(p: MatrixParams): string {
  const lines: string[] = [prelude(p), "mark start"];
  // 1. The path works at all, then everything that must not work, in parallel.
  lines.push(`http_probe reach.upstream "http://$UP:${q(p.upstream.httpPort)}/p/reach" "$TOKEN"`);
  if (p.ownVpc) lines.push(`http_probe reach.own_vpc "http://${q(p.ownVpc.address)}/p/own" ${q(p.ownVpc.expect)}`);
  lines.push("barrier A &", 'pids="$!"');
  for (const t of p.targets) {
    if (t.icmp) lines.push(`icmp_probe probe.${q(t.name)}.icmp ${q(t.address)} &`, 'pids="$pids $!"');
    if (t.http) {
      lines.push(`http_probe probe.${q(t.name)}.http "http://${q(t.address)}:${q(t.http.port)}/p/${q(t.name)}" ${q(t.http.expect)} &`, 'pids="$pids $!"');
    }
  }
  lines.push("wait $pids", "mark probes");
  if (p.vxlan) {
    const v = p.vxlan;
    lines.push(
      "base64 -d > \"$R/udpsend\" <<'B64'",
      ...(v.tool.match(/.{1,76}/g) ?? []),
      "B64",
      'chmod +x "$R/udpsend"',
      "ok=0",
      `for i in 1 2 3; do "$R/udpsend" ${q(v.vtep)} ${q(v.port)} ${q(v.payloadHex)} && ok=$((ok + 1)); sleep 0.2; done`,
      'res vxlan.sent "$ok"',
      "mark vxlan",
    );
  }
  // 2. Foreign source addresses (configured on the interface so the stack really uses them).
  lines.push(
    `ip addr add ${q(p.spoofTestNet)}/32 dev $IF`,
    `ip addr add ${q(p.spoofNeighbour)}/32 dev $IF`,
    `if ping -c 1 -W 2 -s ${PING_SIZE.controlBefore} "$UP" >/dev/null 2>&1; then res spoof.control_before reached; else res spoof.control_before blocked; fi`,
    `(if ping -c 1 -W 2 -s ${PING_SIZE.spoofIpTestNet} -I ${q(p.spoofTestNet)} "$UP" >/dev/null 2>&1; then res spoof.ip_testnet reached; else res spoof.ip_testnet blocked; fi) &`,
    'pids="$!"',
    `(if ping -c 1 -W 2 -s ${PING_SIZE.spoofIpNeighbour} -I ${q(p.spoofNeighbour)} "$UP" >/dev/null 2>&1; then res spoof.ip_neighbour reached; else res spoof.ip_neighbour blocked; fi) &`,
    'pids="$pids $!"',
    "wait $pids",
    `ip addr del ${q(p.spoofTestNet)}/32 dev $IF`,
    `ip addr del ${q(p.spoofNeighbour)}/32 dev $IF`,
    "mark spoof_ip",
  );
  // 3. A foreign source MAC (live change; down/up fallback loses the default route, so re-add it).
  const setMac = (mac: string) =>
    `ip link set dev $IF address ${q(mac)} 2>/dev/null || { ip link set dev $IF down; ip link set dev $IF address ${q(mac)}; ip link set dev $IF up; }; ip route add default via ${GATEWAY_IP} dev $IF 2>/dev/null`;
  lines.push(
    setMac(p.spoofMac),
    // A MAC change flushes the interface's ARP cache; the gateway MAC is fixed, so pin it
    // (otherwise only the ARP request would go out, and that is dropped for the same reason).
    `arp -i $IF -s ${GATEWAY_IP} ${TAP_MAC}`,
    'res spoof.mac_set "$(cat /sys/class/net/$IF/address)"',
    `if ping -c 1 -W 2 -s ${PING_SIZE.spoofMac} "$UP" >/dev/null 2>&1; then res spoof.mac reached; else res spoof.mac blocked; fi`,
    `arp -i $IF -d ${GATEWAY_IP} 2>/dev/null`,
    setMac(GUEST_MAC),
    `if ping -c 2 -W 3 -s ${PING_SIZE.controlAfter} "$UP" >/dev/null 2>&1; then res spoof.control_after reached; else res spoof.control_after blocked; fi`,
    "mark spoof_mac",
  );
  // 4. ARP claims for addresses that are not the guest's: gratuitous requests and replies.
  lines.push("echo 1 > /proc/sys/net/ipv4/ip_nonlocal_bind", 'pids=""', "n=0");
  for (const a of p.arpClaims) {
    lines.push(
      `arping -U -c 2 -w 2 -I $IF ${q(a)} >/dev/null 2>&1 &`,
      'pids="$pids $!"',
      `arping -A -c 2 -w 2 -I $IF ${q(a)} >/dev/null 2>&1 &`,
      'pids="$pids $!"',
      "n=$((n + 2))",
    );
  }
  lines.push("wait $pids", "echo 0 > /proc/sys/net/ipv4/ip_nonlocal_bind", 'res arp.sent "$n"', "mark arp");
  // 5. IPv6: link-local multicast and a unicast address of the upstream.
  lines.push(
    "echo 0 > /proc/sys/net/ipv6/conf/$IF/accept_dad",
    "echo 0 > /proc/sys/net/ipv6/conf/$IF/disable_ipv6",
    `ip addr add ${q(p.guestAddress6)}/64 dev $IF`,
    "ip route add ::/0 dev $IF 2>/dev/null",
    "ping6 -c 2 -W 1 -I $IF ff02::1 >/dev/null 2>&1",
    `if ping6 -c 2 -W 2 ${q(p.upstream.address6)} >/dev/null 2>&1; then res v6.upstream reached; else res v6.upstream blocked; fi`,
    "echo 1 > /proc/sys/net/ipv6/conf/$IF/disable_ipv6",
    "mark ipv6",
    "finish",
  );
  return lines.join("\n") + "\n";
}

/** The other guest's half of the concurrency check. */
export function barrierScript(p: MatrixParams, who: string): string {
  return `${prelude(p)}barrier ${q(who)}\nfinish\n`;
}

/** A static, libc-free x86-64 `udpsend IP PORT HEX` (busybox has no UDP sender with a payload). */
export const UDPSEND_C = String.raw`/* udpsend IP PORT HEX: one UDP datagram with an arbitrary payload; no libc (static, tiny). */
static long sys6(long n, long a, long b, long c, long d, long e, long f) {
  long r;
  register long r10 __asm__("r10") = d;
  register long r8 __asm__("r8") = e;
  register long r9 __asm__("r9") = f;
  __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
  return r;
}
static __attribute__((noreturn)) void quit(int code) { sys6(60, code, 0, 0, 0, 0, 0); for (;;) {} }
static unsigned char buf[4096];
struct sin { unsigned short family, port; unsigned char addr[4]; unsigned char zero[8]; };
static int hexv(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; }
__attribute__((used)) void cmain(long *sp) {
  long argc = sp[0];
  char **argv = (char **)(sp + 1);
  struct sin a;
  int i, part = 0, v = 0, n = 0;
  long port = 0, fd;
  char *s;
  if (argc != 4) quit(2);
  for (i = 0; i < 8; i++) a.zero[i] = 0;
  for (s = argv[1]; ; s++) {
    if (*s >= '0' && *s <= '9') { v = v * 10 + (*s - '0'); continue; }
    if (part > 3 || v > 255) quit(2);
    a.addr[part++] = (unsigned char)v; v = 0;
    if (*s == 0) break;
    if (*s != '.') quit(2);
  }
  if (part != 4) quit(2);
  for (s = argv[2]; *s; s++) port = port * 10 + (*s - '0');
  for (s = argv[3]; s[0] && s[1] && n < (int)sizeof buf; s += 2) {
    int h = hexv(s[0]), l = hexv(s[1]);
    if (h < 0 || l < 0) quit(2);
    buf[n++] = (unsigned char)(h * 16 + l);
  }
  a.family = 2;
  a.port = (unsigned short)(((port & 255) << 8) | ((port >> 8) & 255));
  fd = sys6(41, 2, 2, 0, 0, 0, 0);
  if (fd < 0) quit(3);
  quit(sys6(44, fd, (long)buf, n, 0, (long)&a, sizeof a) == n ? 0 : 1);
}
__attribute__((naked, noreturn)) void _start(void) {
  __asm__ volatile("xor %ebp, %ebp\n mov %rsp, %rdi\n and $-16, %rsp\n call cmain\n hlt\n");
}
`;

/** Compiles udpsend into `dir` with clang and returns its path. */
export async function buildUdpsend(dir: string): Promise<string> {
  const src = path.join(dir, "udpsend.c");
  const bin = path.join(dir, "udpsend");
  fs.writeFileSync(src, UDPSEND_C);
  await runOk(["clang", "-Os", "-static", "-nostdlib", "-ffreestanding", "-fno-stack-protector", "-fno-builtin", "-fno-pic", "-o", bin, src], { timeoutMs: 60_000 });
  return bin;
}

function ipHex(ip: string): string {
  return ip.split(".").map((o) => Number(o).toString(16).padStart(2, "0")).join("");
}

/** VXLAN header with `vni` + an Ethernet broadcast ARP request "who-has target tell sender". */
export function vxlanArpHex(vni: number, senderIp: string, targetIp: string): string {
  const mac = GUEST_MAC.replace(/:/g, "");
  const vxlan = "08000000" + vni.toString(16).padStart(6, "0") + "00";
  const eth = "ffffffffffff" + mac + "0806";
  const arp = "0001" + "0800" + "06" + "04" + "0001" + mac + ipHex(senderIp) + "000000000000" + ipHex(targetIp);
  return vxlan + eth + arp;
}

// ---------------------------------------------------------------------------------------
// Host side

/** Resolves once tcpdump reports "listening on" (capture armed); rejects after 10 s or on its exit. */
export function tcpdumpListening(child: ChildProcess, label = "tcpdump"): Promise<void> {
  return waitForOutput(child, "listening on", { stream: "stderr", timeoutMs: 10_000, what: label });
}

/** A running tcpdump whose text output is collected. */
export interface Capture {
  stop(): Promise<string[]>;
}

/** Starts `tcpdump -nn -e -l --immediate-mode -i <iface> [-Q dir] <filter>` (in `netns` if given). */
export async function startCapture(netns: string | undefined, iface: string, filter: string[], direction?: "in" | "out"): Promise<Capture> {
  const args = ["tcpdump", "-nn", "-e", "-l", "--immediate-mode", "-i", iface, ...(direction ? ["-Q", direction] : []), ...filter];
  const child = netns ? spawn("ip", ["netns", "exec", netns, ...args], { stdio: ["ignore", "pipe", "pipe"] }) : spawn(args[0]!, args.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  const unregister = registerCleanup(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  let out = "";
  child.stdout.on("data", (b: Buffer) => (out += b.toString()));
  await tcpdumpListening(child, `tcpdump on ${iface}`);
  let lines: string[] | undefined;
  return {
    async stop() {
      if (lines) return lines;
      // Packets still in flight when the guest finished: give them a moment.
      await new Promise((r) => setTimeout(r, 300));
      await stopChild(child, "SIGINT");
      unregister();
      lines = out.split("\n").filter((l) => l.trim() !== "");
      return lines;
    },
  };
}

interface LoggedRequest {
  ev: string;
  remote?: string;
  port?: number;
  local?: string;
  url?: string;
  who?: string;
  result?: string;
}

/** A node process inside a namespace whose stdout is JSON lines. */
interface LoggingProcess {
  log(): LoggedRequest[];
  stop(): void;
}

async function startLoggingNode(netns: string, script: string, args: string[]): Promise<LoggingProcess> {
  const child: ChildProcess = spawn("ip", ["netns", "exec", netns, process.execPath, "-e", script, "--", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  const unregister = registerCleanup(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  let out = "";
  let err = "";
  child.stdout!.on("data", (b: Buffer) => (out += b.toString()));
  child.stderr!.on("data", (b: Buffer) => (err += b.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server in ${netns} not ready: ${err}`)), 10_000);
    const poll = setInterval(() => {
      if (out.includes('"ev":"ready"')) {
        clearInterval(poll);
        clearTimeout(timer);
        resolve();
      }
    }, 20);
    child.once("exit", (code) => {
      clearInterval(poll);
      clearTimeout(timer);
      reject(new Error(`server in ${netns} exited (${code}): ${err}`));
    });
  });
  return {
    log: () =>
      out
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as LoggedRequest),
    stop: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      unregister();
    },
  };
}

// Upstream: HTTP answering the token (logging who asked), and a TCP barrier that answers two
// connections of one round together, or one alone after a wait.
const UPSTREAM_SERVER = `
const http = require("http"), net = require("net");
const [token, httpPort, barrierPort, waitMs] = process.argv.slice(1);
const log = (o) => process.stdout.write(JSON.stringify(o) + "\\n");
let up = 0;
const ready = () => { if (++up === 2) log({ ev: "ready" }); };
http.createServer((req, res) => {
  log({ ev: "http", remote: req.socket.remoteAddress, port: req.socket.remotePort, local: req.socket.localAddress, url: req.url });
  res.end(token + "\\n");
}).listen(Number(httpPort), "0.0.0.0", ready);
const rounds = new Map();
net.createServer({ allowHalfOpen: true }, (s) => {
  let buf = "";
  s.on("error", () => {});
  s.on("data", (d) => {
    buf += d;
    const nl = buf.indexOf("\\n");
    if (nl < 0 || s.seen) return;
    s.seen = true;
    const [, round, who] = buf.slice(0, nl).split(" ");
    log({ ev: "barrier", remote: s.remoteAddress, port: s.remotePort, who, url: round });
    const r = rounds.get(round) || { socks: [], timer: null };
    rounds.set(round, r);
    r.socks.push(s);
    if (r.socks.length >= 2) {
      clearTimeout(r.timer);
      for (const x of r.socks) x.end("together " + r.socks.length + "\\n");
      log({ ev: "barrier-done", url: round, result: "together" });
    } else {
      r.timer = setTimeout(() => { for (const x of r.socks) x.end("alone\\n"); log({ ev: "barrier-done", url: round, result: "alone" }); }, Number(waitMs));
    }
  });
}).listen(Number(barrierPort), "0.0.0.0", ready);
`;

// A listener standing for "something that answers": HTTP with the token, logging who asked.
const TOKEN_SERVER = `
const http = require("http");
const [token, port] = process.argv.slice(1);
http.createServer((req, res) => {
  process.stdout.write(JSON.stringify({ ev: "http", remote: req.socket.remoteAddress, port: req.socket.remotePort, url: req.url }) + "\\n");
  res.end(token + "\\n");
}).listen(Number(port), "0.0.0.0", () => process.stdout.write(JSON.stringify({ ev: "ready" }) + "\\n"));
`;

interface Neighbour {
  dst: string;
  dev?: string;
  lladdr?: string;
  state?: string[];
}

/** `ip ARGS` with room for a busy machine's output (other tests' slots add many entries). */
function ipBig(netns: string | undefined, args: string[]): string {
  return execFileSync("ip", [...(netns ? ["-n", netns] : []), ...args], { encoding: "utf8", maxBuffer: 256 * 1024 * 1024, stdio: ["ignore", "pipe", "pipe"] });
}

function neighbours(netns: string | undefined, args: string[] = []): Neighbour[] {
  const out = ipBig(netns, ["-j", "neigh", "show", ...args]);
  return out.trim() === "" ? [] : (JSON.parse(out) as Neighbour[]);
}

/** What the host could see and reach around the guest's run. */
export interface NeighbourSnapshot {
  /** Root namespace entries on the test's own devices, "dev dst" → lladdr. */
  rootOurs: Record<string, string>;
  /** Root entries (any device) for the addresses the guest claims, "dev dst" → lladdr. */
  rootClaimed: Record<string, string>;
  /** Root entries anywhere whose lladdr is the guest MAC or the spoofed MAC. */
  rootGuestMacs: string[];
  guestB: Record<string, string>;
  slotBTap: Record<string, string>;
  slotATap: Record<string, string>;
}

function toMap(list: Neighbour[], dev?: string): Record<string, string> {
  const m: Record<string, string> = {};
  // `ip -j neigh show dev X` leaves out the device.
  for (const n of list) if (n.lladdr) m[`${n.dev ?? dev ?? "?"} ${n.dst}`] = n.lladdr;
  return m;
}

/** A host-side check that a target is really there (so a guest's "blocked" is the firewall's). */
export interface HostControl {
  target: string;
  probe: "icmp" | "http";
  ok: boolean;
  detail: string;
}

export interface MatrixOutcome {
  params: MatrixParams;
  /** What the guest printed (RESULT lines). */
  markers: Record<string, string>;
  guestOutput: string;
  partner: { markers: Record<string, string>; output: string };
  controls: HostControl[];
  captures: { tapA: string[]; eth0AOut6: string[]; hostVethAIn6: string[]; upstreamIcmp: string[]; vpcOtherArp: string[] };
  upstreamLog: LoggedRequest[];
  /** Requests the root-side and guest B listeners received. */
  listenerLog: LoggedRequest[];
  neighboursBefore: NeighbourSnapshot;
  neighboursAfter: NeighbourSnapshot;
  /** Guest B's HTTP request to the upstream after guest A's run. */
  guestBAfter: ExecResult;
  /** Sender addresses of the crafted ARP requests: the guest's, and the host's control. */
  vxlanMarkers?: { guest: string; control: string };
  hostAddress: string;
  a: SlotAddressing;
  b: SlotAddressing;
}

export interface IsolationLab {
  readonly prefix: string;
  readonly upstream: Upstream;
  readonly daemon: DaemonHandle;
  readonly vpc: VpcGateway | undefined;
  readonly leaseA: Lease;
  readonly leaseB: Lease;
  readonly guestB: GuestStandIn;
  /** Directory of busybox applet links: the stand-in runs the very tools the QEMU guest has. */
  readonly busyboxDir: string;
  params(ifname: string): MatrixParams;
  /** Host-side positive controls; run before begin() so they are not in the captures. */
  hostControls(): Promise<HostControl[]>;
  /** Starts captures and takes the "before" snapshots. */
  begin(): Promise<void>;
  /** Guest B's half of the concurrency check (resolves when its barrier answered). */
  partner(): Promise<ExecResult>;
  finish(guestOutput: string, partner: ExecResult, controls: HostControl[]): Promise<MatrixOutcome>;
  cleanup(): Promise<void>;
}

/** Runs a busybox sh script in a guest stand-in with busybox's applets first on PATH. */
export function runBusybox(guest: GuestStandIn, busyboxDir: string, script: string, timeoutMs = 120_000): Promise<ExecResult> {
  return guest.exec(["env", `PATH=${busyboxDir}`, "busybox", "sh", "-c", script], { timeoutMs });
}

/** ARP sender addresses inside the crafted VXLAN frames (TEST-NET-1), to tell them apart. */
const VXLAN_GUEST_SENDER = "192.0.2.99";
const VXLAN_CONTROL_SENDER = "192.0.2.98";

/** Test-owned interface names on this machine: another test's prefix ("t" + 5). */
const OTHER_TEST_DEVICE = /^t[a-z0-9]{5}(-\d+|u|v)?$/;

interface AddrInfo {
  ifname: string;
  addr_info: Array<{ family: string; local: string }>;
}

/**
 * Creates the upstream (with metadata route and an IPv6 address), the servers, optionally
 * a VPC gateway with two tenants, the daemon, leases A and B, and guest B (a stand-in that
 * serves HTTP). Guest A is the caller's: a stand-in or QEMU on leaseA's slot.
 */
export async function createIsolationLab(opts: { prefix: string; vpc: boolean; barrierWaitSeconds?: number }): Promise<IsolationLab> {
  const { prefix } = opts;
  const token = `netslot-iso-${randomBytes(6).toString("hex")}`;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `netslot-iso-${prefix}-`));
  const httpPort = 8080;
  const barrierPort = 8081;
  const listenerPort = 20000 + Math.floor(Math.random() * 10000);
  const waitSeconds = opts.barrierWaitSeconds ?? 45;
  const cleanups: Array<() => void | Promise<void>> = [];
  const cleanup = async () => {
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch {
        // keep cleaning
      }
    }
    cleanups.length = 0;
  };
  const unregisterTmp = registerCleanup(() => fs.rmSync(tmp, { recursive: true, force: true }));
  cleanups.push(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
    unregisterTmp();
  });

  try {
    // busybox applet links
    const busyboxDir = path.join(tmp, "bin");
    fs.mkdirSync(busyboxDir);
    for (const applet of sh("busybox", ["--list"]).split("\n").filter(Boolean)) {
      fs.symlinkSync("/bin/busybox", path.join(busyboxDir, applet));
    }

    const udpsend = opts.vpc ? fs.readFileSync(await buildUdpsend(tmp)).toString("base64") : "";
    const upstream = createUpstream(prefix, { routeMetadata: true });
    cleanups.push(() => upstream.remove());
    const v6net = `fd${randomBytes(1).toString("hex")}:${randomBytes(2).toString("hex")}`;
    const upstream6 = `${v6net}::2`;
    nsExec(upstream.netns, ["sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 0 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6"]);
    nsExec(upstream.netns, ["ip", "-6", "addr", "add", `${upstream6}/64`, "dev", "eth0", "nodad"]);
    const upstreamServer = await startLoggingNode(upstream.netns, UPSTREAM_SERVER, [token, String(httpPort), String(barrierPort), String(waitSeconds * 1000)]);
    cleanups.push(() => upstreamServer.stop());

    const linkCidr = freeLinkCidr();
    let vpc: VpcGateway | undefined;
    let tenants: VpcTenant[] = [];
    if (opts.vpc) {
      const [cidrA, cidrB] = freeTenantCidrs(2, [linkCidr]);
      const vniBase = 1000 + Math.floor(Math.random() * 100000);
      tenants = [
        { vni: vniBase, cidr: cidrA!, gatewayIp: firstHost(cidrA!), answer: `tenant-a-${token}` },
        { vni: vniBase + 1, cidr: cidrB!, gatewayIp: firstHost(cidrB!), answer: `tenant-b-${token}` },
      ];
      vpc = await createVpcGateway({ prefix, linkCidr, tenants });
      cleanups.push(() => vpc!.remove());
    }

    const daemon = await startDaemon({ prefix, uplink: upstream.uplink, poolSize: 2, linkCidr, ...(vpc ? { vtepRemote: vpc.vtepAddress } : {}) });
    cleanups.push(() => daemon.cleanup());
    const acquire = (t: VpcTenant | undefined, who: string) =>
      daemon.client.acquire({ ttlSeconds: 900, labels: { test: "isolation", guest: who }, bindToProcess: false, autoRenew: false, ...(t ? { network: { vni: t.vni, cidr: t.cidr } } : {}) });
    const leaseA = await acquire(tenants[0], "a");
    const leaseB = await acquire(tenants[1], "b");
    const cidr = parseCidr(daemon.linkCidr);
    const a = slotAddressing(prefix, cidr, leaseA.slot.index);
    const b = slotAddressing(prefix, cidr, leaseB.slot.index);

    const guestB = await startGuestStandIn({ slotNetnsPath: leaseB.slot.netns, name: `${prefix}-gb`, mtu: leaseB.guest.mtu });
    cleanups.push(() => guestB.stop());
    const guestBServer = await startLoggingNode(guestB.netns, TOKEN_SERVER, [token, String(httpPort)]);
    cleanups.push(() => guestBServer.stop());

    // Root-side listeners, only on the addresses of devices this test made.
    const rootLog: LoggedRequest[] = [];
    const rootServers: http.Server[] = [];
    for (const address of [upstream.hostAddress, a.hostAddress, b.hostAddress]) {
      const server = http.createServer((req, res) => {
        const s = req.socket;
        rootLog.push({ ev: "http", remote: s.remoteAddress, port: s.remotePort, local: s.localAddress, url: req.url });
        res.end(`${token}\n`);
      });
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(listenerPort, address, () => resolve());
      });
      rootServers.push(server);
    }
    cleanups.push(() => {
      for (const s of rootServers) {
        s.closeAllConnections();
        s.close();
      }
    });

    // Targets: every one must stay unreachable from guest A.
    const httpTok = (port: number) => ({ port, expect: token });
    const targets: Target[] = [
      { name: "other_guest_outside", address: b.outsideAddress, icmp: true, http: httpTok(httpPort) },
      { name: "other_slot_eth0", address: b.slotAddress, icmp: true },
      { name: "host_uplink", address: upstream.hostAddress, icmp: true, http: httpTok(listenerPort) },
      { name: "host_veth_own", address: a.hostAddress, icmp: true, http: httpTok(listenerPort) },
      { name: "host_veth_other", address: b.hostAddress, icmp: true, http: httpTok(listenerPort) },
      { name: "metadata", address: METADATA_IP, icmp: true, http: httpTok(httpPort) },
      { name: "own_gateway", address: GATEWAY_IP, icmp: true },
      { name: "own_slot_eth0", address: a.slotAddress, icmp: true },
    ];
    if (vpc) {
      const other = tenants[1]!;
      targets.push({ name: "vpc_other", address: other.gatewayIp, icmp: true, http: { port: 80, expect: other.answer } });
    }
    // Any other IPv4 address of the root namespace (all on this machine), bar loopback and
    // other tests' transient devices.
    const known = new Set(targets.map((t) => t.address));
    const rootAddrs = (JSON.parse(ipBig(undefined, ["-4", "-j", "addr", "show"])) as AddrInfo[])
      .filter((l) => !OTHER_TEST_DEVICE.test(l.ifname) && !l.ifname.startsWith(prefix))
      .flatMap((l) => l.addr_info.filter((x) => x.family === "inet").map((x) => x.local))
      .filter((x) => !x.startsWith("127.") && !known.has(x));
    [...new Set(rootAddrs)].slice(0, 8).forEach((address, i) => targets.push({ name: `host_addr${i}`, address, icmp: true }));

    const params = (ifname: string): MatrixParams => ({
      ifname,
      token,
      upstream: { address: upstream.address, address6: upstream6, httpPort, barrierPort },
      ...(vpc ? { ownVpc: { address: tenants[0]!.gatewayIp, expect: tenants[0]!.answer } } : {}),
      targets,
      spoofTestNet: "192.0.2.77",
      spoofNeighbour: b.outsideAddress,
      spoofMac: "02:00:a9:fe:ee:01",
      arpClaims: [GATEWAY_IP, upstream.hostAddress, a.hostAddress, a.slotAddress, b.outsideAddress, b.slotAddress, METADATA_IP],
      guestAddress6: `${v6net}:1::21`,
      barrier: { round: randomBytes(4).toString("hex"), sourcePort: 41000, waitSeconds },
      ...(vpc
        ? { vxlan: { vtep: vpc.vtepAddress, port: 4789, payloadHex: vxlanArpHex(tenants[1]!.vni, VXLAN_GUEST_SENDER, tenants[1]!.gatewayIp), tool: udpsend } }
        : {}),
    });
    let current: MatrixParams | undefined;

    const snapshot = (p: MatrixParams): NeighbourSnapshot => {
      const ourDevs = new Set([upstream.uplink, a.hostVeth, b.hostVeth]);
      const all = neighbours(undefined);
      const claimed = new Set(p.arpClaims);
      const macs = new Set([GUEST_MAC, p.spoofMac]);
      return {
        rootOurs: toMap(all.filter((n) => n.dev !== undefined && ourDevs.has(n.dev))),
        rootClaimed: toMap(all.filter((n) => claimed.has(n.dst))),
        rootGuestMacs: all.filter((n) => n.lladdr !== undefined && macs.has(n.lladdr.toLowerCase())).map((n) => `${n.dev} ${n.dst} ${n.lladdr}`),
        guestB: toMap(neighbours(guestB.netns, ["dev", guestB.ifname]), guestB.ifname),
        slotBTap: toMap(neighbours(b.name, ["dev", "tap0"]), "tap0"),
        slotATap: toMap(neighbours(a.name, ["dev", "tap0"]), "tap0"),
      };
    };

    let captures: { tapA: Capture; eth0AOut6: Capture; hostVethAIn6: Capture; upstreamIcmp: Capture; vpcOtherArp?: Capture } | undefined;
    let before: NeighbourSnapshot | undefined;
    let upstreamMark = 0;
    let listenerMark = 0;

    const lab: IsolationLab = {
      prefix,
      upstream,
      daemon,
      vpc,
      leaseA,
      leaseB,
      guestB,
      busyboxDir,
      params(ifname) {
        current = params(ifname);
        return current;
      },
      async hostControls() {
        const controls: HostControl[] = [];
        for (const t of targets) {
          if (t.icmp && t.address !== GATEWAY_IP && t.address !== a.slotAddress && t.name !== "vpc_other") {
            const r = await run(["ping", "-c", "1", "-W", "2", t.address]);
            controls.push({ target: t.name, probe: "icmp", ok: r.code === 0, detail: r.stdout.split("\n").slice(-3).join(" ") });
          }
          if (t.http && t.name !== "vpc_other") {
            const r = await run(["curl", "-s", "-m", "3", `http://${t.address}:${t.http.port}/host-control`]);
            controls.push({ target: t.name, probe: "http", ok: r.stdout.includes(t.http.expect), detail: r.stdout.trim() || r.stderr.trim() });
          }
        }
        if (vpc) {
          // The other tenant's gateway is really reachable, from its own slot.
          const other = tenants[1]!;
          const r = await runBusybox(guestB, busyboxDir, `timeout 5 wget -q -O - http://${other.gatewayIp}/host-control`, 15_000);
          controls.push({ target: "vpc_other", probe: "http", ok: r.stdout.includes(other.answer), detail: r.stdout.trim() || r.stderr.trim() });
        }
        return controls;
      },
      async begin() {
        const p = current ?? params("eth0");
        // Guest B has talked to its gateway, so its neighbour entry exists before the claims.
        const warm = await runBusybox(guestB, busyboxDir, `timeout 5 wget -q -O - http://${upstream.address}:${httpPort}/p/b-before`, 15_000);
        if (!warm.stdout.includes(token)) throw new Error(`guest B cannot reach the upstream before the run: ${warm.stdout}${warm.stderr}`);
        before = snapshot(p);
        upstreamMark = upstreamServer.log().length;
        listenerMark = rootLog.length + guestBServer.log().length;
        captures = {
          tapA: await startCapture(a.name, "tap0", []),
          eth0AOut6: await startCapture(a.name, "eth0", ["ip6"], "out"),
          hostVethAIn6: await startCapture(undefined, a.hostVeth, ["ip6"], "in"),
          upstreamIcmp: await startCapture(upstream.netns, "eth0", ["icmp", "or", "icmp6"]),
        };
        if (vpc) {
          const other = tenants[1]!;
          captures.vpcOtherArp = await startCapture(vpc.netns, `vx${other.vni}`, ["arp"]);
          // Positive control: the same crafted datagram from the host does land in tenant B.
          const dgram = await import("node:dgram");
          const sock = dgram.createSocket("udp4");
          const payload = Buffer.from(vxlanArpHex(other.vni, VXLAN_CONTROL_SENDER, other.gatewayIp), "hex");
          await new Promise<void>((resolve, reject) => sock.send(payload, 4789, vpc.vtepAddress, (err) => (err ? reject(err) : resolve())));
          sock.close();
        }
      },
      partner() {
        const p = current ?? params("eth0");
        return runBusybox(guestB, busyboxDir, barrierScript(p, "B"), (waitSeconds + 15) * 1000);
      },
      async finish(guestOutput, partner, controls) {
        const p = current ?? params("eth0");
        if (!captures || !before) throw new Error("finish() before begin()");
        const c = captures;
        captures = undefined;
        const [tapA, eth0AOut6, hostVethAIn6, upstreamIcmp, vpcOtherArp] = await Promise.all([
          c.tapA.stop(),
          c.eth0AOut6.stop(),
          c.hostVethAIn6.stop(),
          c.upstreamIcmp.stop(),
          c.vpcOtherArp ? c.vpcOtherArp.stop() : Promise.resolve([]),
        ]);
        const after = snapshot(p);
        const guestBAfter = await runBusybox(guestB, busyboxDir, `timeout 5 wget -q -O - http://${upstream.address}:${httpPort}/p/b-after`, 15_000);
        const listeners = [...rootLog, ...guestBServer.log()];
        return {
          params: p,
          markers: parseMarkers(guestOutput),
          guestOutput,
          partner: { markers: parseMarkers(partner.stdout), output: partner.stdout + partner.stderr },
          controls,
          captures: { tapA, eth0AOut6, hostVethAIn6, upstreamIcmp, vpcOtherArp },
          ...(vpc ? { vxlanMarkers: { guest: VXLAN_GUEST_SENDER, control: VXLAN_CONTROL_SENDER } } : {}),
          upstreamLog: upstreamServer.log().slice(upstreamMark),
          listenerLog: listeners.slice(listenerMark),
          neighboursBefore: before,
          neighboursAfter: after,
          guestBAfter,
          hostAddress: upstream.hostAddress,
          a,
          b,
        };
      },
      cleanup,
    };
    return lab;
  } catch (err) {
    await cleanup();
    throw err;
  }
}

// ---------------------------------------------------------------------------------------
// The guarantees

export interface Guarantee {
  /** Test name (also the row in docs/isolation.md). */
  title: string;
  /** What enforces it. */
  mechanism: string;
  /** Only meaningful with a tenant network (VPC gateway). */
  needsVpc?: boolean;
  check(o: MatrixOutcome): void;
}

function marker(o: MatrixOutcome, name: string): string {
  const v = o.markers[name];
  assert.ok(v !== undefined, `the guest printed no RESULT ${name}; guest output:\n${o.guestOutput}`);
  return v;
}

function controlsFor(o: MatrixOutcome, target: string): HostControl[] {
  return o.controls.filter((c) => c.target === target);
}

/** Every probe of these targets is "blocked", and the host reaches each of them itself. */
function assertBlocked(o: MatrixOutcome, names: string[]): void {
  for (const name of names) {
    const t = o.params.targets.find((x) => x.name === name);
    assert.ok(t, `target ${name} is in the matrix`);
    for (const probe of ["icmp", "http"] as const) {
      if (probe === "icmp" ? !t.icmp : !t.http) continue;
      assert.equal(marker(o, `probe.${name}.${probe}`), "blocked", `guest reached ${name} (${t.address}) by ${probe}`);
    }
    for (const c of controlsFor(o, name)) assert.ok(c.ok, `positive control: the host cannot reach ${name} by ${c.probe} itself (${c.detail})`);
    // And nothing of theirs logged a request for this probe.
    const hits = [...o.listenerLog, ...o.upstreamLog].filter((r) => r.url === `/p/${name}`);
    assert.deepEqual(hits, [], `a listener answered the guest's ${name} probe`);
  }
}

function icmpLengths(lines: string[]): string[] {
  return lines.filter((l) => /ICMP echo request/.test(l)).map((l) => l.replace(/^.*?(\d+\.\d+\.\d+\.\d+) > (\d+\.\d+\.\d+\.\d+).*length (\d+)$/, "$1>$2 len $3"));
}

function hasEcho(lines: string[], size: number, from?: string): boolean {
  return lines.some((l) => /ICMP echo request/.test(l) && l.endsWith(`length ${size + 8}`) && (from === undefined || l.includes(` ${from} > `)));
}

export const GUARANTEES: Guarantee[] = [
  {
    title: "guest reaches an HTTP server upstream, masqueraded to the host's uplink address",
    mechanism: "slot inet forward (tap0 → eth0 accept), eBPF NAT 169.254.0.21 → outside address, root postrouting masquerade",
    check(o) {
      assert.equal(marker(o, "reach.upstream"), "reached", o.guestOutput);
      const hit = o.upstreamLog.find((r) => r.ev === "http" && r.url === "/p/reach");
      assert.ok(hit, `the upstream logged no /p/reach: ${JSON.stringify(o.upstreamLog)}`);
      assert.equal(hit.remote, o.hostAddress, "the upstream sees the masqueraded host address");
    },
  },
  {
    title: "guest cannot reach another slot's guest via its outside address",
    mechanism: "slot inet forward: daddr in the link CIDR dropped; root forward: no slot to slot",
    check: (o) => assertBlocked(o, ["other_guest_outside"]),
  },
  {
    title: "guest cannot reach another slot's eth0 address",
    mechanism: "slot inet forward: daddr in the link CIDR dropped; root forward: no slot to slot",
    check: (o) => assertBlocked(o, ["other_slot_eth0"]),
  },
  {
    title: "guest cannot reach the host's own addresses",
    mechanism: "root input: from slot veths only established/related; slot inet forward: link CIDR dropped (bar the own host address, left to the root table)",
    check(o) {
      const names = o.params.targets.filter((t) => t.name.startsWith("host_")).map((t) => t.name);
      assert.ok(names.includes("host_uplink") && names.includes("host_veth_own"));
      assertBlocked(o, names);
    },
  },
  {
    title: "guest cannot reach the metadata address, which the host itself reaches",
    mechanism: "slot inet forward: daddr 169.254.169.254 dropped; root forward: same, as a second line",
    check(o) {
      assertBlocked(o, ["metadata"]);
      assert.ok(controlsFor(o, "metadata").length === 2, "metadata has host controls for icmp and http");
      const leaked = o.captures.upstreamIcmp.filter((l) => l.includes(`> ${METADATA_IP}: ICMP`));
      assert.deepEqual(leaked, [], "echo requests to the metadata address arrived upstream");
    },
  },
  {
    title: "guest cannot talk to its own slot namespace (gateway and eth0 addresses)",
    mechanism: "slot inet input: everything from tap0 dropped (ARP still answered)",
    check: (o) => assertBlocked(o, ["own_gateway", "own_slot_eth0"]),
  },
  {
    title: "guest reaches its own tenant VPC but not another lease's",
    mechanism: "routing: the tenant route exists only in the leasing slot (into vx0); eBPF VNI rewrite per slot; root 'unreachable' for tenant CIDRs in the test",
    needsVpc: true,
    check(o) {
      assert.equal(marker(o, "reach.own_vpc"), "reached", "guest A reaches its own tenant gateway");
      assertBlocked(o, ["vpc_other"]);
    },
  },
  {
    title: "guest cannot inject VXLAN into another tenant's network by sending to the VTEP",
    mechanism: "MISSING: nothing drops guest traffic to the VTEP; needs a root forward rule (guests' outside addresses never reach --vtep-remote) or a slot forward rule",
    needsVpc: true,
    check(o) {
      assert.ok(o.vxlanMarkers, "the matrix ran without a VPC");
      assert.equal(marker(o, "vxlan.sent"), "3", "udpsend in the guest failed");
      const vtep = o.params.vxlan!.vtep;
      assert.ok(
        o.captures.tapA.some((l) => l.includes(`> ${vtep}.4789: VXLAN`)),
        "the guest's crafted VXLAN is not on tap0",
      );
      const arp = o.captures.vpcOtherArp;
      assert.ok(arp.some((l) => l.includes(`tell ${o.vxlanMarkers!.control},`)), `positive control: the host's crafted VXLAN did not reach tenant B: ${arp.join("\n")}`);
      const leaked = arp.filter((l) => l.includes(`tell ${o.vxlanMarkers!.guest},`));
      assert.deepEqual(
        leaked,
        [],
        "BUG (src/dataplane/ruleset.ts): a guest's UDP to the VTEP with another tenant's VNI is decapsulated in that tenant's network. " +
          "nat_egress (bpf/nat.c) only rewrites the source of guest packets and leaves their VNI alone, the slot forward chain accepts tap0 → eth0 to any " +
          "non-link address, and the root forward chain accepts slot → VTEP. Fix: in rootRuleset, when vtepRemote is set, " +
          "`iifname \"<prefix>-*\" ip saddr <outside range> ip daddr <vtep> drop` (only the slots' own vx0, from the link half, may talk to the VTEP), " +
          "and narrow the 'VXLAN from the VTEP' accept to `ip daddr <link half>` so the VTEP cannot reach guests either.",
      );
    },
  },
  {
    title: "spoofed source IPs are dropped before they leave the slot",
    mechanism: "slot netdev ingress on tap0: ip saddr != 169.254.0.21 drop",
    check(o) {
      assert.equal(marker(o, "spoof.control_before"), "reached", "unspoofed control ping");
      assert.equal(marker(o, "spoof.ip_testnet"), "blocked");
      assert.equal(marker(o, "spoof.ip_neighbour"), "blocked");
      const up = o.captures.upstreamIcmp;
      assert.ok(hasEcho(up, PING_SIZE.controlBefore, o.hostAddress), `the upstream saw no control echo: ${icmpLengths(up).join("; ")}`);
      // The guest really sent them (tap0), with the foreign sources...
      assert.ok(hasEcho(o.captures.tapA, PING_SIZE.spoofIpTestNet, o.params.spoofTestNet), "the guest did not send the TEST-NET spoof");
      assert.ok(hasEcho(o.captures.tapA, PING_SIZE.spoofIpNeighbour, o.params.spoofNeighbour), "the guest did not send the neighbour spoof");
      // ...and nothing of that size arrived upstream, under any source (masquerade included).
      assert.ok(!hasEcho(up, PING_SIZE.spoofIpTestNet), `TEST-NET spoof arrived upstream: ${icmpLengths(up).join("; ")}`);
      assert.ok(!hasEcho(up, PING_SIZE.spoofIpNeighbour), `neighbour spoof arrived upstream: ${icmpLengths(up).join("; ")}`);
    },
  },
  {
    title: "a spoofed source MAC is dropped, the guest's own MAC works again",
    mechanism: "slot netdev ingress on tap0: ether saddr != 02:00:a9:fe:00:15 drop",
    check(o) {
      assert.equal(marker(o, "spoof.mac"), "blocked");
      assert.equal(marker(o, "spoof.control_after"), "reached", "control after restoring the MAC");
      const sent = o.captures.tapA.filter((l) => l.startsWith(o.params.spoofMac) || l.includes(` ${o.params.spoofMac} > `));
      assert.ok(sent.some((l) => l.endsWith(`length ${PING_SIZE.spoofMac + 8}`)), "the guest did not send from the spoofed MAC");
      const up = o.captures.upstreamIcmp;
      assert.ok(!hasEcho(up, PING_SIZE.spoofMac), `spoofed-MAC echo arrived upstream: ${icmpLengths(up).join("; ")}`);
      assert.ok(hasEcho(up, PING_SIZE.controlAfter, o.hostAddress), `control after the MAC spoof did not arrive: ${icmpLengths(up).join("; ")}`);
    },
  },
  {
    title: "ARP claims for the gateway and other addresses change no neighbour table outside the slot",
    mechanism: "slot netdev ingress: ARP sender must be 169.254.0.21/02:00:a9:fe:00:15; slots are routed (no shared L2)",
    check(o) {
      const sent = Number(marker(o, "arp.sent"));
      assert.equal(sent, o.params.arpClaims.length * 2);
      // The claims really went out of the guest.
      for (const claim of o.params.arpClaims) {
        const seen = o.captures.tapA.some((l) => l.includes("ARP") && (l.includes(`tell ${claim},`) || l.includes(`Reply ${claim} is-at`)));
        assert.ok(seen, `no ARP claim for ${claim} seen on tap0`);
      }
      const b = o.neighboursBefore;
      const a = o.neighboursAfter;
      assert.deepEqual(a.rootGuestMacs, [], "root neighbour entries point at the guest's MAC");
      for (const [key, mac] of Object.entries(a.rootClaimed)) {
        assert.equal(mac, b.rootClaimed[key] ?? mac, `root neighbour ${key} changed`);
        assert.notEqual(mac.toLowerCase(), GUEST_MAC, `root neighbour ${key} is the guest`);
      }
      for (const [key, mac] of Object.entries(b.rootOurs)) {
        if (a.rootOurs[key] !== undefined) assert.equal(a.rootOurs[key], mac, `root neighbour ${key} changed`);
      }
      assert.equal(a.guestB[`g0 ${GATEWAY_IP}`], TAP_MAC, `guest B's gateway entry: ${JSON.stringify(a.guestB)}`);
      assert.deepEqual(a.guestB, b.guestB, "guest B's neighbour table changed");
      for (const [key, mac] of Object.entries(a.slotBTap)) assert.equal(mac, GUEST_MAC, `slot B tap0 neighbour ${key}`);
      // Inside slot A too: the claims never reached its ARP table.
      for (const [key, mac] of Object.entries(a.slotATap)) {
        assert.equal(key, `tap0 ${GUEST_IP}`, `slot A learned ${key} → ${mac} from the guest`);
        assert.equal(mac, GUEST_MAC);
      }
      assert.match(o.guestBAfter.stdout, new RegExp(o.params.token), `guest B no longer works: ${o.guestBAfter.stderr}`);
    },
  },
  {
    title: "IPv6 from the guest goes nowhere",
    mechanism: "slot netdev ingress on tap0: ether type ip6 dropped (and IPv6 disabled in the slot namespace)",
    check(o) {
      assert.equal(marker(o, "v6.upstream"), "blocked");
      const sent = o.captures.tapA.filter((l) => l.includes("IPv6"));
      assert.ok(sent.length > 0, "the guest sent no IPv6 on tap0");
      assert.ok(sent.some((l) => l.includes("ff02::1: ICMP6, echo request")), "the guest's ff02::1 echo is not on tap0");
      assert.deepEqual(o.captures.eth0AOut6, [], "IPv6 left slot A's eth0");
      assert.deepEqual(o.captures.hostVethAIn6, [], "IPv6 arrived on the host veth");
      assert.deepEqual(
        o.captures.upstreamIcmp.filter((l) => l.includes("ICMP6") && l.includes("echo request")),
        [],
        "an IPv6 echo arrived upstream",
      );
    },
  },
  {
    title: "two guests with the same IP and MAC on two slots work at once as distinct flows",
    mechanism: "eBPF NAT to each slot's own outside address; root masquerade keeps the flows apart (conntrack in the root namespace)",
    check(o) {
      assert.equal(marker(o, "concurrent"), "together", "guest A's barrier request");
      assert.equal(o.partner.markers["concurrent"], "together", `guest B's barrier request: ${o.partner.output}`);
      const arrivals = o.upstreamLog.filter((r) => r.ev === "barrier" && r.url === o.params.barrier.round);
      assert.equal(arrivals.length, 2, JSON.stringify(o.upstreamLog));
      for (const r of arrivals) assert.equal(r.remote, o.hostAddress, "seen as the masqueraded host address");
      assert.notEqual(arrivals[0]!.port, arrivals[1]!.port, `both flows arrived from the same port: ${JSON.stringify(arrivals)}`);
      assert.deepEqual(arrivals.map((r) => r.who).sort(), ["A", "B"]);
    },
  },
];

/** Human summary of the guest's run (for test diagnostics). */
export function summarize(o: MatrixOutcome): string {
  return Object.entries(o.markers)
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
}
