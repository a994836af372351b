// Shapes shared by the pool, the store, the API and the SDK. The wire shapes are defined
// once, as schemas in core/schema.ts; their TypeScript types are re-exported here so the
// layers below the API need not know about schemas.
import type { Health, Lease, LeaseRequest, PoolCounts } from "./schema.js";

export type {
  ConsumerUsage,
  GuestConfig,
  Health,
  Lease,
  LeaseRequest,
  PoolCounts,
  QuarantinedSlot,
  SlotRef,
  SlotState,
  TenantNetwork,
  UpgradeResult,
} from "./schema.js";

/** One line of the audit log: who did what to which lease and slot, and why. */
export interface AuditEvent {
  event: "grant" | "release" | "expiry" | "owner_exit" | "force_release" | "quarantine" | "retry" | "drain" | "undrain";
  consumer?: string;
  lease?: string;
  slot?: number;
  reason?: string;
  /** The operator behind a force-release, retry or drain. */
  by?: string;
}

/**
 * What the API needs from the pool. Every method is scoped to one consumer: a lease of
 * another consumer is reported as not found. Methods throw `NetslotError` (errors.ts).
 */
export interface LeaseService {
  /** The API adds the version. */
  health(): Omit<Health, "version">;
  /** Every consumer's view; the API narrows it for non-operators. */
  pool(): PoolCounts;
  acquire(consumer: string, request: LeaseRequest): Promise<Lease>;
  /** `all` (operators): every consumer's leases. */
  list(consumer: string, opts?: { all?: boolean }): Lease[];
  /** `operator`: another consumer's lease is found too. */
  get(consumer: string, id: string, opts?: { operator?: boolean }): Lease;
  renew(consumer: string, id: string, ttlSeconds?: number): Promise<Lease>;
  /** `operator`: another consumer's lease is force-released. */
  release(consumer: string, id: string, opts?: { operator?: boolean }): Promise<void>;
}

/** The host's process tree, as the API needs it to check a lease's owner (kernel/procfs.ts implements it). */
export interface ProcessTree {
  exists(pid: number): boolean;
  /** Whether `pid` is `ancestor` or one of its descendants. */
  isSelfOrDescendant(pid: number, ancestor: number): boolean;
}
