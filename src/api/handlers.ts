// What each operation does, by operationId: the only code between the HTTP plumbing and the
// service. Bodies and queries arrive validated and typed from core/schema.ts; what a handler
// returns is typed by the operation's response schema, and the status comes from the
// operation. Authorisation beyond "who is calling" (operator actions, VNIs, lease owners)
// is decided here.
import { NetslotError } from "../core/errors.js";
import { pathOf, type OperationId, type OPERATIONS, type ParamsOf, type RequestOf, type ResponseOf } from "../core/schema.js";
import type { LeaseRequest, LeaseService, PoolCounts, ProcessTree, SlotState, UpgradeResult } from "../core/types.js";
import type { Metrics } from "../core/metrics.js";
import type { PeerCred } from "../kernel/libc.js";
import { checkNetwork, requireOperator, type Consumer } from "../tenancy/consumers.js";

/** Operator actions on the pool (not scoped to a consumer); `by` names the operator for the audit log. */
export interface PoolAdmin {
  /** Scrubs a quarantined slot again; throws slot_not_quarantined when it is not quarantined. */
  retryQuarantined(index: number, by?: string): SlotState | Promise<SlotState>;
  /** Stops (or resumes) granting leases. */
  setDraining?(on: boolean, by?: string): { draining: boolean };
  /** Hands over to a new daemon (`netslot upgrade`); throws upgrade_failed with the new daemon's error. */
  upgrade?(args: string[]): Promise<UpgradeResult>;
}

export interface HandlerContext<K extends OperationId> {
  /** The calling consumer; null only on public operations called by no known consumer. */
  consumer: (typeof OPERATIONS)[K] extends { public: true } ? Consumer | null : Consumer;
  /** The calling process as the kernel names it (SO_PEERCRED); undefined when unknown. */
  peer: PeerCred | undefined;
  params: ParamsOf<K>;
  /** The operation's query parameters that were sent, validated. */
  query: Partial<Record<string, string>>;
  /** The validated request body (`{}` when none was sent). */
  body: RequestOf<K>;
  /** Whether the client has gone away (closed the connection) meanwhile. */
  gone: () => boolean;
}

export interface Reply<K extends OperationId> {
  body: ResponseOf<K>;
  headers?: Record<string, string>;
}

export type Handler<K extends OperationId> = (ctx: HandlerContext<K>) => Reply<K> | Promise<Reply<K>>;

/** Operations a server may lack (their routes are then left out: not_found). */
export type OptionalOperation = "releaseQuarantined" | "drain" | "undrain" | "upgrade";

export type Handlers = { [K in Exclude<OperationId, OptionalOperation>]: Handler<K> } & { [K in OptionalOperation]?: Handler<K> };

export interface HandlerDependencies {
  service: LeaseService;
  /** Enables the operator routes of the pool (quarantine release; drain when it can drain). */
  admin?: PoolAdmin | undefined;
  /** The daemon's version, added to health. */
  version: string;
  /** The OpenAPI document as served. */
  document: object;
  /** The daemon's metrics registry, which /metrics renders. */
  metrics: Pick<Metrics, "render" | "contentType">;
  /** Where an explicit ownerPid is checked against the caller. */
  processes: ProcessTree;
}

/**
 * Authorises the tenant network and settles the owner: "caller" is the connecting process
 * as the kernel names it (right across PID namespaces); an explicit ownerPid must be the
 * caller or a descendant, so a consumer cannot tie a lease to a process it does not run.
 */
