// The pool's handle on the scrub worker: one job at a time per slot, answers as promises.
import { Worker } from "node:worker_threads";
import type { TenantNetwork } from "../core/types.js";
import { formatCidr } from "../dataplane/topology.js";
import type { DataplaneOptions } from "../dataplane/dataplane.js";

export interface WorkerInit {
  options: Omit<DataplaneOptions, "linkCidr"> & { linkCidr: string };
  stateDir: string;
  version: string;
}

export type ScrubJob =
  | { type: "scrub"; id: number; index: number; tenant: TenantNetwork | undefined; policy: boolean }
  | { type: "golden"; id: number; index: number; rebuild: boolean }
  | { type: "verify"; id: number; index: number }
  | { type: "build"; id: number; indices: number[]; retries: number };

export interface BuildResult {
  type: "built";
  id: number;
  built: number[];
  /** Build time of each built slot, in the order of `built`. */
  ms: number[];
  failed: Array<{ index: number; reason: string }>;
}

export interface ScrubResult {
  type: "scrubbed";
  id: number;
  index: number;
  /** clean: back to the pool; rebuilt: the scrub left differences, a rebuild removed them. */
  outcome: "clean" | "rebuilt" | "quarantined";
  reason?: string;
  diff?: string[];
  ms: number;
}

/** A job as the pool asks for it; the id is the scrubber's to give. */
type JobRequest = ScrubJob extends infer J ? (J extends ScrubJob ? Omit<J, "id"> : never) : never;

type Reply =
  | ScrubResult
  | BuildResult
  | { type: "golden"; id: number; summary: string }
  | { type: "verified"; id: number; diff: string[] }
  | { type: "failed"; id: number; message: string };

export class Scrubber {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();

  constructor(options: DataplaneOptions, stateDir: string, version: string) {
    const init: WorkerInit = { options: { ...options, linkCidr: formatCidr(options.linkCidr) }, stateDir, version };
    this.worker = new Worker(new URL("./scrub-worker.js", import.meta.url), {
      workerData: init,
      trackUnmanagedFds: false,
      // The worker's objects are short-lived fingerprints: a small young generation keeps
      // the daemon's resident memory down without slowing it measurably.
      resourceLimits: { maxYoungGenerationSizeMb: 8 },
    });
    this.worker.on("message", (reply: Reply) => {
      const p = this.pending.get(reply.id);
      if (!p) return;
      this.pending.delete(reply.id);
      if (reply.type === "failed") p.reject(new Error(reply.message));
      else p.resolve(reply);
    });
    this.worker.on("error", (err) => this.failAll(err));
    this.worker.on("exit", (code) => this.failAll(new Error(`scrub worker exited with code ${code}`)));
    this.worker.unref();
  }

  private failAll(err: Error): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  private send<T extends Reply>(job: JobRequest): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (r: Reply) => void, reject });
      this.worker.postMessage({ ...job, id });
    });
  }

  /** Scrub, verify against the golden fingerprint, rebuild if needed. `policy`: the lease had an egress policy. */
  scrub(index: number, tenant: TenantNetwork | undefined, policy = false): Promise<ScrubResult> {
    return this.send<ScrubResult>({ type: "scrub", index, tenant, policy });
  }

  /** Takes the golden fingerprint from slot `index`, rebuilding it first unless it is fresh. */
  async golden(index: number, rebuild: boolean): Promise<string> {
    const r = await this.send<{ type: "golden"; id: number; summary: string }>({ type: "golden", index, rebuild });
    return r.summary;
  }

  /** Builds slots from nothing on the worker's thread (boot runs two builders). */
  build(indices: number[], retries: number): Promise<BuildResult> {
    return this.send<BuildResult>({ type: "build", indices, retries });
  }

  /** Differences of slot `index` from the golden fingerprint (empty when identical). */
  async verify(index: number): Promise<string[]> {
    const r = await this.send<{ type: "verified"; id: number; diff: string[] }>({ type: "verify", index });
    return r.diff;
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}
