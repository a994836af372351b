// The scrub worker thread: scrubs released slots, fingerprints them against a freshly
// built slot, rebuilds or quarantines. It runs on its own thread so that a ~20 ms
// verification never stalls the API's event loop; switching namespaces is per thread.
import { parentPort, workerData } from "node:worker_threads";
import { createHash } from "node:crypto";
import { slotRuleset } from "../dataplane/ruleset.js";
import { SlotDataplane, type DataplaneOptions } from "../dataplane/dataplane.js";
import { loadGolden, saveGolden } from "../dataplane/golden.js";
import { FINGERPRINT_VERSION, diffFingerprints, liveHolders, type Fingerprint } from "../dataplane/fingerprint.js";
import { parseCidr, parseCidr6 } from "../dataplane/topology.js";
import { faultPoint } from "../core/faults.js";
import type { BuildResult, ScrubJob, ScrubResult, WorkerInit } from "./scrubber.js";
import { layoutId } from "../dataplane/layout.js";

const init = workerData as WorkerInit;
const options: DataplaneOptions = {
  ...init.options,
  linkCidr: parseCidr(init.options.linkCidr),
  linkCidr6: init.options.linkCidr6 === undefined ? undefined : parseCidr6(init.options.linkCidr6),
};
const dataplane = SlotDataplane.attach(options);
let golden: Fingerprint | undefined;

/**
 * The golden fingerprint is saved in the state dir (dataplane/golden.ts). It is only
 * reused for the same topology: same fingerprint format, netslot version, eBPF programs
 * and options.
 */
const goldenKey = JSON.stringify({
  format: FINGERPRINT_VERSION,
  version: init.version,
  programs: dataplane.programTags(),
  vtep: init.options.vtepRemote !== undefined,
  vtepPort: init.options.vtepPort,
  linkCidr: init.options.linkCidr,
  linkCidr6: init.options.linkCidr6,
  mtu: dataplane.uplinkMtu,
  tapMtu: dataplane.tapMtu,
  // The slot's own ruleset (policy sets included): a new one makes the saved golden stale.
  ruleset: createHash("sha256").update(slotRuleset({ linkCidr: init.options.linkCidr, ...(init.options.linkCidr6 !== undefined ? { linkCidr6: init.options.linkCidr6 } : {}) })).digest("hex"),
});

function describe(f: Fingerprint): string {
  return `${Object.keys(f.links).length} links, ${f.nftables.length} nft objects, ${Object.keys(f.sysctls).length} sysctls`;
}

function goldenFrom(index: number, rebuild: boolean): string {
  if (rebuild) {
    const saved = loadGolden(init.stateDir, goldenKey);
    if (saved) {
      golden = saved;
      return `${describe(golden)} (saved)`;
    }
    dataplane.destroySlot(index);
    dataplane.buildSlot(index);
  }
  golden = dataplane.fingerprint(index);
  saveGolden(init.stateDir, goldenKey, golden);
  return `${describe(golden)}${rebuild ? " (slot rebuilt)" : ""}`;
}

function scrub(job: Extract<ScrubJob, { type: "scrub" }>): ScrubResult {
  const start = performance.now();
  const result = (outcome: ScrubResult["outcome"], reason?: string, diff?: string[]): ScrubResult => ({
    type: "scrubbed",
    id: job.id,
    index: job.index,
    outcome,
    ...(reason !== undefined ? { reason } : {}),
    ...(diff ? { diff } : {}),
    ms: performance.now() - start,
  });
  faultPoint("scrub.before");
  const scrubbed = dataplane.scrub(job.index, job.tenant, job.policy);
  faultPoint("scrub.after-kernel");
  if (!scrubbed.ok) return result("quarantined", scrubbed.reason);
  if (!golden) {
    // No reference yet (no slot was free at boot): the saved one, or this slot rebuilt.
    const summary = goldenFrom(job.index, true);
    if (!summary.endsWith("(saved)")) return result("rebuilt");
  }
  const fp = dataplane.fingerprint(job.index);
  const live = liveHolders(fp);
  if (live) return result("quarantined", live);
  const diff = diffFingerprints(golden!, fp);
  if (diff.length === 0) return result("clean");
  // The firewall is the one thing a reset restores in place; anything else needs a rebuild.
  if (diff.every((line) => line.startsWith("nftables"))) {
    dataplane.resetFirewall(job.index);
    if (diffFingerprints(golden!, dataplane.fingerprint(job.index)).length === 0) return result("clean", undefined, diff);
  }
  // What the scrub could not put back, a rebuild can: same name, same addresses.
  dataplane.destroySlot(job.index);
  dataplane.buildSlot(job.index);
  const rebuilt = dataplane.fingerprint(job.index);
  const again = diffFingerprints(golden!, rebuilt);
  if (again.length === 0) return result("rebuilt", undefined, diff);
  // A slot built from nothing a moment ago still differs from the golden one: the host
  // changed (a value new namespaces inherit, a device a module load adds to every
  // namespace), or building is not repeatable. A second fresh build decides: when it
  // agrees with the first, that is what a fresh slot looks like now, and the golden
  // fingerprint is re-taken from it. Nothing a tenant did survives two rebuilds of its
  // own slot unless it is in every fresh slot, which no golden could keep out.
  dataplane.destroySlot(job.index);
  dataplane.buildSlot(job.index);
  const scratch = dataplane.fingerprint(job.index);
  if (diffFingerprints(rebuilt, scratch).length === 0) {
    golden = scratch;
    saveGolden(init.stateDir, goldenKey, golden);
    return { ...result("rebuilt", undefined, diff), goldenRetaken: again };
  }
  return result("quarantined", `differs from a fresh slot after rebuild: ${again.slice(0, 3).join("; ")}`, again);
}

function build(job: Extract<ScrubJob, { type: "build" }>): BuildResult {
  const result: BuildResult = { type: "built", id: job.id, built: [], ms: [], failed: [] };
  for (const index of job.indices) {
    const start = performance.now();
    for (let attempt = 0; attempt <= job.retries; attempt++) {
      try {
        dataplane.destroySlot(index);
        dataplane.buildSlot(index);
        result.built.push(index);
        result.ms.push(performance.now() - start);
        break;
      } catch (err) {
        if (attempt === job.retries) result.failed.push({ index, reason: (err as Error).message });
      }
    }
  }
  return result;
}

parentPort!.on("message", (job: ScrubJob) => {
  // The supervisor times the job from here (see Scrubber).
  parentPort!.postMessage({ type: "started", id: job.id });
  try {
    if (job.type === "build") {
      parentPort!.postMessage(build(job));
    } else if (job.type === "golden") {
      const summary = goldenFrom(job.index, job.rebuild);
      parentPort!.postMessage({ type: "golden", id: job.id, summary, layout: layoutId(golden!) });
    } else if (job.type === "verify") {
      const fp = dataplane.fingerprint(job.index);
      const diff = golden ? diffFingerprints(golden, fp) : [];
      const live = liveHolders(fp);
      parentPort!.postMessage({ type: "verified", id: job.id, diff: live ? [live, ...diff] : diff });
    } else {
      parentPort!.postMessage(scrub(job));
    }
  } catch (err) {
    parentPort!.postMessage({ type: "failed", id: job.id, message: (err as Error).message });
  }
});
