// Network profiles end to end: a daemon with profiles in its config file, guests (a stand-in
// and a real QEMU guest) on leases that name them, packets to an upstream that owns two
// addresses. A one-slot pool makes every lease reuse the slot the previous one left.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawn } from "node:child_process";
import { createUpstream, isRoot, nsExec, sh, startDaemon, testPrefix, waitFor, type DaemonHandle, type Upstream, skipUnless, startServerIn, type NetnsServer } from "../support/env.js";
import { startGuestStandIn, type GuestStandIn } from "../support/guest.js";
import { ensureGuestImage, qemuAvailable, runGuest } from "../support/qemu.js";
import { NetslotApiError, NetslotClient } from "../../src/sdk/index.js";
import type { Lease } from "../../src/core/types.js";
import { diffFingerprints } from "../../src/dataplane/fingerprint.js";
import { fingerprintOf } from "../../src/dataplane/dataplane.js";
import { loadGolden } from "../../src/dataplane/golden.js";
import { parseCidr } from "../../src/dataplane/topology.js";

const skip = skipUnless(isRoot(), "needs root");
const HTTP_PORT = 8080;
const EGRESS_MBIT = 40;
const INGRESS_MBIT = 120;
/** Within what a TCG-emulated guest moves easily. */
const QEMU_MBIT = 16;
const TOKENS = { sandbox: "sandbox-token-0123456789", plain: "plain-token-0123456789ab" };

/** "upstream\n" for /, N bytes for /bytes/N, logging each download's duration as it ends. */
const UPSTREAM_SERVER = `
const http = require("http");
http.createServer((q, s) => {
  const m = /^\\/bytes\\/(\\d+)$/.exec(q.url);
  if (!m) return s.end("upstream\\n");
  let left = Number(m[1]);
  const chunk = Buffer.alloc(65536, 120);
  const start = performance.now();
  s.setHeader("content-length", left);
  s.on("finish", () => console.log(JSON.stringify({ download: Number(m[1]), ms: performance.now() - start })));
  const pump = () => {
    while (left > 0) {
      const n = Math.min(left, chunk.length);
      left -= n;
      if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return s.once("drain", pump);
    }
    s.end();
  };
  pump();
}).listen(Number(process.argv[1]), "0.0.0.0", () => console.log("listening"));
`;

/**
 * 1,000 allow CIDRs: the upstream's /24 and, overlapping it, the upstream's /32; then
 * filler /24s and /16s with /24s inside them. Denies: `other` (inside the allowed /24) and
 * a /16 over some of the filler allows.
 */
function largeProfile(upstream: string, other: string): { allow: string[]; deny: string[] } {
  const net = upstream.replace(/\.\d+$/, "");
  const allow = [`${net}.0/24`, `${upstream}/32`, "100.80.0.0/16", "100.80.7.0/24"];
  for (let i = 0; allow.length < 1000; i++) allow.push(`100.${64 + (i >> 8)}.${i & 255}.0/24`);
  return { allow, deny: [`${other}/32`, "100.64.0.0/16"] };
}

interface Reach {
  ping: boolean;
  http: boolean;
}

