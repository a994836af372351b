// A stand-in for a tenant VPC: a namespace `<prefix>-vpc` that terminates VXLAN for one or
// more tenants, each with its own VNI, CIDR, gateway address and a tiny HTTP server, so
// tests can check that a slot's tunnel reaches its own tenant and nobody else's.
// Test support only: spawns `ip`, `node` and `tcpdump` freely.
//
//   root namespace                        <prefix>-vpc
//   <prefix>v 198.19.N.1/24 ◀──veth──▶ eth0 198.19.N.2/24 (the VTEP: --vtep-remote)
//   unreachable <tenant cidr> (so a       vx<vni>  VXLAN id <vni>, local 198.19.N.2, learning
//   cidr not routed into a tunnel dies      <gatewayIp>/<len>, HTTP :80 answering `answer`
//   on the host, never leaves it)         route <linkCidr lower half> via 198.19.N.1
//                                         rule from <gatewayIp> → table 100+i:
//                                           169.254.0.21 via 169.254.0.22 dev vx<vni> onlink
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { exited, nsExec, sh, waitForOutput } from "./env.js";
import { registerCleanup } from "./guest.js";
import { GATEWAY_IP, GUEST_IP, linkRange, parseCidr, intToIp, ipToInt, cidrsOverlap } from "../../src/dataplane/topology.js";

export const VXLAN_PORT = 4789;

export interface VpcTenant {
  /** VXLAN network identifier, 1..16777215. */
  vni: number;
  /** The tenant's IPv4 network (network address), e.g. 10.151.1.0/24. */
  cidr: string;
  /** An address inside `cidr` the gateway owns and serves HTTP on (port 80). */
  gatewayIp: string;
  /** Body of every HTTP answer from this tenant's server. */
  answer: string;
}

export interface VpcGatewayOptions {
  /** The test's prefix: names `<prefix>-vpc` (namespace) and `<prefix>v` (root-side veth). */
  prefix: string;
  /** The daemon's --link-cidr: its lower half (the slots' eth0 addresses) is routed back via the host. */
  linkCidr: string;
  tenants: VpcTenant[];
  /** MTU of the veth pair; default 1400. */
  mtu?: number;
}

/** One VXLAN packet seen on the gateway's eth0. */
export interface VxlanPacket {
  /** Outer source and destination addresses. */
  src: string;
  dst: string;
  vni: number;
}

export interface VxlanCapture {
  /** Stops tcpdump and returns the distinct VNIs seen on the wire, ascending. */
  stop(): Promise<number[]>;
  /** Every VXLAN packet parsed so far (complete after stop()). */
  packets(): VxlanPacket[];
  /** Raw tcpdump output so far (for assertion messages). */
  raw(): string;
}

export interface VpcGateway {
  /** Namespace name, `<prefix>-vpc`. */
  readonly netns: string;
  /** Root-side veth, `<prefix>v`. */
  readonly veth: string;
  /** The root side's address, 198.19.N.1. */
  readonly hostAddress: string;
  /** The gateway's VTEP address, 198.19.N.2: pass it as the daemon's --vtep-remote. */
  readonly vtepAddress: string;
  readonly tenants: readonly VpcTenant[];
  /**
   * Starts `tcpdump -i eth0 --immediate-mode -nn -l -v udp port 4789` in the gateway (both
   * directions); resolves once it listens. Immediate mode: stop() sees every packet so far.
   */
  startCapture(): Promise<VxlanCapture>;
  /** Kills the servers and captures, removes the unreachable routes, the veth and the namespace. Idempotent. */
  remove(): void;
}

/** First usable host of a CIDR (network address + 1), e.g. the tenant gateway's address. */
export function firstHost(cidr: string): string {
  return intToIp(parseCidr(cidr).base + 1);
}

/**
 * `count` distinct /24 tenant networks, each in its own 10.x.0.0/16 that no route on this
 * machine (any table) mentions and that does not overlap `exclude` (e.g. the daemon's
 * --link-cidr, chosen but not yet routed).
 */
export function freeTenantCidrs(count: number, exclude: readonly string[] = []): string[] {
  const routes = sh("ip", ["-4", "route", "show", "table", "all"]);
  const excluded = exclude.map((c) => parseCidr(c));
  const chosen: string[] = [];
  for (let attempt = 0; attempt < 1000 && chosen.length < count; attempt++) {
    const second = 100 + Math.floor(Math.random() * 150);
    const third = 1 + Math.floor(Math.random() * 250);
    const cidr = `10.${second}.${third}.0/24`;
    const parsed = parseCidr(cidr);
    if (routes.includes(`10.${second}.`)) continue;
    if (excluded.some((e) => cidrsOverlap(e, parsed))) continue;
    if (chosen.some((c) => c.startsWith(`10.${second}.`))) continue;
    chosen.push(cidr);
  }
  if (chosen.length < count) throw new Error(`no ${count} free 10.x.y.0/24 tenant networks`);
  return chosen;
}

