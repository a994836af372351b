// The IPv6 suites' fixture (ipv6.test, ipv6-qemu.test): an upstream with an IPv6 /64 serving
// SERVER6, a daemon with --link-cidr6 and the `dual` profile, and a guest stand-in's IPv6 set
// up as a VM would.
import assert from "node:assert/strict";
import { before } from "node:test";
import { daemonSuite, freeLinkCidr6, startServerIn, type DaemonSuite, type NetnsServer } from "./env.js";
import type { GuestStandIn } from "./guest.js";
import { GATEWAY_IP6, GUEST_IP6 } from "../../src/dataplane/topology.js";
import type { Lease } from "../../src/core/types.js";

/** The port SERVER6 listens on. */
export const SERVER6_PORT = 8086;

/** Answers "v6 <remote address>" on [::]:port (its argument) and logs each request as a JSON line. */
export const SERVER6 = `
const http = require("http");
http.createServer((q, s) => {
  console.log(JSON.stringify({ url: q.url, remote: q.socket.remoteAddress }));
  s.end("v6 " + q.socket.remoteAddress + "\\n");
}).listen(Number(process.argv[1]), "::", () => console.log("listening"));
`;

export interface Ipv6Suite extends DaemonSuite {
  linkCidr6: string;
  /** What the upstream's SERVER6 logged so far. */
  serverLog: () => string;
}

/**
 * daemonSuite with IPv6: the upstream has an IPv6 /64 and serves SERVER6 on SERVER6_PORT,
 * the daemon runs with a free --link-cidr6 and a config with the `dual` profile
 * (`{ ipv6: true }`) and `profiles`.
 */
export function ipv6Suite(opts: { poolSize: number; profiles?: Record<string, object>; teardown?: () => unknown }): Ipv6Suite {
  const linkCidr6 = freeLinkCidr6();
  let server: NetnsServer | undefined;
  const suite = daemonSuite({
    poolSize: opts.poolSize,
    upstream: { ipv6: true },
    config: { profiles: { dual: { ipv6: true }, ...opts.profiles } },
    extraArgs: ["--link-cidr6", linkCidr6],
    async teardown() {
      try {
        await opts.teardown?.();
      } finally {
        server?.stop();
      }
    },
  });
  before(async () => {
    server = await startServerIn(suite.upstream.netns, [process.execPath, "-e", SERVER6, String(SERVER6_PORT)], "listening");
  });
  return { ...suite, linkCidr6, serverLog: () => server?.output() ?? "" };
}

/** Gives a stand-in guest the lease's IPv6 as a VM would configure it (address, on-link default route); the default addresses for a lease without IPv6. */
export async function configureIpv6(guest: GuestStandIn, lease: Lease): Promise<void> {
  const v6 = lease.guest.ipv6 ?? { ip: GUEST_IP6, prefixLength: 64, gateway: GATEWAY_IP6 };
  const r = await guest.exec([
    "sh",
    "-c",
    `sysctl -qw net.ipv6.conf.g0.disable_ipv6=0 net.ipv6.conf.g0.accept_dad=0 && ip -6 addr add ${v6.ip}/${v6.prefixLength} dev g0 nodad && ip -6 route add default via ${v6.gateway} dev g0`,
  ]);
  assert.equal(r.code, 0, r.stderr);
}

/** Runs SERVER6 in a stand-in guest, in the background: a probe that reached it would be answered and logged there. */
export async function serveIpv6In(guest: GuestStandIn): Promise<void> {
  await guest.exec(["sh", "-c", `nohup ${process.execPath} -e '${SERVER6.replace(/'/g, "'\\''")}' ${SERVER6_PORT} > /dev/null 2>&1 &`]);
}
