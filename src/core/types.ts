// Shapes shared by the pool, the store, the API and the SDK. The API's JSON is exactly
// these types; openapi.json describes the same shapes and a test keeps the two in step.

/** Where the guest sits inside a slot; identical in every slot. */
export interface GuestConfig {
  ip: string;
  prefixLength: number;
  gateway: string;
  mac: string;
  mtu: number;
  /** The `ip=` kernel argument that configures the guest, e.g. for Firecracker boot args. */
  kernelIpArg: string;
}

export interface SlotRef {
  index: number;
  /** Path of the named network namespace, e.g. /run/netns/nsl-3. */
  netns: string;
  tap: string;
  outsideAddress: string;
}

export interface TenantNetwork {
  vni: number;
  cidr: string;
}

export interface Lease {
  id: string;
  consumer: string;
  slot: SlotRef;
  guest: GuestConfig;
  labels: Record<string, string>;
  network?: TenantNetwork;
  ownerPid?: number;
  createdAt: string;
  /** null when the lease has no TTL. */
  expiresAt: string | null;
}

export interface LeaseRequest {
  ttlSeconds?: number;
  labels?: Record<string, string>;
  network?: TenantNetwork;
  /** "caller": the lease ends when the calling process (as the kernel names it) exits. */
  owner?: "caller";
  /** The lease ends when this process exits; it must be the caller or a descendant. */
  ownerPid?: number;
}

export type SlotState = "free" | "leased" | "scrubbing" | "quarantined" | "building" | "missing";

export interface QuarantinedSlot {
  index: number;
  /** Operators only: a reason may name other consumers' processes. */
  reason?: string;
  since: string;
}

/** One configured consumer's use of the pool. */
export interface ConsumerUsage {
  name: string;
  leased: number;
  reserved: number;
  /** null: no cap. */
  max: number | null;
}

export interface PoolCounts {
  size: number;
  free: number;
  leased: number;
  scrubbing: number;
  quarantined: number;
  /** Slots not yet built (boot) or that could not be built. */
  missing: number;
  quarantinedSlots: QuarantinedSlot[];
  /** An operator stopped new leases (503 draining); existing leases run on. */
  draining: boolean;
  /** Configured consumers' use (a consumer sees only its own; empty without consumers). */
  consumers: ConsumerUsage[];
}

/** What anyone who can open the socket may see: status and counts, nothing about consumers. */
export interface Health {
  status: "booting" | "ready";
  draining: boolean;
  pool: Pick<PoolCounts, "size" | "free" | "leased" | "scrubbing" | "quarantined" | "missing"> & { built: number };
  /** The daemon's package version (also in the Netslot-Version header of every answer). */
  version: string;
}

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
  /** Prometheus text exposition of the pool's own metrics. */
  metrics(): string;
}
