// eBPF a hostile VMM leaves in its slot where no rtnetlink dump shows it: a program at a
// device's tcx hook (BPF_PROG_ATTACH: it stays without any fd), a flow dissector on the
// namespace, an sk_lookup link kept by a bpffs pin, or only a tcx hook's revision (a
// counter one tenant can bump and the next read). A process inside the leased slot
// (test/support/bpf-tenant.ts, raw bpf(2)) attaches and exits; after release the slot
// must not be handed out with it: the proof (fast path first) sees it, the slot is
// rebuilt, and the next lease of that slot has nothing attached (BPF_PROG_QUERY).
// And the other way round: an untouched slot, with netslot's own NAT programs on eth0
// (cls_bpf filters, not tcx), proves clean on the fast path.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { REPO_ROOT, createUpstream, isRoot, sh, startDaemon, testPrefix, waitFor, type DaemonHandle, type Upstream, skipUnless } from "../support/env.js";
import { diffFingerprints, type Fingerprint } from "../../src/dataplane/fingerprint.js";
import { fingerprintOf as slotFingerprintOf } from "../../src/dataplane/dataplane.js";
import { loadGolden } from "../../src/dataplane/golden.js";
import { parseCidr } from "../../src/dataplane/topology.js";
import { withNetns } from "../../src/kernel/netns.js";
import { Rtnl } from "../../src/kernel/netlink/rtnl.js";
import { BPF_FLOW_DISSECTOR, BPF_SK_LOOKUP, BPF_TCX_EGRESS, BPF_TCX_INGRESS, queryHook } from "../../src/kernel/bpfattach.js";
import * as libc from "../../src/kernel/libc.js";
import type { Lease } from "../../src/core/types.js";

const skip = skipUnless(isRoot(), "needs root");
const tenantScript = path.join(REPO_ROOT, "dist", "test", "support", "bpf-tenant.js");

function counter(metrics: string, name: string, labels = ""): number {
  const line = metrics.split("\n").find((l) => l.startsWith(`${name}${labels} `));
  return line === undefined ? 0 : Number(line.split(" ")[1]);
}

/** The slot's process: entered into the namespace only (its mounts are the host's: bpffs pins land there). */
function tenant(netnsPath: string, ...args: string[]): void {
  sh("nsenter", [`--net=${netnsPath}`, process.execPath, tenantScript, ...args]);
}

/**
 * BPF_PROG_QUERY of every device's tcx hooks and the namespace's hooks, straight from the
 * kernel: "eth0 tcx ingress: 1 program(s), revision 1", only for hooks that are not pristine.
 */
function attached(netnsPath: string): string[] {
  return withNetns(netnsPath, () => {
    const rtnl = Rtnl.open();
    const out: string[] = [];
    const fd = libc.open(netnsPath, libc.O_RDONLY);
    try {
      for (const l of rtnl.links()) {
        for (const [type, hook] of [[BPF_TCX_INGRESS, "tcx ingress"], [BPF_TCX_EGRESS, "tcx egress"]] as const) {
          const q = queryHook(l.index, type);
          assert.ok(q, "this kernel has tcx (6.6 or later)");
          if (q.programs.length > 0 || q.revision !== 1n) out.push(`${l.name} ${hook}: ${q.programs.length} program(s), revision ${q.revision}`);
        }
      }
      for (const [type, hook] of [[BPF_FLOW_DISSECTOR, "flow_dissector"], [BPF_SK_LOOKUP, "sk_lookup"]] as const) {
        const q = queryHook(fd, type);
        assert.ok(q, `this kernel has the ${hook} hook`);
        if (q.programs.length > 0) out.push(`netns ${hook}: ${q.programs.length} program(s)`);
      }
      return out;
    } finally {
      libc.close(fd);
      rtnl.close();
    }
  });
}