function freeOctet(): number {
  const routes = sh("ip", ["-4", "route", "show", "table", "all"]);
  const addrs = sh("ip", ["-4", "-o", "addr", "show"]);
  for (let attempt = 0; attempt < 100; attempt++) {
    const n = 1 + Math.floor(Math.random() * 250);
    if (!routes.includes(`198.19.${n}.`) && !addrs.includes(`198.19.${n}.`)) return n;
  }
  throw new Error("no free 198.19.N.0/24 for the VPC gateway");
}

function validateTenants(tenants: readonly VpcTenant[]): void {
  const seen = new Set<number>();
  for (const t of tenants) {
    if (!Number.isInteger(t.vni) || t.vni < 1 || t.vni > 16777215) throw new Error(`bad tenant VNI ${t.vni}`);
    if (seen.has(t.vni)) throw new Error(`duplicate tenant VNI ${t.vni}`);
    seen.add(t.vni);
    const cidr = parseCidr(t.cidr);
    const gw = ipToInt(t.gatewayIp);
    if (gw <= cidr.base || gw >= cidr.base + cidr.size - 1) throw new Error(`gateway ${t.gatewayIp} is not a host of ${t.cidr}`);
  }
  for (let i = 0; i < tenants.length; i++) {
    for (let j = i + 1; j < tenants.length; j++) {
      if (cidrsOverlap(parseCidr(tenants[i]!.cidr), parseCidr(tenants[j]!.cidr))) {
        throw new Error(`tenant networks ${tenants[i]!.cidr} and ${tenants[j]!.cidr} overlap`);
      }
    }
  }
}

// The HTTP server inside the gateway: bound to the tenant gateway address only.
const SERVER_SCRIPT = `
const http = require("http");
const [ip, answer] = process.argv.slice(1);
http.createServer((req, res) => { res.setHeader("content-type", "text/plain"); res.end(answer); })
  .listen(80, ip, () => console.log("ready"));
`;

/** Parses `tcpdump -nn -v` output for VXLAN packets (outer addresses and VNI). */
export function parseVxlanDump(text: string): VxlanPacket[] {
  const out: VxlanPacket[] = [];
  const re = /(\d+\.\d+\.\d+\.\d+)\.\d+ > (\d+\.\d+\.\d+\.\d+)\.\d+: VXLAN[^\n]*?vni (\d+)/g;
  for (const m of text.matchAll(re)) out.push({ src: m[1]!, dst: m[2]!, vni: Number(m[3]) });
  return out;
}

/**
 * Creates the gateway namespace, its veth, one VXLAN device + HTTP server per tenant, and
 * an `unreachable` route in the root namespace for every tenant CIDR. Undoes itself on failure.
 */
