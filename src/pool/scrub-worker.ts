// The scrub worker thread: scrubs released slots, fingerprints them against a freshly
// built slot, rebuilds or quarantines. It runs on its own thread so that a ~20 ms
// verification never stalls the API's event loop; switching namespaces is per thread.
import { parentPort, receiveMessageOnPort, workerData } from "node:worker_threads";
import { createHash } from "node:crypto";
import { slotRuleset } from "../dataplane/ruleset.js";
import { SlotDataplane, type DataplaneOptions } from "../dataplane/dataplane.js";
import { loadGolden, saveGolden } from "../dataplane/golden.js";
import { FINGERPRINT_VERSION, diffFingerprints, liveHolders, type Fingerprint } from "../dataplane/fingerprint.js";
import { parseCidr, parseCidr6, TAP_NAME } from "../dataplane/topology.js";
import { faultPoint, useFaultLogger } from "../core/faults.js";
import { createLogger } from "../core/log.js";
import { DEFAULT_MAX_WATCHES, DEFAULT_SCRUB_NICE, type BuildResult, type ScrubJob, type ScrubResult, type WorkerInit } from "./scrubber.js";
import { layoutId } from "../dataplane/layout.js";
import { Prover } from "../dataplane/prover.js";
import { gettid, setThreadNice } from "../kernel/libc.js";

const init = workerData as WorkerInit;
// Its own pino logger on fd 2, synchronous (one write() per line, atomic on a pipe next to
// the main thread's): a line must be out before a fault point's SIGKILL or a worker that
// dies, which a message posted to the main thread would not be.
const logger = createLogger({ ...init.log, bindings: { thread: "scrub" } });
useFaultLogger(logger);
const options: DataplaneOptions = {
  ...init.options,
  linkCidr: parseCidr(init.options.linkCidr),
  linkCidr6: init.options.linkCidr6 === undefined ? undefined : parseCidr6(init.options.linkCidr6),
};
const dataplane = SlotDataplane.attach(options);
const prover = new Prover(dataplane, { maxWatches: init.maxWatches ?? DEFAULT_MAX_WATCHES });
let golden: Fingerprint | undefined;
let niced = false;

/** A new golden fingerprint: what was proven against the old one proves nothing now. */
function setGolden(f: Fingerprint): void {
  golden = f;
  prover.forgetAll();
}

/** Destroys and builds slot `index` again (its watches and clean record go with it). */
function rebuild(index: number): void {
  prover.forget(index);
  dataplane.destroySlot(index);
  dataplane.buildSlot(index);
}

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

function goldenFrom(index: number, rebuildFirst: boolean): string {
  if (rebuildFirst) {
    const saved = loadGolden(init.stateDir, goldenKey);
    if (saved) {
      setGolden(saved);
      return `${describe(saved)} (saved)`;
    }
    rebuild(index);
  }
  setGolden(dataplane.fingerprint(index));
  saveGolden(init.stateDir, goldenKey, golden!);
  return `${describe(golden!)}${rebuildFirst ? " (slot rebuilt)" : ""}`;
}

