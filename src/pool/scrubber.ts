// The pool's handle on the scrub worker: one job at a time per slot, answers as promises.
import { SHARE_ENV, Worker } from "node:worker_threads";
import type { TenantNetwork } from "../core/types.js";
import { formatCidr, formatCidr6 } from "../dataplane/topology.js";
import type { DataplaneOptions } from "../dataplane/dataplane.js";
import { silentLogger, type Logger, type LogOptions } from "../core/log.js";

export interface WorkerInit {
  // Plain strings across the thread boundary (a parsed IPv6 CIDR holds bigints).
  options: Omit<DataplaneOptions, "linkCidr" | "linkCidr6"> & { linkCidr: string; linkCidr6?: string | undefined };
  stateDir: string;
  version: string;
  /** The worker makes its own logger (a pino instance cannot cross threads) with these. */
  log: Pick<LogOptions, "level" | "format">;
  /** inotify watches for sysctl change tracking (~35 per slot; 0: every proof reads every sysctl). */
  maxWatches?: number;
  /** Nice value of the scrub thread once it scrubs. */
  nice?: number;
}

/**
 * Half of the host's default fs.inotify.max_user_watches budget here (192,536, shared with
 * every other root process): about 2,700 slots tracked; the others are proven by reading.
 */
export const DEFAULT_MAX_WATCHES = 96_000;
export const DEFAULT_SCRUB_NICE = 5;

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
  /** The host changed: two fresh builds agreed with each other, not with the golden fingerprint, which was re-taken. */
  goldenRetaken?: string[];
  ms: number;
  /** How the slot was proven: "fast" (only what may have changed was read), "full", or "fast-dirty" (the fast proof found a difference, a full one followed). */
  proof?: "fast" | "full" | "fast-dirty";
}

/** A job as the pool asks for it; the id is the scrubber's to give. */
type JobRequest = ScrubJob extends infer J ? (J extends ScrubJob ? Omit<J, "id"> : never) : never;

type Reply =
  | ScrubResult
  | BuildResult
  | { type: "golden"; id: number; summary: string; layout: string }
  | { type: "verified"; id: number; diff: string[] }
  | { type: "failed"; id: number; message: string };

/** How long the job a worker is running may take before the worker counts as hung. */
export const DEFAULT_JOB_TIMEOUT_MS = 30_000;
/** Worker deaths (crash or timeout) a job may be running through before it fails for good. */
const MAX_JOB_ATTEMPTS = 2;

export interface SupervisionOptions {
  /** The supervisor's lines (a worker replaced); silent when not given. */
  logger?: Logger;
  /** Level and format of the worker thread's own logger. */
  logOptions?: Pick<LogOptions, "level" | "format">;
  /** See WorkerInit. */
  maxWatches?: number;
  nice?: number;
  /** Timeout per job (per slot for builds). */
  jobTimeoutMs?: number;
}

interface PendingJob {
  job: ScrubJob;
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  /** Times a worker died or hung while running this job. */
  attempts: number;
}

/**
 * A supervised scrub worker. The worker says when it starts a job; when it dies, or the
 * job it runs outlives its timeout (a kernel call that never returns), the worker is
 * replaced and every job it held is sent to the new one: jobs are idempotent (a scrub
 * scrubs again, a build destroys first). The job that was running when the worker died
 * twice fails, so one poisonous slot cannot take the worker down in a loop.
 */
export class Scrubber {
  private worker!: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, PendingJob>();
  /** The job the worker runs now, and its deadline timer. */
  private running: number | undefined;
  private deadline: NodeJS.Timeout | undefined;
  private closed = false;
  /** Workers started after a death or a hang. */
  restarts = 0;
  private readonly init: WorkerInit;
  private readonly logger: Logger;
  private readonly jobTimeoutMs: number;

  constructor(options: DataplaneOptions, stateDir: string, version: string, supervision: SupervisionOptions = {}) {
    this.init = {
      options: { ...options, linkCidr: formatCidr(options.linkCidr), linkCidr6: options.linkCidr6 === undefined ? undefined : formatCidr6(options.linkCidr6) },
      stateDir,
      version,
      log: supervision.logOptions ?? { level: "info" },
      ...(supervision.maxWatches !== undefined ? { maxWatches: supervision.maxWatches } : {}),
      ...(supervision.nice !== undefined ? { nice: supervision.nice } : {}),
    };
    this.logger = supervision.logger ?? silentLogger;
    this.jobTimeoutMs = supervision.jobTimeoutMs ?? DEFAULT_JOB_TIMEOUT_MS;
    this.start();
  }