export async function createVpcGateway(opts: VpcGatewayOptions): Promise<VpcGateway> {
  const { prefix } = opts;
  validateTenants(opts.tenants);
  const tenants = opts.tenants.map((t) => ({ ...t }));
  const netns = `${prefix}-vpc`;
  const veth = `${prefix}v`;
  const n = freeOctet();
  const hostAddress = `198.19.${n}.1`;
  const vtepAddress = `198.19.${n}.2`;
  const mtu = String(opts.mtu ?? 1400);
  const servers: ChildProcess[] = [];
  const captures = new Set<ChildProcess>();
  const captureFiles = new Set<string>();
  const unreachable: string[] = [];
  let removed = false;

  const remove = (): void => {
    if (removed) return;
    removed = true;
    for (const child of [...servers, ...captures]) if (!exited(child)) child.kill("SIGKILL");
    for (const file of captureFiles) fs.rmSync(file, { force: true });
    for (const cidr of unreachable) sh("ip", ["route", "del", "unreachable", cidr], { allowFail: true });
    sh("ip", ["link", "del", veth], { allowFail: true });
    sh("ip", ["netns", "del", netns], { allowFail: true });
    unregister();
  };
  const unregister = registerCleanup(remove);

  try {
    // Safety first: a tenant CIDR not routed into a tunnel must die on the host, not leave it.
    for (const t of tenants) {
      sh("ip", ["route", "add", "unreachable", t.cidr]);
      unreachable.push(t.cidr);
    }
    sh("ip", ["netns", "add", netns]);
    // rp_filter off in the gateway before any device exists: the guest address 169.254.0.21
    // comes from every tenant's tunnel, and the per-tenant policy routes send the replies.
    // IPv6 off: no link-local chatter on the tunnels.
    nsExec(netns, [
      "sh",
      "-c",
      "for f in all default; do echo 0 > /proc/sys/net/ipv4/conf/$f/rp_filter; echo 1 > /proc/sys/net/ipv6/conf/$f/disable_ipv6; done",
    ]);
    sh("ip", ["link", "add", veth, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "netns", netns, "mtu", mtu]);
    sh("ip", ["addr", "add", `${hostAddress}/24`, "dev", veth]);
    sh("ip", ["link", "set", veth, "up"]);
    // Forwarding is decided by the input device: VXLAN from the gateway to the slots enters here.
    fs.writeFileSync(`/proc/sys/net/ipv4/conf/${veth}/forwarding`, "1");
    const batch = [
      "link set lo up",
      `addr add ${vtepAddress}/24 dev eth0`,
      "link set eth0 up",
      `route add ${linkRange(parseCidr(opts.linkCidr))} via ${hostAddress}`,
    ];
    tenants.forEach((t, i) => {
      const dev = `vx${t.vni}`;
      const len = parseCidr(t.cidr).prefixLength;
      const table = 100 + i;
      batch.push(
        `link add ${dev} type vxlan id ${t.vni} local ${vtepAddress} dstport ${VXLAN_PORT} dev eth0 learning`,
        `addr add ${t.gatewayIp}/${len} dev ${dev}`,
        `link set ${dev} up`,
        `rule add from ${t.gatewayIp} table ${table}`,
        // Via the slot's gateway address, not straight to the guest: the slot routes the
        // guest's packets into vx0, so the only neighbour the gateway can resolve is the
        // one the slot's ARP request announced (the tap address, 169.254.0.22); an ARP
        // request for 169.254.0.21 would be flooded to no VTEP (no default FDB entry) and
        // the slot would not answer it anyway.
        `route add ${GUEST_IP}/32 via ${GATEWAY_IP} dev ${dev} onlink table ${table}`,
      );
    });
    sh("ip", ["-n", netns, "-batch", "-"], { input: batch.join("\n") + "\n" });

    for (const t of tenants) {
      const child = spawn("ip", ["netns", "exec", netns, process.execPath, "-e", SERVER_SCRIPT, t.gatewayIp, t.answer], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      servers.push(child);
      await waitForOutput(child, "ready\n", { timeoutMs: 10_000, what: `HTTP server for VNI ${t.vni}` });
      child.stdout?.resume();
      child.stderr?.resume();
    }
  } catch (err) {
    remove();
    throw err;
  }

  let captureCount = 0;
  const startCapture = async (): Promise<VxlanCapture> => {
    if (removed) throw new Error("VPC gateway already removed");
    const file = path.join(os.tmpdir(), `${netns}-cap${captureCount++}-${process.pid}.txt`);
    captureFiles.add(file);
    const fd = fs.openSync(file, "w");
    let child: ChildProcess;
    try {
      child = spawn("ip", ["netns", "exec", netns, "tcpdump", "-i", "eth0", "--immediate-mode", "-nn", "-l", "-v", "udp", "port", String(VXLAN_PORT)], {
        stdio: ["ignore", fd, "pipe"],
      });
    } finally {
      fs.closeSync(fd);
    }
    captures.add(child);
    await waitForOutput(child, "listening on", { stream: "stderr", timeoutMs: 10_000, what: "tcpdump" });
    child.stderr?.resume();
    const read = (): string => (fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "");
    let final: string | undefined;
    return {
      async stop() {
        if (final === undefined) {
          if (!exited(child)) {
            const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
            // SIGINT: tcpdump flushes what it has captured before exiting.
            child.kill("SIGINT");
            const timer = setTimeout(() => child.kill("SIGKILL"), 3_000);
            await gone;
            clearTimeout(timer);
          }
          captures.delete(child);
          final = read();
          fs.rmSync(file, { force: true });
          captureFiles.delete(file);
        }
        return [...new Set(parseVxlanDump(final).map((p) => p.vni))].sort((a, b) => a - b);
      },
      packets: () => parseVxlanDump(final ?? read()),
      raw: () => final ?? read(),
    };
  };

  return { netns, veth, hostAddress, vtepAddress, tenants, startCapture, remove };
}
