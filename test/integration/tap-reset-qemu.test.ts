// A real guest proves that what the previous VMM set through the tap's fd does not reach
// the next tenant: a VMM attaches to tap0 as QEMU or Firecracker would, leaves a TX filter
// for an unrelated MAC, a drop-all socket filter and offloads, and
// closes; the slot is released and leased again (pool of one: the same slot), and a QEMU
// guest on it pings the upstream and downloads a file over TCP from it.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { REPO_ROOT, createUpstream, isRoot, nsExec, startDaemon, testPrefix, waitFor, type DaemonHandle, type Upstream, skipUnless } from "../support/env.js";
import { ensureGuestImage, qemuAvailable, runGuest } from "../support/qemu.js";
import { diffFingerprints, type Fingerprint } from "../../src/dataplane/fingerprint.js";
import { fingerprintOf } from "../../src/dataplane/dataplane.js";
import { parseCidr } from "../../src/dataplane/topology.js";

const skip = skipUnless(isRoot(), "needs root") || skipUnless(qemuAvailable(), "qemu-system-x86_64 is not installed");

describe("tap settings a VMM leaves behind do not reach the next tenant's guest (QEMU)", { skip }, () => {
  const prefix = testPrefix();
  let upstream: Upstream;
  let daemon: DaemonHandle;
  let server: ChildProcess | undefined;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `netslot-tapq-${prefix}-`));
  const blob = randomBytes(256 * 1024);

  before(async () => {
    await ensureGuestImage();
    upstream = createUpstream(prefix);
    fs.writeFileSync(path.join(dir, "blob"), blob);
    server = spawn("ip", ["netns", "exec", upstream.netns, "python3", "-m", "http.server", "8080", "--bind", upstream.address, "--directory", dir], { stdio: "ignore" });
    daemon = await startDaemon({ prefix, uplink: upstream.uplink, poolSize: 1 });
    await waitFor(() => nsExec(upstream.netns, ["ss", "-ltn"]).includes(":8080"), 10_000);
  });

  after(async () => {
    server?.kill("SIGKILL");
    await daemon?.cleanup();
    upstream?.remove();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("a TX filter, a socket filter and offloads left by one VMM are gone for the next guest", async () => {
    const first = await daemon.client.acquire({ bindToProcess: false, autoRenew: false });
    const ns = path.basename(first.slot.netns);
    const tapctl = path.join(REPO_ROOT, "test", "support", "tapctl");
    for (const setting of ["txfilter", "sockfilter", "offload"]) nsExec(ns, [tapctl, "tap0", setting]);
    await daemon.client.release(first.id);
    await waitFor(async () => (await daemon.client.pool()).free === 1, 15_000);

    const second = await daemon.client.acquire({ bindToProcess: false, autoRenew: false });
    assert.equal(second.slot.index, first.slot.index, "the same slot again");
    const golden = (JSON.parse(fs.readFileSync(path.join(daemon.stateDir, "golden-fingerprint.json"), "utf8")) as { fingerprint: Fingerprint }).fingerprint;
    assert.deepEqual(diffFingerprints(golden, fingerprintOf(prefix, parseCidr(daemon.linkCidr), second.slot.index)), []);

    const url = `http://${upstream.address}:8080/blob`;
    const run = await runGuest({
      slotNetnsPath: second.slot.netns,
      mtu: second.guest.mtu,
      timeoutMs: 90_000,
      script: [
        `if ping -c 3 -W 3 ${upstream.address} >/dev/null 2>&1; then echo RESULT ping=ok; else echo RESULT ping=fail; fi`,
        `echo RESULT md5=$(timeout 20 wget -q -O - ${url} | md5sum | cut -d' ' -f1)`,
      ].join("\n"),
    });
    process.stderr.write(`# [${prefix}] qemu guest: boot ${Math.round(run.bootMs)} ms, markers ${JSON.stringify(run.markers)}\n`);
    assert.equal(run.markers.ping, "ok", run.checkOutput);
    assert.equal(run.markers.md5, createHash("md5").update(blob).digest("hex"), run.checkOutput);
    await daemon.client.release(second.id);
  });
});
