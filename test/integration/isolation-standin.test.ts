// The isolation matrix (test/support/isolation.ts) from a guest stand-in: a namespace wired
// to slot A's tap0, running the same busybox script the QEMU guest runs. Guest B (another
// lease, same guest IP and MAC) serves HTTP and takes part in the concurrency check.
import { after, before, describe, it } from "node:test";
import { isRoot, testPrefix, skipUnless } from "../support/env.js";
import { startGuestStandIn, type GuestStandIn } from "../support/guest.js";
import { GUARANTEES, createIsolationLab, matrixScript, runBusybox, summarize, type IsolationLab, type MatrixOutcome } from "../support/isolation.js";

const skip = skipUnless(isRoot(), "needs root");

describe("isolation from a guest stand-in", { skip }, () => {
  const prefix = testPrefix();
  let lab: IsolationLab | undefined;
  let guestA: GuestStandIn | undefined;
  let outcome: MatrixOutcome | undefined;

  before(async () => {
    lab = await createIsolationLab({ prefix, vpc: true });
    guestA = await startGuestStandIn({ slotNetnsPath: lab.leaseA.slot.netns, name: `${prefix}-ga`, mtu: lab.leaseA.guest.mtu });
    const params = lab.params(guestA.ifname);
    const controls = await lab.hostControls();
    await lab.begin();
    const started = performance.now();
    const partner = lab.partner();
    const run = await runBusybox(guestA, lab.busyboxDir, matrixScript(params));
    const ms = Math.round(performance.now() - started);
    outcome = await lab.finish(run.stdout + run.stderr, await partner, controls);
    process.stderr.write(`# [${prefix}] stand-in matrix ran in ${ms} ms: ${summarize(outcome)}\n`);
  });

  after(async () => {
    await guestA?.stop();
    await lab?.cleanup();
  });

  for (const g of GUARANTEES) {
    it(g.title, () => {
      if (!outcome) throw new Error("the matrix did not run (see before hook)");
      g.check(outcome);
    });
  }
});
