// The shape of bench/results/<date>.json.
import type { TenancyCostResult } from "./tenancy.js";
import type { BaselineResult } from "./baselines.js";
import type { LeasePathResult } from "./lease.js";
import type { RecycleResult } from "./recycle.js";
import type { IperfResult } from "./net.js";
import type { MachineInfo, Summary } from "./util.js";
import type { PurgeResult, StartResult } from "./daemon.js";
import type { ProfilesBenchResult } from "../profiles.js";
import type { ProofResult } from "../proof-cpu.js";

export interface BootRun {
  n: number;
  prefix: string;
  linkCidr?: string;
  vtepRemote?: string;
  /** Waiting for a quiet machine before the boot. */
  settle?: { waitedMs: number; busy: number };
  start?: Omit<StartResult, "timeline" | "progressLines">;
  /** Boot timeline [ms since spawn, slot namespaces seen], downsampled. */
  timeline?: Array<[number, number]>;
  timelineResolutionMs?: number;
  progressLines?: Array<{ t: number; text: string }>;
  slotsPerSecondWall?: number;
  slotsPerSecondDaemon?: number;
  perSlotBuild?: {
    /** From the namespace timeline (build start of each slot). */
    timeline?: { firstTenthMsPerSlot: number; lastTenthMsPerSlot: number; ratio: number; resolutionMs: number };
    /** From the daemon's once-a-second progress lines (coarse cross-check). */
    progress?: { firstTenthMsPerSlot: number; lastTenthMsPerSlot: number; ratio: number };
  };
  rootRules?: number;
  rssKbAtReady?: number;
  /** The daemon's open files at ready, against its RLIMIT_NOFILE. */
  fds?: { open: number; softLimit: number; hardLimit: number };
  memory?: {
    memAvailableDeltaKb: number;
    slabDeltaKb: number;
    slabUnreclaimDeltaKb?: number;
    daemonRssKb: number;
    /** (MemAvailable drop − daemon RSS) / N */
    kernelKbPerSlot: number;
    slabKbPerSlot: number;
    /** Growth of each of KERNEL_MEMINFO_FIELDS over the boot, ÷ N (absent in older runs). */
    perSlotKb?: Record<string, number>;
  };
  stopMs?: number;
  purge?: PurgeResult;
  error?: string;
}

/** The proof part: bench/proof-cpu.ts measureProof on a scratch slot. */
export interface ProofRun {
  /** Proofs of each kind, and destroy + rebuild rounds. */
  n: number;
  rebuilds: number;
  result?: ProofResult;
  error?: string;
}

export interface ConnectRun {
  slotIndex: number;
  outsideAddress: string;
  hostToGuest?: { ms: Summary; failures: number; firstError?: string };
  guestToUpstream?: { ms: Summary; failures: number; firstError?: string };
}

export interface FootprintResult {
  rules: Array<{ n: number; count: number }>;
  identical?: boolean;
  /** Leasing the whole pool back to back (no scrub in between): per-request latency. */
  acquireAll?: { n: number; seconds: number; requestMs?: Summary; exhaustedAnswer?: string };
  connect?: { n: number; count: number; first?: ConnectRun; last?: ConnectRun; error?: string };
}

export interface DatapathResult {
  seconds: number;
  mtu?: number;
  netslot?: { forward?: IperfResult; reverse?: IperfResult };
  plainRelay?: { forward?: IperfResult; reverse?: IperfResult };
  plainDirect?: { forward?: IperfResult; reverse?: IperfResult };
  ratioForward?: number;
  ratioReverse?: number;
  error?: string;
}

export interface RestartRun {
  kind: "sigterm" | "kill9";
  n: number;
  stopMs?: number;
  start?: Omit<StartResult, "timeline" | "progressLines">;
  error?: string;
}

export interface MemoryResult {
  n: number;
  daemonRssKbAtReady?: number;
  daemonRssKbAfterLeases?: number;
  daemonPeakRssKb?: number;
  kernelKbPerSlot?: number;
  slabKbPerSlot?: number;
}

export interface TargetRow {
  id: string;
  what: string;
  target: string;
  measured: string;
  ratio: string;
  pass: boolean | null;
  note?: string;
  spec: string;
}

export interface BenchResults {
  schema: 1;
  mode: "quick" | "full";
  startedAt: string;
  finishedAt?: string;
  durationSeconds?: number;
  machine: MachineInfo;
  git?: { commit: string; dirty: boolean };
  client: string;
  sizes: { boot: number[]; lease: number; baselines: number[] };
  baselines: BaselineResult[];
  boot: BootRun[];
  lease: { plain?: LeasePathResult; tenant?: LeasePathResult; error?: string };
  /** Proving an untouched released slot clean: CPU per proof (issue 15, goal 1). */
  proof?: ProofRun;
  /** A boot of the /16 maximum, 16,384 slots: ready time, per-slot build, memory, purge (issue 15, goal 4). */
  scale?: BootRun;
  /** The pool recycling under load: 8 clients, a probe client, daemon CPU and event-loop delay (issue 15, goals 2 and 3). */
  recycle?: RecycleResult;
  /** Request latency with four configured consumers against none, same run. */
  tenancy?: TenancyCostResult;
  footprint: FootprintResult;
  datapath?: DatapathResult;
  memory?: MemoryResult;
  restart: RestartRun[];
  /** Network profiles: request latency per profile, data path with a policy loaded. */
  profiles?: ProfilesBenchResult;
  /** Waiting for every released slot to be scrubbed and free again. */
  refills: Array<{ when: string; seconds: number; ok: boolean; pool?: string }>;
  targets: TargetRow[];
  errors: string[];
  /** Parts re-run after this run and merged into it (`--merge`): when, at which commit. */
  reruns?: Array<{ parts: string[]; startedAt: string; durationSeconds: number; git?: { commit: string; dirty: boolean }; loadAverageAtStart?: number[] }>;
}