  private start(): void {
    const worker = new Worker(new URL("./scrub-worker.js", import.meta.url), {
      workerData: this.init,
      trackUnmanagedFds: false,
      // Shared so that a test fault spent in one worker stays spent in its successor.
      env: SHARE_ENV,
      // The worker's objects are short-lived fingerprints: a small young generation keeps
      // the daemon's resident memory down without slowing it measurably.
      resourceLimits: { maxYoungGenerationSizeMb: 8 },
    });
    this.worker = worker;
    this.running = undefined;
    worker.on("message", (reply: Reply | { type: "started"; id: number }) => {
      if (worker !== this.worker) return;
      if (reply.type === "started") {
        this.started(reply.id);
        return;
      }
      const p = this.pending.get(reply.id);
      if (reply.id === this.running) this.stopClock();
      if (!p) return;
      this.pending.delete(reply.id);
      if (reply.type === "failed") p.reject(new Error(reply.message));
      else p.resolve(reply);
    });
    worker.on("error", (err) => this.replace(worker, `failed: ${err.message}`));
    worker.on("exit", (code) => this.replace(worker, `exited with code ${code}`));
    worker.unref();
    // Jobs the previous worker held, in their original order.
    for (const [id, p] of this.pending) worker.postMessage({ ...p.job, id });
  }

  private started(id: number): void {
    this.stopClock();
    const p = this.pending.get(id);
    if (!p) return;
    this.running = id;
    const timeout = this.jobTimeoutMs * (p.job.type === "build" ? Math.max(1, p.job.indices.length) : 1);
    this.deadline = setTimeout(() => {
      const worker = this.worker;
      this.replace(worker, `hung: ${describeJob(p.job)} took over ${timeout} ms`);
      void worker.terminate();
    }, timeout);
    this.deadline.unref();
  }

  private stopClock(): void {
    if (this.deadline) clearTimeout(this.deadline);
    this.deadline = undefined;
    this.running = undefined;
  }

  /** The worker died or hung: the job it ran counts an attempt, every job goes to a new worker. */
  private replace(worker: Worker, why: string): void {
    if (worker !== this.worker || this.closed) return;
    const running = this.running;
    this.stopClock();
    const culprit = running !== undefined ? this.pending.get(running) : undefined;
    if (culprit && ++culprit.attempts >= MAX_JOB_ATTEMPTS) {
      this.pending.delete(running!);
      culprit.reject(new Error(`scrub worker ${why}; ${describeJob(culprit.job)} failed ${culprit.attempts} times`));
    }
    this.restarts++;
    this.logger.warn({ restarts: this.restarts + 1 }, `scrub worker ${why}; restarting it with ${this.pending.size} jobs re-queued`);
    this.start();
  }

  private send<T extends Reply>(job: JobRequest): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const full = { ...job, id };
      this.pending.set(id, { job: full, resolve: resolve as (r: Reply) => void, reject, attempts: 0 });
      this.worker.postMessage(full);
    });
  }

  /** Scrub, verify against the golden fingerprint, rebuild if needed. `policy`: the lease had an egress policy. */
  scrub(index: number, tenant: TenantNetwork | undefined, policy = false): Promise<ScrubResult> {
    return this.send<ScrubResult>({ type: "scrub", index, tenant, policy });
  }

  /** Takes the golden fingerprint from slot `index`, rebuilding it first unless it is fresh. */
  async golden(index: number, rebuild: boolean): Promise<{ summary: string; layout: string }> {
    const r = await this.send<{ type: "golden"; id: number; summary: string; layout: string }>({ type: "golden", index, rebuild });
    return { summary: r.summary, layout: r.layout };
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
    this.closed = true;
    this.stopClock();
    await this.worker.terminate();
  }
}

function describeJob(job: ScrubJob): string {
  return job.type === "build" ? `build of slots ${job.indices.join(",")}` : `${job.type} of slot ${job.index}`;
}