describe("network profiles", { skip }, () => {
  const prefix = testPrefix();
  let upstream: Upstream;
  /** The upstream's second address: same machine, not in the mirror's allow-list. */
  let other: string;
  /** A third address: in the large profile's allowed /24 only. */
  let third: string;
  let server: NetnsServer | undefined;
  let daemon: DaemonHandle;
  let sandbox: NetslotClient;
  let plain: NetslotClient;
  let dir: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), `netslot-profiles-${prefix}-`));
    upstream = createUpstream(prefix);
    other = upstream.address.replace(/\.2$/, ".3");
    nsExec(upstream.netns, ["ip", "addr", "add", `${other}/32`, "dev", "lo"]);
    third = upstream.address.replace(/\.2$/, ".4");
    nsExec(upstream.netns, ["ip", "addr", "add", `${third}/32`, "dev", "lo"]);
    server = await startServerIn(upstream.netns, [process.execPath, "-e", UPSTREAM_SERVER, String(HTTP_PORT)], "listening");
    const configFile = path.join(dir, "config.json");
    fs.writeFileSync(
      configFile,
      JSON.stringify({
        profiles: {
          isolated: { egress: { allow: [] } },
          mirror: { egress: { allow: [`${upstream.address}/32`] } },
          nodeny: { egress: { deny: [other] } },
          slow: { bandwidth: { egressMbit: EGRESS_MBIT, ingressMbit: INGRESS_MBIT } },
          download: { bandwidth: { ingressMbit: QEMU_MBIT } },
          both: { egress: { allow: [`${upstream.address}/32`], deny: ["192.0.2.0/24"] }, bandwidth: { egressMbit: 10 } },
          large: { egress: largeProfile(upstream.address, other) },
        },
        consumers: [
          { name: "sandbox", token: TOKENS.sandbox, profiles: ["isolated", "mirror", "nodeny", "slow", "download", "both", "large"] },
          { name: "plain", token: TOKENS.plain, profiles: [] },
        ],
      }),
    );
    daemon = await startDaemon({ prefix, uplink: upstream.uplink, poolSize: 1, extraArgs: ["--config", configFile] });
    sandbox = new NetslotClient({ socketPath: daemon.socket, token: TOKENS.sandbox });
    plain = new NetslotClient({ socketPath: daemon.socket, token: TOKENS.plain });
  });

  after(async () => {
    sandbox?.close();
    plain?.close();
    await daemon?.cleanup();
    server?.stop();
    upstream?.remove();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  async function reach(guest: GuestStandIn, address: string): Promise<Reach> {
    const ping = await guest.exec(["ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", address]);
    const http = await guest.exec(["curl", "-s", "--max-time", "2", `http://${address}:${HTTP_PORT}/`]);
    return { ping: ping.code === 0, http: http.code === 0 && http.stdout === "upstream\n" };
  }

  /** Leases with `profile`, runs `fn` with a stand-in guest, releases and waits for the scrub. */
  async function withLease<T>(profile: string | undefined, fn: (guest: GuestStandIn, lease: Lease) => Promise<T>): Promise<T> {
    const lease = await sandbox.acquire({ ...(profile ? { profile } : {}), bindToProcess: false, autoRenew: false });
    assert.equal(lease.profile, profile);
    const guest = await startGuestStandIn({ slotNetnsPath: lease.slot.netns, name: `${prefix}-g`, mtu: lease.guest.mtu });
    try {
      return await fn(guest, lease);
    } finally {
      await guest.stop();
      await sandbox.release(lease.id);
      await waitFor(async () => (await sandbox.pool()).free === 1, 30_000);
    }
  }

  function scrubOutcomes(metrics: string): Record<string, number> {
    const out: Record<string, number> = {};
    for (const m of metrics.matchAll(/^netslot_scrub_outcomes_total\{outcome="(\w+)"\} (\d+)$/gm)) out[m[1]!] = Number(m[2]);
    return out;
  }

  it("an unknown profile is invalid_request naming /profile; another consumer's is profile_forbidden", async () => {
    await assert.rejects(sandbox.acquire({ profile: "nope", bindToProcess: false }), (err: unknown) => {
      assert.ok(err instanceof NetslotApiError);
      assert.equal(err.code, "invalid_request");
      assert.equal(err.status, 400);
      assert.equal(err.field, "/profile");
      assert.match(err.detail, /no profile "nope"/);
      return true;
    });
    await assert.rejects(plain.acquire({ profile: "isolated", bindToProcess: false }), (err: unknown) => {
      assert.ok(err instanceof NetslotApiError);
      assert.equal(err.code, "profile_forbidden");
      assert.equal(err.status, 403);
      return true;
    });
    // Neither changed anything: the one slot is still free.
    assert.equal((await sandbox.pool()).free, 1);
  });

  it("isolated reaches nothing; the host still reaches the guest", async () => {
    await withLease("isolated", async (guest, lease) => {
      assert.deepEqual(await reach(guest, upstream.address), { ping: false, http: false });
      assert.deepEqual(await reach(guest, other), { ping: false, http: false });
      // Replies to the host pass: the host pings the guest under its outside address.
      sh("ping", ["-n", "-c", "1", "-W", "2", lease.slot.outsideAddress]);
    });
  });

  it("a lease without a profile on the slot that served isolated reaches the internet again; the scrub left it clean", async () => {
    const before = scrubOutcomes(await sandbox.metrics());
    let netns = "";
    await withLease(undefined, async (guest, lease) => {
      netns = path.basename(lease.slot.netns);
      assert.deepEqual(await reach(guest, upstream.address), { ping: true, http: true });
      assert.deepEqual(await reach(guest, other), { ping: true, http: true });
    });
    const sets = nsExec(netns, ["nft", "-j", "list", "table", "inet", "netslot"]);
    const set = (JSON.parse(sets) as { nftables: Array<{ set?: { name: string; elem?: unknown[] } }> }).nftables.find((o) => o.set?.name === "egress_admit");
    assert.ok(set, "the admissions set exists");
    assert.equal(set.set!.elem, undefined, "the admissions set is empty");
    const golden = loadGolden(daemon.stateDir)!;
    const index = Number(/(\d+)$/.exec(netns)![1]);
    const diff = diffFingerprints(golden, fingerprintOf(prefix, parseCidr(daemon.linkCidr), index));
    assert.deepEqual(diff.filter((l) => l.startsWith("bpf")), [], "no eBPF policy entry");
    const afterScrub = scrubOutcomes(await sandbox.metrics());
    assert.equal(afterScrub["rebuilt"] ?? 0, before["rebuilt"] ?? 0, "no scrub needed a rebuild");
    assert.equal(afterScrub["quarantined"] ?? 0, 0);
  });

  it("mirror reaches its CIDR and not another address of the same upstream", async () => {
    await withLease("mirror", async (guest) => {
      assert.deepEqual(await reach(guest, upstream.address), { ping: true, http: true });
      assert.deepEqual(await reach(guest, other), { ping: false, http: false });
    });
  });

  it("a 1,000-CIDR allow-list with overlapping prefixes and a deny inside an allow: allowed addresses pass, the denied one does not", async () => {
    await withLease("large", async (guest) => {
      assert.deepEqual(await reach(guest, upstream.address), { ping: true, http: true }, "allowed by a /32 and the /24 over it");
      assert.deepEqual(await reach(guest, third), { ping: true, http: true }, "allowed by the /24 only");
      assert.deepEqual(await reach(guest, other), { ping: false, http: false }, "denied /32 inside the allowed /24");
    });
  });

  it("a deny-list blocks only what it names", async () => {
    await withLease("nodeny", async (guest) => {
      assert.deepEqual(await reach(guest, upstream.address), { ping: true, http: true });
      assert.deepEqual(await reach(guest, other), { ping: false, http: false });
    });
  });

  it("the fingerprint covers a lease's eBPF policy and rate entries; after release the slot equals a fresh one", async () => {
    const golden = loadGolden(daemon.stateDir);
    assert.ok(golden, "the daemon saved a golden fingerprint");
    const cidr = parseCidr(daemon.linkCidr);
    const lease = await sandbox.acquire({ profile: "both", bindToProcess: false, autoRenew: false });
    const diff = diffFingerprints(golden, fingerprintOf(prefix, cidr, lease.slot.index));
    assert.ok(diff.some((l) => /egress policy/.test(l)), `policy entry shows: ${diff.join("; ")}`);
    assert.ok(diff.some((l) => /rate limit/.test(l)), `rate entry shows: ${diff.join("; ")}`);
    await sandbox.release(lease.id);
    await waitFor(async () => (await sandbox.pool()).free === 1, 30_000);
    assert.deepEqual(diffFingerprints(golden, fingerprintOf(prefix, cidr, lease.slot.index)), []);
  });

  it("an admission a tenant adds by hand on a lease without a profile is caught by the fingerprint and removed: the next isolated lease reaches nothing", async () => {
    await withLease(undefined, async (_guest, lease) => {
      // What a guest that escaped into its VMM (CAP_NET_ADMIN in the slot) could do: plant
      // an admitted address for the next tenant, whose frames to it would then be marked.
      nsExec(path.basename(lease.slot.netns), ["nft", "add", "element", "inet", "netslot", "egress_admit", `{ ${upstream.address} }`]);
    });
    await withLease("isolated", async (guest) => {
      assert.deepEqual(await reach(guest, upstream.address), { ping: false, http: false });
    });
  });

  it("a bandwidth profile holds one TCP flow each way at its rate ±10 % (iperf3); release lifts it", async () => {
    const measure = async (guest: GuestStandIn, reverse: boolean) => {
      const port = String(5300 + Math.floor(Math.random() * 500));
      const server = spawn("ip", ["netns", "exec", upstream.netns, "iperf3", "-s", "-1", "-p", port], { stdio: "ignore" });
      try {
        await waitFor(() => nsExec(upstream.netns, ["ss", "-Hltn", `sport = :${port}`]).trim() !== "", 5000);
        const r = await guest.exec(["iperf3", "-c", upstream.address, "-p", port, "-t", "5", "-J", ...(reverse ? ["-R"] : [])], { timeoutMs: 30_000 });
        const doc = JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number } } };
        return doc.end.sum_received.bits_per_second / 1e6;
      } finally {
        server.kill("SIGKILL");
      }
    };
    const rates = await withLease("slow", async (guest) => ({ up: await measure(guest, false), down: await measure(guest, true) }));
    process.stderr.write(`# [${prefix}] bandwidth: upload ${rates.up.toFixed(1)} Mbit/s (set ${EGRESS_MBIT}), download ${rates.down.toFixed(1)} Mbit/s (set ${INGRESS_MBIT})\n`);
    assert.ok(Math.abs(rates.up / EGRESS_MBIT - 1) <= 0.1, `upload ${rates.up.toFixed(1)} Mbit/s, set ${EGRESS_MBIT}`);
    assert.ok(Math.abs(rates.down / INGRESS_MBIT - 1) <= 0.1, `download ${rates.down.toFixed(1)} Mbit/s, set ${INGRESS_MBIT}`);
    // The next lease on the slot has no limit: well above both rates.
    const free = await withLease(undefined, async (guest) => measure(guest, true));
    assert.ok(free > INGRESS_MBIT * 2, `after release: ${free.toFixed(1)} Mbit/s`);
  });

  it("a real QEMU guest under mirror reaches its CIDR only; under isolated nothing; under the 1,000-CIDR list not its denied address", { skip: qemuAvailable() ? false : "qemu-system-x86_64 is not installed" }, async () => {
    const image = await ensureGuestImage();
    const script = (targets: Record<string, string>) =>
      Object.entries(targets)
        .map(
          ([name, ip]) =>
            `if ping -c 1 -W 2 ${ip} >/dev/null 2>&1; then echo "RESULT ping_${name}=ok"; else echo "RESULT ping_${name}=blocked"; fi\n` +
            `if timeout 4 wget -q -O - http://${ip}:${HTTP_PORT}/ 2>/dev/null | grep -q upstream; then echo "RESULT http_${name}=ok"; else echo "RESULT http_${name}=blocked"; fi\n`,
        )
        .join("");
    for (const [profile, expect] of [
      ["mirror", { ping_allowed: "ok", http_allowed: "ok", ping_other: "blocked", http_other: "blocked" }],
      ["isolated", { ping_allowed: "blocked", http_allowed: "blocked", ping_other: "blocked", http_other: "blocked" }],
      // other: a deny inside the large list's allowed /24.
      ["large", { ping_allowed: "ok", http_allowed: "ok", ping_other: "blocked", http_other: "blocked" }],
    ] as const) {
      const lease = await sandbox.acquire({ profile, bindToProcess: false, autoRenew: false });
      try {
        const run = await runGuest({ slotNetnsPath: lease.slot.netns, script: script({ allowed: upstream.address, other }), mtu: lease.guest.mtu, image, timeoutMs: 90_000 });
        const got = Object.fromEntries(Object.keys(expect).map((k) => [k, run.markers[k]]));
        assert.deepEqual(got, expect, `${profile}: ${run.checkOutput}`);
      } finally {
        await sandbox.release(lease.id);
        await waitFor(async () => (await sandbox.pool()).free === 1, 30_000);
      }
    }
  });

  it("a real QEMU guest downloads at its profile's rate ±10 %", { skip: qemuAvailable() ? false : "qemu-system-x86_64 is not installed" }, async () => {
    const image = await ensureGuestImage();
    const bytes = 12_000_000;
    const lease = await sandbox.acquire({ profile: "download", bindToProcess: false, autoRenew: false });
    try {
      // Timed by the receiver (the sender finishes when its socket buffer takes the last byte).
      const script =
        `t0=$(cut -d' ' -f1 /proc/uptime)\n` +
        `if timeout 60 wget -q -O /dev/null http://${upstream.address}:${HTTP_PORT}/bytes/${bytes}; then echo "RESULT download=ok"; else echo "RESULT download=failed"; fi\n` +
        `t1=$(cut -d' ' -f1 /proc/uptime)\necho "RESULT t0=$t0"\necho "RESULT t1=$t1"\n`;
      const run = await runGuest({ slotNetnsPath: lease.slot.netns, script, mtu: lease.guest.mtu, image, timeoutMs: 120_000 });
      assert.equal(run.markers["download"], "ok", run.checkOutput);
      const ms = (Number(run.markers["t1"]) - Number(run.markers["t0"])) * 1000;
      const mbit = (bytes * 8) / (ms / 1000) / 1e6;
      process.stderr.write(`# [${prefix}] qemu guest download: ${bytes} bytes in ${Math.round(ms)} ms = ${mbit.toFixed(1)} Mbit/s (set ${QEMU_MBIT})\n`);
      assert.ok(Math.abs(mbit / QEMU_MBIT - 1) <= 0.1, `${mbit.toFixed(1)} Mbit/s, set ${QEMU_MBIT}`);
    } finally {
      await sandbox.release(lease.id);
      await waitFor(async () => (await sandbox.pool()).free === 1, 30_000);
    }
  });
});
