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
  ownerPid?: number;
}

export type SlotState = "free" | "leased" | "scrubbing" | "quarantined" | "building" | "missing";

export interface QuarantinedSlot {
  index: number;
  reason: string;
  since: string;
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
}

export interface Health {
  status: "booting" | "ready";
  pool: PoolCounts & { built: number };
  /** The daemon's package version (also in the Netslot-Version header of every answer). */
  version: string;
}

/** Answer of POST /v1/upgrade (`netslot upgrade`). */
export interface UpgradeResult {
  previous: { pid: number; version: string };
  current: { pid: number; version: string };
  /** From the request until the new daemon served. */
  handoverMs: number;
}

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
