// An in-memory fake of the pool (not of the kernel) behind the real API server, shared by
// the API tests (raw HTTP) and the SDK/CLI tests.
import { NetslotError } from "../../src/core/errors.js";
import type { Health, Lease, LeaseRequest, LeaseService, PoolCounts, SlotState } from "../../src/core/types.js";

/**
 * `size` slots to lease plus one more, slot `size`, quarantined. Booting answers
 * Retry-After 3, an exhausted pool Retry-After 1.
 */
export class FakeService implements LeaseService {
  status: "booting" | "ready" = "ready";
  leases = new Map<string, Lease>();
  /** Every call of a mutating method (acquire, renew, release), in order. */
  calls: { method: string; consumer: string; args: unknown[] }[] = [];
  /** Thrown by the next call of the named method (health, acquire, get). */
  failNext = new Map<string, unknown>();
  private seq = 0;

  constructor(public size: number) {}

  private maybeFail(method: string): void {
    const error = this.failNext.get(method);
    if (error !== undefined) {
      this.failNext.delete(method);
      // eslint-disable-next-line @typescript-eslint/only-throw-error -- tests throw non-Errors on purpose
      throw error;
    }
  }

  /** How many times `method` was called. */
  count(method: string): number {
    return this.calls.filter((c) => c.method === method).length;
  }

  health(): Omit<Health, "version"> {
    this.maybeFail("health");
    const { size, free, leased, scrubbing, quarantined, missing } = this.pool();
    return { status: this.status, draining: false, pool: { size, free, leased, scrubbing, quarantined, missing, built: this.status === "ready" ? this.size : 1 } };
  }

  pool(): PoolCounts {
    return {
      size: this.size + 1,
      free: this.size - this.leases.size,
      leased: this.leases.size,
      scrubbing: 0,
      quarantined: 1,
      missing: 0,
      quarantinedSlots: [{ index: this.size, reason: "scrub failed: nft table left behind", since: "2024-05-01T10:00:00.000Z" }],
      draining: false,
      consumers: [],
    };
  }

  async acquire(consumer: string, request: LeaseRequest): Promise<Lease> {
    this.calls.push({ method: "acquire", consumer, args: [request] });
    this.maybeFail("acquire");
    if (this.status === "booting") throw new NetslotError("booting", "the pool is still being built", { retryAfter: 3 });
    if (this.leases.size >= this.size) throw new NetslotError("pool_exhausted", `all ${this.size} slots are leased`, { retryAfter: 1 });
    const used = new Set([...this.leases.values()].map((l) => l.slot.index));
    let index = 0;
    while (used.has(index)) index++;
    const now = Date.now();
    const lease: Lease = {
      id: `l${++this.seq}x${Math.random().toString(36).slice(2, 8)}`,
      consumer,
      slot: { index, netns: "/proc/self/ns/net", tap: "tap0", outsideAddress: `10.200.128.${index}` },
      guest: {
        ip: "169.254.0.21",
        prefixLength: 30,
        gateway: "169.254.0.22",
        mac: "02:00:a9:fe:00:15",
        mtu: 1500,
        kernelIpArg: "ip=169.254.0.21::169.254.0.22:255.255.255.252::eth0:off",
      },
      labels: request.labels ?? {},
      ...(request.network ? { network: request.network } : {}),
      ...(request.ownerPid ? { ownerPid: request.ownerPid } : {}),
      createdAt: new Date(now).toISOString(),
      expiresAt: request.ttlSeconds ? new Date(now + request.ttlSeconds * 1000).toISOString() : null,
    };
    this.leases.set(lease.id, lease);
    return lease;
  }

  list(consumer: string, opts: { all?: boolean } = {}): Lease[] {
    return [...this.leases.values()].filter((l) => opts.all === true || l.consumer === consumer);
  }

  get(consumer: string, id: string, opts: { operator?: boolean } = {}): Lease {
    this.maybeFail("get");
    const lease = this.leases.get(id);
    if (!lease || (lease.consumer !== consumer && opts.operator !== true)) throw new NetslotError("lease_not_found", `no lease ${id}`);
    return lease;
  }

  /** Without `ttlSeconds`, the lease's own TTL again (none for a lease without expiry). */
  async renew(consumer: string, id: string, ttlSeconds?: number): Promise<Lease> {
    this.calls.push({ method: "renew", consumer, args: [id, ttlSeconds] });
    const lease = this.get(consumer, id);
    const ttl = ttlSeconds ?? (lease.expiresAt ? (Date.parse(lease.expiresAt) - Date.parse(lease.createdAt)) / 1000 : undefined);
    if (ttl !== undefined) lease.expiresAt = new Date(Date.now() + ttl * 1000).toISOString();
    return lease;
  }

  async release(consumer: string, id: string, opts: { operator?: boolean } = {}): Promise<void> {
    this.calls.push({ method: "release", consumer, args: [id] });
    this.get(consumer, id, opts);
    this.leases.delete(id);
  }
}

/** The admin side: only `quarantined` is quarantined; `calls` records every retry asked for. */
export class FakeAdmin {
  calls: number[] = [];
  draining = false;

  setDraining(on: boolean): { draining: boolean } {
    this.draining = on;
    return { draining: on };
  }

  constructor(private readonly quarantined: number) {}

  retryQuarantined(index: number): SlotState {
    this.calls.push(index);
    if (index !== this.quarantined) throw new NetslotError("slot_not_quarantined", `slot ${index} is not quarantined`);
    return "scrubbing";
  }
}
