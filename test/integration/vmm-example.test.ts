// examples/qemu-guest.mjs boots a real guest (QEMU, TCG) on a lease using only the SDK's
// VMM helpers; the guest fetches a page from the upstream through the slot, is seen there
// under the host's uplink address, got the lease's MTU from the virtio device and the lease's
// ip= boot argument, and the lease is released when QEMU exits.
import { before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { daemonSuite, startServerIn, type NetnsServer, REPO_ROOT, isRoot, skipUnless } from "../support/env.js";
import { checkArchive, ensureGuestImage, parseMarkers } from "../support/qemu.js";
import { GUEST_MAC, kernelIpArg } from "../../src/dataplane/topology.js";

const skip = skipUnless(isRoot(), "needs root");
const EXAMPLE = path.join(REPO_ROOT, "examples", "qemu-guest.mjs");

// A one-route HTTP server in the upstream namespace that prints each client's address.
const SERVER = `
const http = require("node:http");
const [token, port] = process.argv.slice(1);
http.createServer((req, res) => {
  console.log("FROM " + req.socket.remoteAddress + " " + req.url);
  res.end(token);
}).listen(Number(port), "0.0.0.0", () => console.log("LISTENING"));
`;

describe("examples/qemu-guest.mjs boots a guest on a lease", { skip }, () => {
  const token = `vmm-${process.pid}-${Date.now()}`;
  const port = 18080;
  let server: NetnsServer | undefined;
  let dir = "";
  const { upstream, daemon } = daemonSuite({
    poolSize: 1,
    teardown: () => {
      server?.stop();
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    },
  });

  before(async () => {
    server = await startServerIn(upstream.netns, [process.execPath, "-e", SERVER, token, String(port)], "LISTENING");
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "netslot-vmm-"));
  });

  it("the guest reaches the upstream with the lease's MTU and boot argument; the lease ends with QEMU", async () => {
    const image = await ensureGuestImage();
    const base = fs.readFileSync(image.initramfs);
    const script = [
      `body=$(timeout 20 wget -q -O - http://${upstream.address}:${port}/from-guest)`,
      `echo "RESULT body=$body"`,
      `echo "RESULT mtu=$(cat /sys/class/net/eth0/mtu)"`,
      `echo "RESULT mac=$(cat /sys/class/net/eth0/address)"`,
      `for a in $(cat /proc/cmdline); do case "$a" in ip=*) echo "RESULT ip_arg=$a" ;; esac; done`,
    ].join("\n");
    const initrd = path.join(dir, "initrd");
    fs.writeFileSync(initrd, Buffer.concat([base, Buffer.alloc((4 - (base.length % 4)) % 4), checkArchive(script)]));

    const child = spawn(process.execPath, [EXAMPLE, "--socket", daemon.socket, "--kernel", image.kernel, "--initrd", initrd, "--append", "console=ttyS0 quiet panic=-1 reboot=t"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (b: Buffer) => (out += b.toString()));
    child.stderr.on("data", (b: Buffer) => (err += b.toString()));
    const timer = setTimeout(() => child.kill("SIGTERM"), 150_000);
    let leasedWhileRunning = 0;
    const poll = setInterval(() => void daemon.client.pool().then((p) => (leasedWhileRunning = Math.max(leasedWhileRunning, p.leased)), () => undefined), 200);
    const code = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)));
    clearTimeout(timer);
    clearInterval(poll);
    const console = out.replace(/\r\n/g, "\n");
    assert.equal(code, 0, `example exited ${code}\n${err}\n${console.slice(-3000)}`);

    const markers = parseMarkers(console);
    assert.equal(markers.body, token, `guest did not get the upstream's page\n${console.slice(-3000)}`);
    assert.equal(markers.exit, "0");
    assert.match(server!.output(), new RegExp(`FROM (::ffff:)?${upstream.hostAddress.replaceAll(".", "\\.")} /from-guest`), server!.output());
    assert.equal(markers.mtu, "1400", "the virtio device advertises the lease's MTU (the upstream's 1400)");
    assert.equal(markers.mac, GUEST_MAC);
    assert.equal(markers.ip_arg, kernelIpArg(), "the lease's boot argument reached the guest kernel");
    assert.match(err, /qemu-guest: lease \S+ on \/run\/netns\//);
    assert.equal(leasedWhileRunning, 1, "the slot was leased while the guest ran");
    assert.equal((await daemon.client.pool()).leased, 0, "the example released its lease");
  });
});