function authorise(processes: ProcessTree, consumer: Consumer, peer: PeerCred | undefined, request: LeaseRequest): LeaseRequest {
  if (request.network) checkNetwork(consumer, request.network.vni);
  if (request.owner === undefined && request.ownerPid === undefined) return request;
  const { owner, ...rest } = request;
  if (peer === undefined || peer.pid <= 0) {
    throw new NetslotError("owner_forbidden", "the daemon cannot tell which process is calling (no SO_PEERCRED), so it cannot bind the lease to one");
  }
  if (owner === "caller") return { ...rest, ownerPid: peer.pid };
  const pid = request.ownerPid!;
  if (!processes.exists(pid)) throw new NetslotError("invalid_request", `process ${pid} does not exist`, { field: "/ownerPid" });
  if (!processes.isSelfOrDescendant(pid, peer.pid)) {
    throw new NetslotError("owner_forbidden", `process ${pid} is neither the caller (pid ${peer.pid}) nor one of its descendants; send owner: "caller" instead`);
  }
  return rest;
}

/** What a consumer may see of the pool: no quarantine reasons (they may name other consumers' processes), only its own use. */
function poolView(counts: PoolCounts, consumer: Consumer): PoolCounts {
  if (consumer.role === "operator") return counts;
  return {
    ...counts,
    quarantinedSlots: counts.quarantinedSlots.map(({ index, since }) => ({ index, since })),
    consumers: counts.consumers.filter((c) => c.name === consumer.name),
  };
}

const isOperator = (consumer: Consumer): boolean => consumer.role === "operator";

export function createHandlers(deps: HandlerDependencies): Handlers {
  const { service, admin, version } = deps;
  const handlers: Handlers = {
    health: () => ({ body: { ...service.health(), version } }),
    pool: ({ consumer }) => ({ body: poolView(service.pool(), consumer) }),
    listLeases: ({ consumer, query }) => {
      const all = query["all"] === "true";
      if (all) requireOperator(consumer, "listing every consumer's leases");
      return { body: { leases: service.list(consumer.name, { all }) } };
    },
    acquireLease: async ({ consumer, peer, body, gone }) => {
      const lease = await service.acquire(consumer.name, authorise(deps.processes, consumer, peer, body));
      // The client gave up while the request waited for a slot (waitSeconds): nobody will use the lease.
      if (gone()) {
        await service.release(consumer.name, lease.id);
        throw new NetslotError("invalid_request", "the client closed the connection while waiting; the lease was released", { field: "/waitSeconds" });
      }
      return { body: lease, headers: { Location: pathOf("getLease", { id: lease.id }) } };
    },
    getLease: ({ consumer, params }) => ({ body: service.get(consumer.name, String(params.id), { operator: isOperator(consumer) }) }),
    releaseLease: async ({ consumer, params }) => {
      await service.release(consumer.name, String(params.id), { operator: isOperator(consumer) });
      return { body: undefined };
    },
    renewLease: async ({ consumer, params, body }) => ({ body: await service.renew(consumer.name, String(params.id), body.ttlSeconds) }),
    openapi: () => ({ body: deps.document }),
    metrics: async () => ({ body: await deps.metrics.render(), headers: { "Content-Type": deps.metrics.contentType } }),
  };
  if (admin) {
    handlers.releaseQuarantined = async ({ consumer, params }) => {
      requireOperator(consumer, "retrying a quarantined slot");
      const index = Number(params.index);
      return { body: { index, state: await admin.retryQuarantined(index, consumer.name) } };
    };
  }
  if (admin) {
    handlers.upgrade = async ({ consumer, body }) => {
      requireOperator(consumer, "upgrading the daemon");
      if (!admin.upgrade) throw new NetslotError("upgrade_failed", "this daemon cannot hand over (it was not started by `netslot daemon`)");
      return { body: await admin.upgrade(body.args ?? []) };
    };
  }
  if (admin?.setDraining) {
    const setDraining = admin.setDraining.bind(admin);
    handlers.drain = ({ consumer }) => {
      requireOperator(consumer, "draining");
      return { body: setDraining(true, consumer.name) };
    };
    handlers.undrain = ({ consumer }) => {
      requireOperator(consumer, "ending a drain");
      return { body: setDraining(false, consumer.name) };
    };
  }
  return handlers;
}
