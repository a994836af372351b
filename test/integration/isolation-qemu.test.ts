// The isolation matrix (test/support/isolation.ts) from a real guest: Debian's kernel with a
// busybox initramfs under QEMU (TCG) on slot A's tap0, one boot running the whole matrix as
// its /check.sh. Guest B is a stand-in on slot B with the same IP and MAC.
import { after, before, describe, it } from "node:test";
import { isRoot, testPrefix, skipUnless } from "../support/env.js";
import { ensureGuestImage, qemuAvailable, runGuest, type GuestRun } from "../support/qemu.js";
import { GUARANTEES, createIsolationLab, matrixScript, summarize, type IsolationLab, type MatrixOutcome } from "../support/isolation.js";

const skip = skipUnless(isRoot(), "needs root") || skipUnless(qemuAvailable(), "qemu-system-x86_64 is not installed");

describe("isolation from a real QEMU guest", { skip }, () => {
  const prefix = testPrefix();
  let lab: IsolationLab | undefined;
  let outcome: MatrixOutcome | undefined;
  let guest: GuestRun | undefined;

  before(async () => {
    const image = await ensureGuestImage();
    lab = await createIsolationLab({ prefix, vpc: true });
    const params = lab.params("eth0");
    const controls = await lab.hostControls();
    await lab.begin();
    // Guest B waits at the barrier while the VM boots (the server holds it for 45 s).
    const partner = lab.partner();
    guest = await runGuest({ slotNetnsPath: lab.leaseA.slot.netns, script: matrixScript(params), mtu: lab.leaseA.guest.mtu, image, timeoutMs: 90_000 });
    outcome = await lab.finish(guest.checkOutput, await partner, controls);
    process.stderr.write(
      `# [${prefix}] qemu guest: boot ${Math.round(guest.bootMs)} ms, total ${Math.round(guest.totalMs)} ms; ${summarize(outcome)}\n`,
    );
  });

  after(async () => {
    await lab?.cleanup();
  });

  for (const g of GUARANTEES) {
    it(g.title, () => {
      if (!outcome) throw new Error("the matrix did not run (see before hook)");
      g.check(outcome);
    });
  }
});
