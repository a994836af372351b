// What the tap reset adds to a scrub, against the alternative of re-creating the tap:
// `node dist/bench/tap-reset.js [N]`. One scratch slot on a scratch uplink; each round a
// VMM-like attach leaves a TX filter, offloads and a vnet header size behind (test/support/
// tapctl), then one of the two ways puts the tap back, timed; a fingerprint checks it.
import { execFileSync } from "node:child_process";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { diffFingerprints } from "../src/dataplane/fingerprint.js";
import { GATEWAY_IP, TAP_MAC, TAP_NAME } from "../src/dataplane/topology.js";
import { withNetns } from "../src/kernel/netns.js";
import { Rtnl } from "../src/kernel/netlink/rtnl.js";
import { createPersistentTap, resetTap } from "../src/kernel/tap.js";
import { scratchDataplane } from "./lib/util.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const N = Number(process.argv[2] ?? 200);
const scratch = scratchDataplane(`tr${process.pid % 100000}`);
const { dp } = scratch;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
try {
  dp.buildSlot(0);
  const golden = dp.fingerprint(0);
  const ns = dp.addressing(0).netnsPath;
  const tamper = () => {
    for (const s of ["txfilter", "offload", "vnethdrsz"]) execFileSync("ip", ["netns", "exec", path.basename(ns), path.join(root, "test/support/tapctl"), TAP_NAME, s]);
  };
  const reset: number[] = [];
  const recreate: number[] = [];
  for (let i = 0; i < N; i++) {
    tamper();
    let t = performance.now();
    withNetns(ns, () => resetTap(TAP_NAME));
    reset.push(performance.now() - t);
    if (i === 0 && diffFingerprints(golden, dp.fingerprint(0)).length > 0) throw new Error("reset left differences");

    tamper();
    t = performance.now();
    // The alternative: a new tap with the slot's settings, then the firewall whose netdev
    // chain is bound to the device.
    withNetns(ns, () => {
      const rtnl = Rtnl.open();
      try {
        rtnl.deleteLink(rtnl.linkByName(TAP_NAME)!.index);
        createPersistentTap(TAP_NAME);
        const tap = rtnl.linkByName(TAP_NAME)!;
        rtnl.setLink(tap.index, { mac: TAP_MAC, mtu: dp.uplinkMtu, up: true, ipv4Forwarding: true });
        rtnl.addAddress(tap.index, GATEWAY_IP, 30);
      } finally {
        rtnl.close();
      }
    });
    dp.resetFirewall(0);
    recreate.push(performance.now() - t);
    if (i === 0 && diffFingerprints(golden, dp.fingerprint(0)).length > 0) throw new Error(`re-create left differences: ${diffFingerprints(golden, dp.fingerprint(0)).join("; ")}`);
  }
  process.stdout.write(
    `tap reset: median ${(median(reset) * 1000).toFixed(0)} µs per scrub; re-create + firewall: median ${median(recreate).toFixed(2)} ms (N=${N})\n`,
  );
} finally {
  scratch.remove();
}
