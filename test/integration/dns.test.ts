// egress.allowDomains end to end: a daemon whose DNS forwarder asks a DNS server started in
// the test's upstream namespace (fixed A records, no internet), a guest stand-in that asks
// its lease's guest.dns, and packets to the addresses the answers name.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawn, type ChildProcess } from "node:child_process";
import { createUpstream, isRoot, nsExec, startDaemon, testPrefix, waitFor, type DaemonHandle, type Upstream } from "../support/env.js";
import { startGuestStandIn, type GuestStandIn } from "../support/guest.js";
import { NetslotClient } from "../../src/sdk/index.js";
import { diffFingerprints } from "../../src/dataplane/fingerprint.js";
import { fingerprintOf } from "../../src/dataplane/dataplane.js";
import { loadGolden } from "../../src/dataplane/golden.js";
import { parseCidr } from "../../src/dataplane/topology.js";
import { GRACE_SECONDS } from "../../src/daemon/dns-forwarder.js";

const skip = !isRoot() ? "needs root" : false;
const HTTP_PORT = 8080;
const TOKEN = "sandbox-token-0123456789";
const TTL = 1;

/** A DNS server: argv[1] = address, argv[2] = JSON {name: address}; answers A with TTL argv[3], NXDOMAIN otherwise. */
const DNS_SERVER = `
const dgram = require("dgram");
const records = JSON.parse(process.argv[2]);
const s = dgram.createSocket("udp4");
s.on("message", (q, r) => {
  let p = 12; const labels = [];
  while (q[p]) { labels.push(q.toString("latin1", p + 1, p + 1 + q[p])); p += 1 + q[p]; }
  const qend = p + 5;
  const addr = records[labels.join(".").toLowerCase()];
  const head = Buffer.from(q.subarray(0, qend));
  head.writeUInt16BE(0x8180 | (addr ? 0 : 3), 2);
  head.writeUInt16BE(addr ? 1 : 0, 6); head.writeUInt16BE(0, 8); head.writeUInt16BE(0, 10);
  const parts = [head];
  if (addr) {
    const rr = Buffer.alloc(16);
    rr.writeUInt16BE(0xc00c, 0); rr.writeUInt16BE(1, 2); rr.writeUInt16BE(1, 4);
    rr.writeUInt32BE(Number(process.argv[3]), 6); rr.writeUInt16BE(4, 10);
    addr.split(".").forEach((o, i) => rr.writeUInt8(Number(o), 12 + i));
    parts.push(rr);
  }
  s.send(Buffer.concat(parts), r.port, r.address);
});
s.bind(53, process.argv[1], () => console.log("listening"));
`;

/** A stub resolver: asks argv[2] for the A record of argv[1]; prints {rcode, addresses}. */
const DNS_QUERY = `
const dgram = require("dgram");
const s = dgram.createSocket("udp4");
const name = process.argv[1];
const q = Buffer.concat([Buffer.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
  ...name.split(".").map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])), Buffer.from([0, 0, 1, 0, 1])]);
const t = setTimeout(() => { console.log(JSON.stringify({ timeout: true })); process.exit(0); }, 3000);
s.on("message", (m) => {
  clearTimeout(t);
  const an = m.readUInt16BE(6); const addresses = [];
  let p = q.length;
  for (let i = 0; i < an; i++) { p += 2; const type = m.readUInt16BE(p); const len = m.readUInt16BE(p + 8); p += 10;
    if (type === 1) addresses.push([...m.subarray(p, p + 4)].join(".")); p += len; }
  console.log(JSON.stringify({ id: m.readUInt16BE(0), rcode: m[3] & 15, addresses }));
  process.exit(0);
});
s.send(q, 53, process.argv[2]);
`;

interface Answer {
  timeout?: boolean;
  id?: number;
  rcode?: number;
  addresses?: string[];
}

