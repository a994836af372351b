// Shapes shared by the pool, the store, the API and the SDK. The wire shapes are defined
// once, as schemas in core/schema.ts; their TypeScript types are re-exported here so the
// layers below the API need not know about schemas.
import type { Health, Lease, LeaseRequest, PoolCounts } from "./schema.js";

export type {
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

/**
 * What the API needs from the pool. Every method is scoped to one consumer: a lease of
 * another consumer is reported as not found. Methods throw `NetslotError` (errors.ts).
 */
export interface LeaseService {
  /** The API adds the version. */
  health(): Omit<Health, "version">;
  pool(): PoolCounts;
  acquire(consumer: string, request: LeaseRequest): Promise<Lease>;
  list(consumer: string): Lease[];
  get(consumer: string, id: string): Lease;
  renew(consumer: string, id: string, ttlSeconds?: number): Promise<Lease>;
  release(consumer: string, id: string): Promise<void>;
  /** Prometheus text exposition of the pool's own metrics. */
  metrics(): string;
}
