// What each operation does, by operationId: the only code between the HTTP plumbing and the
// service. Bodies arrive validated and typed from core/schema.ts; what a handler returns is
// typed by the operation's response schema, and the status comes from the operation.
import type { LeaseService, SlotState } from "../core/types.js";
import { pathOf, type OperationId, type OPERATIONS, type ParamsOf, type RequestOf, type ResponseOf } from "../core/schema.js";

/** Operator actions on the pool (not scoped to a consumer). */
export interface PoolAdmin {
  /** Scrubs a quarantined slot again; throws slot_not_quarantined when it is not quarantined. */
  retryQuarantined(index: number): SlotState | Promise<SlotState>;
}

export interface HandlerContext<K extends OperationId> {
  /** The calling consumer; null only on public operations called without a valid token. */
  consumer: (typeof OPERATIONS)[K] extends { public: true } ? string | null : string;
  params: ParamsOf<K>;
  /** The validated request body (`{}` when none was sent). */
  body: RequestOf<K>;
}

export interface Reply<K extends OperationId> {
  body: ResponseOf<K>;
  headers?: Record<string, string>;
}

export type Handler<K extends OperationId> = (ctx: HandlerContext<K>) => Reply<K> | Promise<Reply<K>>;

/** A handler for every operation; the optional ones leave their route out when absent. */
export type Handlers = { [K in OperationId]: Handler<K> } | ({ [K in Exclude<OperationId, "releaseQuarantined">]: Handler<K> } & { releaseQuarantined?: undefined });

export interface HandlerDependencies {
  service: LeaseService;
  /** Enables POST /v1/pool/quarantined/{index}/release. */
  admin?: PoolAdmin | undefined;
  /** The daemon's version, added to health. */
  version: string;
  /** The OpenAPI document as served. */
  document: object;
  /** Prometheus text of everything /metrics shows. */
  metricsText: () => string;
}

export function createHandlers(deps: HandlerDependencies): Handlers {
  const { service, admin, version } = deps;
  const common = {
    health: () => ({ body: { ...service.health(), version } }),
    pool: () => ({ body: service.pool() }),
    listLeases: ({ consumer }) => ({ body: { leases: service.list(consumer) } }),
    acquireLease: async ({ consumer, body }) => {
      const lease = await service.acquire(consumer, body);
      return { body: lease, headers: { Location: pathOf("getLease", { id: lease.id }) } };
    },
    getLease: ({ consumer, params }) => ({ body: service.get(consumer, String(params.id)) }),
    releaseLease: async ({ consumer, params }) => {
      await service.release(consumer, String(params.id));
      return { body: undefined };
    },
    renewLease: async ({ consumer, params, body }) => ({ body: await service.renew(consumer, String(params.id), body.ttlSeconds) }),
    openapi: () => ({ body: deps.document }),
    metrics: () => ({ body: deps.metricsText(), headers: { "Content-Type": "text/plain; version=0.0.4; charset=utf-8" } }),
  } satisfies { [K in Exclude<OperationId, "releaseQuarantined">]: Handler<K> };
  if (!admin) return common;
  return {
    ...common,
    releaseQuarantined: async ({ params }) => {
      const index = Number(params.index);
      return { body: { index, state: await admin.retryQuarantined(index) } };
    },
  };
}