function scrub(job: Extract<ScrubJob, { type: "scrub" }>, since: bigint): ScrubResult {
  const start = performance.now();
  const result = (outcome: ScrubResult["outcome"], reason?: string, diff?: string[]): ScrubResult => ({
    type: "scrubbed",
    id: job.id,
    index: job.index,
    outcome,
    ...(reason !== undefined ? { reason } : {}),
    ...(diff ? { diff } : {}),
    ms: performance.now() - start,
    proof,
  });
  let proof: ScrubResult["proof"] = "full";
  faultPoint("scrub.before");
  const scrubbed = dataplane.scrub(job.index, job.tenant, job.policy);
  faultPoint("scrub.after-kernel");
  if (!scrubbed.ok) return result("quarantined", scrubbed.reason);
  if (!golden) {
    // No reference yet (no slot was free at boot): the saved one, or this slot rebuilt.
    const summary = goldenFrom(job.index, true);
    if (!summary.endsWith("(saved)")) return result("rebuilt");
  }
  // Only what may have changed since the slot's last clean proof is read (dataplane/prover.ts).
  let proof1 = prover.prove(job.index, golden!, { since, ...(scrubbed.tap ? { taps: { [TAP_NAME]: scrubbed.tap } } : {}) });
  proof = proof1.path;
  if (proof1.diff.length === 0) return result("clean");
  // A difference: the full fingerprint decides what to do, as for any dirty slot.
  if (proof1.path === "fast") {
    proof = "fast-dirty";
    proof1 = prover.prove(job.index, golden!, { full: true });
  }
  const live = liveHolders(proof1.fingerprint);
  if (live) return result("quarantined", live);
  const diff = proof1.diff;
  if (diff.length === 0) return result("clean");
  // The firewall is the one thing a reset restores in place; anything else needs a rebuild.
  if (diff.every((line) => line.startsWith("nftables"))) {
    dataplane.resetFirewall(job.index);
    if (prover.prove(job.index, golden!, { full: true }).diff.length === 0) return result("clean", undefined, diff);
  }
  // What the scrub could not put back, a rebuild can: same name, same addresses.
  rebuild(job.index);
  const { fingerprint: rebuilt, diff: again } = prover.prove(job.index, golden!, { full: true });
  if (again.length === 0) return result("rebuilt", undefined, diff);
  // A slot built from nothing a moment ago still differs from the golden one: the host
  // changed (a value new namespaces inherit, a device a module load adds to every
  // namespace), or building is not repeatable. A second fresh build decides: when it
  // agrees with the first, that is what a fresh slot looks like now, and the golden
  // fingerprint is re-taken from it. Nothing a tenant did survives two rebuilds of its
  // own slot unless it is in every fresh slot, which no golden could keep out.
  rebuild(job.index);
  const scratch = dataplane.fingerprint(job.index);
  if (diffFingerprints(rebuilt, scratch).length === 0) {
    setGolden(scratch);
    saveGolden(init.stateDir, goldenKey, scratch);
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
        rebuild(index);
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

/** Runs one job; `since`: when it was received (the slot was released before). */
function run(job: ScrubJob, since: bigint): void {
  // The supervisor times the job from here (see Scrubber).
  parentPort!.postMessage({ type: "started", id: job.id });
  const start = performance.now();
  try {
    let reply: object;
    if (job.type === "build") {
      reply = build(job);
    } else if (job.type === "golden") {
      const summary = goldenFrom(job.index, job.rebuild);
      reply = { type: "golden", id: job.id, summary, layout: layoutId(golden!) };
    } else if (job.type === "verify") {
      // The full fingerprint, always: the background audit and `netslot check` ask this.
      const fp = golden ? prover.prove(job.index, golden, { full: true }) : { fingerprint: dataplane.fingerprint(job.index), diff: [] };
      const live = liveHolders(fp.fingerprint);
      reply = { type: "verified", id: job.id, diff: live ? [live, ...fp.diff] : fp.diff };
    } else {
      if (!niced) {
        // Scrubs run beside the request path: below the main thread (nice is per thread on
        // Linux). Not before: at boot this thread builds half the pool.
        niced = true;
        setThreadNice(gettid(), init.nice ?? DEFAULT_SCRUB_NICE);
      }
      reply = scrub(job, since);
    }
    // Before the reply: what the supervisor hears of has been logged.
    logger.debug({ job: job.type, ...("index" in job ? { slot: job.index } : { slots: job.indices.length }), ms: performance.now() - start }, `${job.type} job done`);
    parentPort!.postMessage(reply);
  } catch (err) {
    // The supervisor gets the message; the stack is only here.
    logger.warn({ job: job.type, ...("index" in job ? { slot: job.index } : {}), err }, `${job.type} job failed: ${(err as Error).message}`);
    parentPort!.postMessage({ type: "failed", id: job.id, message: (err as Error).message });
  }
}

parentPort!.on("message", (first: ScrubJob) => {
  // Every job already queued is taken now, so that slots released together share one
  // process scan (prover.ts): each is stamped with this moment, after all their releases.
  const since = process.hrtime.bigint();
  const jobs = [first];
  for (let next = receiveMessageOnPort(parentPort!); next; next = receiveMessageOnPort(parentPort!)) jobs.push(next.message as ScrubJob);
  for (const job of jobs) run(job, since);
});