describe("hygiene: eBPF attached where no rtnetlink dump shows it does not reach the next tenant", { skip }, () => {
  const prefix = testPrefix();
  const pinPath = `/sys/fs/bpf/${prefix}-tenant-link`;
  let upstream: Upstream;
  let daemon: DaemonHandle;

  before(async () => {
    upstream = createUpstream(prefix);
    // With a VTEP configured, slots carry vx0 too: four devices whose tcx hooks are read.
    daemon = await startDaemon({ prefix, uplink: upstream.uplink, poolSize: 2, vtepRemote: "198.18.0.9", extraArgs: ["--audit-period", "0"] });
  });

  after(async () => {
    fs.rmSync(pinPath, { force: true });
    await daemon?.cleanup();
    upstream?.remove();
  });

  const golden = (): Fingerprint => {
    const saved = loadGolden(daemon.stateDir);
    assert.ok(saved, "the daemon saved a golden fingerprint");
    return saved;
  };
  const fingerprintOf = (index: number) => slotFingerprintOf(prefix, parseCidr(daemon.linkCidr), index);
  const settled = () => waitFor(async () => (await daemon.client.pool()).scrubbing === 0, 20_000);
  const acquire = () => daemon.client.acquire({ bindToProcess: false, autoRenew: false });
  const metric = async (name: string, labels: string) => counter(await daemon.client.metrics(), name, labels);

  /** Both slots leased and released once: each has a clean proof, so the next is on the fast path. */
  async function warm(): Promise<void> {
    const leases = [await acquire(), await acquire()];
    for (const l of leases) await daemon.client.release(l.id);
    await settled();
  }

  /** A lease of slot `index` (the pool has two). */
  async function leaseOf(index: number): Promise<Lease> {
    const leases = [await acquire(), await acquire()];
    const mine = leases.find((l) => l.slot.index === index);
    assert.ok(mine, `slot ${index} is free again`);
    for (const l of leases) if (l !== mine) await daemon.client.release(l.id);
    return mine;
  }

  it("an untouched slot, with netslot's NAT programs on eth0, has nothing at these hooks and proves clean on the fast path", async () => {
    await warm();
    const g = golden();
    assert.ok(g.tcFilters.some((f) => /^dev eth0 ingress .* nat_ingress tag /.test(f)), `netslot's own programs are attached as cls_bpf filters:\n${g.tcFilters.join("\n")}`);
    assert.deepEqual(g.bpfAttachments, [], "a fresh slot has no tcx, flow dissector or sk_lookup programs");
    const fast = await metric("netslot_scrub_proofs_total", '{path="fast"}');
    const dirty = await metric("netslot_scrub_proofs_total", '{path="fast-dirty"}');
    const lease = await acquire();
    assert.deepEqual(attached(lease.slot.netns), []);
    await daemon.client.release(lease.id);
    await settled();
    assert.equal(await metric("netslot_scrub_proofs_total", '{path="fast"}'), fast + 1, "proven clean on the fast path");
    assert.equal(await metric("netslot_scrub_proofs_total", '{path="fast-dirty"}'), dirty, "no false positive");
    assert.deepEqual(diffFingerprints(g, fingerprintOf(lease.slot.index)), []);
  });

  /**
   * Leases a warmed slot, lets a process in it run bpf-tenant with `args`, checks the kernel
   * shows what it left and the fingerprint sees it, releases; the slot must be rebuilt (the
   * fast proof catches it) and its next lease must have nothing attached.
   */
  async function leftBehind(args: (lease: Lease) => string[], expectShown: RegExp, expectAttached: RegExp): Promise<void> {
    await warm();
    const dirty = await metric("netslot_scrub_proofs_total", '{path="fast-dirty"}');
    const rebuilt = await metric("netslot_scrub_outcomes_total", '{outcome="rebuilt"}');
    const lease = await acquire();
    try {
      tenant(lease.slot.netns, ...args(lease));
      // The process is gone; what it attached is not.
      const left = attached(lease.slot.netns);
      assert.ok(left.some((x) => expectAttached.test(x)), `the kernel shows the attachment: ${left.join("; ")}`);
      const diff = diffFingerprints(golden(), fingerprintOf(lease.slot.index));
      assert.ok(diff.some((x) => expectShown.test(x)), `the fingerprint shows it:\n${diff.join("\n")}`);
    } finally {
      // Released whatever happened: a failed case must not leave the next one without a slot.
      await daemon.client.release(lease.id);
      await settled();
    }
    assert.equal(await metric("netslot_scrub_proofs_total", '{path="fast-dirty"}'), dirty + 1, "the fast proof caught it");
    assert.equal(await metric("netslot_scrub_outcomes_total", '{outcome="rebuilt"}'), rebuilt + 1, "the slot was rebuilt");
    const q = (await daemon.client.pool()).quarantinedSlots.find((s) => s.index === lease.slot.index);
    assert.equal(q, undefined, `slot was quarantined: ${q?.reason}`);
    const next = await leaseOf(lease.slot.index);
    try {
      assert.deepEqual(attached(next.slot.netns), [], "the next lease of the slot has nothing attached");
      assert.deepEqual(diffFingerprints(golden(), fingerprintOf(next.slot.index)), []);
    } finally {
      await daemon.client.release(next.id);
      await settled();
    }
  }

  it("a tcx ingress program on eth0 (BPF_PROG_ATTACH, no fd kept)", () =>
    leftBehind(() => ["tcx-ingress", "eth0"], /^bpf attachments: \+ tcx ingress eth0: tenant_tcx tag [0-9a-f]{16} type 3$/, /^eth0 tcx ingress: 1 program/));

  it("a tcx ingress program on tap0", () => leftBehind(() => ["tcx-ingress", "tap0"], /^bpf attachments: \+ tcx ingress tap0: tenant_tcx /, /^tap0 tcx ingress: 1 program/));

  it("a tcx egress program on vx0", () => leftBehind(() => ["tcx-egress", "vx0"], /^bpf attachments: \+ tcx egress vx0: tenant_tcx /, /^vx0 tcx egress: 1 program/));

  it("a flow dissector on the namespace", () =>
    leftBehind(() => ["flow-dissector"], /^bpf attachments: \+ flow_dissector netns: tenant_flow tag [0-9a-f]{16} type 22$/, /^netns flow_dissector: 1 program/));

  it("an sk_lookup link on the namespace, kept by a bpffs pin after the VMM exits", () =>
    leftBehind(() => ["sk-lookup-pin", pinPath], /^bpf attachments: \+ sk_lookup netns: tenant_lookup tag [0-9a-f]{16} type 30$/, /^netns sk_lookup: 1 program/));

  it("nothing attached, only eth0's tcx revision bumped (attach and detach: a counter the next tenant could read)", () =>
    leftBehind(() => ["tcx-churn", "eth0"], /^bpf attachments: \+ tcx ingress eth0: revision 7$/, /^eth0 tcx ingress: 0 program\(s\), revision 7$/));
});