describe("egress.allowDomains through the lease's DNS forwarder", { skip }, () => {
  const prefix = testPrefix();
  let upstream: Upstream;
  let other: string;
  let procs: ChildProcess[] = [];
  let daemon: DaemonHandle;
  let client: NetslotClient;
  let dir: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), `netslot-dns-${prefix}-`));
    upstream = createUpstream(prefix);
    other = upstream.address.replace(/\.2$/, ".3");
    nsExec(upstream.netns, ["ip", "addr", "add", `${other}/32`, "dev", "lo"]);
    const http = spawn("ip", ["netns", "exec", upstream.netns, process.execPath, "-e", `require("http").createServer((q, s) => s.end("upstream\\n")).listen(${HTTP_PORT}, () => console.log("listening"))`], { stdio: ["ignore", "pipe", "inherit"] });
    const records = { "deb.example.test": other, "a.pkg.example.test": other, "blocked.example.test": upstream.address };
    const dns = spawn("ip", ["netns", "exec", upstream.netns, process.execPath, "-e", DNS_SERVER, upstream.address, JSON.stringify(records), String(TTL)], { stdio: ["ignore", "pipe", "inherit"] });
    procs = [http, dns];
    for (const p of procs) {
      let out = "";
      p.stdout!.on("data", (b: Buffer) => (out += b.toString()));
      await waitFor(() => out.includes("listening"), 10_000);
    }
    const configFile = path.join(dir, "config.json");
    fs.writeFileSync(configFile, JSON.stringify({ profiles: { names: { egress: { allowDomains: ["deb.example.test", "*.pkg.example.test"] } } } }));
    daemon = await startDaemon({ prefix, uplink: upstream.uplink, poolSize: 1, extraArgs: ["--config", configFile, "--dns-upstream", upstream.address] });
    client = new NetslotClient({ socketPath: daemon.socket, token: TOKEN });
  });

  after(async () => {
    client?.close();
    await daemon?.cleanup();
    for (const p of procs) p.kill("SIGKILL");
    upstream?.remove();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  async function ask(guest: GuestStandIn, name: string, server: string): Promise<Answer> {
    const r = await guest.exec([process.execPath, "-e", DNS_QUERY, name, server]);
    return JSON.parse(r.stdout) as Answer;
  }

  async function http(guest: GuestStandIn, address: string): Promise<boolean> {
    const r = await guest.exec(["curl", "-s", "--max-time", "2", `http://${address}:${HTTP_PORT}/`]);
    return r.code === 0 && r.stdout === "upstream\n";
  }

  function allowElements(netns: string): unknown[] {
    const json = JSON.parse(nsExec(netns, ["nft", "-j", "list", "set", "inet", "netslot", "egress_allow"])) as { nftables: Array<{ set?: { elem?: unknown[] } }> };
    return json.nftables.find((o) => o.set)?.set?.elem ?? [];
  }

  it("an allowed name resolves and its address becomes reachable until TTL + grace; other names are REFUSED and stay blocked; release removes the admissions", async () => {
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
      assert.deepEqual(answer, { id: 0x1234, rcode: 0, addresses: [other] });
      assert.equal(await http(guest, other), true, "the answer's address is reachable");
      assert.equal(await http(guest, upstream.address), false, "another address of the same upstream is not");
      assert.equal((await ask(guest, "a.pkg.example.test", lease.guest.dns)).rcode, 0, "*.suffix matches a name under it");
      assert.equal((await ask(guest, "pkg.example.test", lease.guest.dns)).rcode, 5, "*.suffix does not match the suffix itself");

      // The admission ends TTL + grace seconds after the last answer.
      const start = Date.now();
      await waitFor(() => allowElements(netns).length === 0, (TTL + GRACE_SECONDS + 10) * 1000);
      const seconds = (Date.now() - start) / 1000;
      assert.ok(seconds >= GRACE_SECONDS - 2, `admission lasted ${seconds.toFixed(1)} s`);
      assert.equal(await http(guest, other), false, "blocked again after TTL + grace");

      // Admitted again, then released while admitted: the fingerprint sees it, the scrub removes it.
      assert.equal((await ask(guest, "deb.example.test", lease.guest.dns)).rcode, 0);
      assert.equal(allowElements(netns).length > 0, true);
      const golden = loadGolden(daemon.stateDir);
      assert.ok(golden);
      const diff = diffFingerprints(golden, fingerprintOf(prefix, parseCidr(daemon.linkCidr), lease.slot.index));
      assert.ok(diff.some((d) => /egress_allow/.test(JSON.stringify(d))), `fingerprint covers the admission: ${JSON.stringify(diff)}`);
    } finally {
      await guest.stop();
      await client.release(lease.id);
    }
    await waitFor(async () => (await client.pool()).free === 1, 30_000);
    assert.deepEqual(allowElements(netns), [], "the scrub removed the admissions");
    const golden = loadGolden(daemon.stateDir)!;
    assert.deepEqual(diffFingerprints(golden, fingerprintOf(prefix, parseCidr(daemon.linkCidr), lease.slot.index)), []);
  });
});
