// The typed client of the netslot API: HTTP/1.1 over the daemon's unix socket with a
// keep-alive agent. Methods, paths and types come from the API's definition (core/schema.ts).
// Errors come back as NetslotApiError carrying the registry's code.
import * as http from "node:http";
import { ERRORS, isErrorCode, type ErrorCode } from "../core/errors.js";
import {
  OPERATIONS,
  pathOf,
  type DrainState,
  type Health,
  type Lease,
  type LeaseEnd,
  type LeaseRequest,
  type Operation,
  type OperationId,
  type PathArgs,
  type PoolCounts,
  type Problem,
  type RequestOf,
  type ResponseOf,
  type SlotStateResult,
  type UpgradeResult,
} from "../core/schema.js";

export const DEFAULT_SOCKET_PATH = "/run/netslot/api.sock";

export interface NetslotClientOptions {
  /** Default: $NETSLOT_SOCKET, else /run/netslot/api.sock. */
  socketPath?: string;
  /** Bearer token, when the daemon has consumers configured. */
  token?: string;
  /** Per-request timeout in milliseconds (default 30 000). */
  timeoutMs?: number;
  /** Called when a background renewal fails for any reason other than the lease being gone. */
  onAutoRenewError?: (error: Error, leaseId: string) => void;
}

export type AcquireOptions = LeaseRequest & {
  /**
   * Default true: sends `owner: "caller"`, so the daemon releases the lease when this
   * process dies (it reads which process called from the kernel, so this is right inside a
   * container too). Ignored when `owner` or `ownerPid` is given.
   */
  bindToProcess?: boolean;
  /**
   * Default true for leases with a TTL: renews in the background every third of the TTL
   * (the timer does not keep the process alive); stops on release, close() or lease_not_found.
   */
  autoRenew?: boolean;
};

/** An error answered by the daemon (application/problem+json). */
export class NetslotApiError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  /** The request field at fault (a JSON pointer such as /ttlSeconds), for invalid_request. */
  readonly field: string | undefined;
  /** Seconds from the Retry-After header (pool_exhausted, quota_exceeded, draining, booting, store_unavailable). */
  readonly retryAfter: number | undefined;
  /** lease_not_found of a lease that ended within the last hour: when and how (expired, owner_exited, force_released...). */
  readonly ended: LeaseEnd | undefined;
  readonly title: string;
  readonly detail: string;

  constructor(init: { code: ErrorCode; status: number; title: string; detail: string; field?: string; retryAfter?: number; ended?: LeaseEnd }) {
    super(`${init.code}: ${init.detail}`);
    this.name = "NetslotApiError";
    this.code = init.code;
    this.status = init.status;
    this.title = init.title;
    this.detail = init.detail;
    this.field = init.field;
    this.retryAfter = init.retryAfter;
    this.ended = init.ended;
  }

  /** What to do about it, from the error registry. */
  get fix(): string {
    return ERRORS[this.code].fix;
  }
}

/** The daemon could not be reached (no socket, refused, permission denied, timeout). */
export class NetslotConnectionError extends Error {
  readonly socketPath: string;
  /** errno code such as ENOENT, ECONNREFUSED, EACCES, or ETIMEDOUT. */
  readonly errno: string | undefined;

  constructor(socketPath: string, cause: Error & { code?: string }) {
    const hint =
      cause.code === "ENOENT" || cause.code === "ECONNREFUSED"
        ? " (is the daemon running? set --socket or NETSLOT_SOCKET)"
        : cause.code === "EACCES"
          ? " (the socket is mode 0660: run as root or as a member of its group)"
          : "";
    super(`cannot reach netslot at ${socketPath}: ${cause.message}${hint}`, { cause });
    this.name = "NetslotConnectionError";
    this.socketPath = socketPath;
    this.errno = cause.code;
  }
}

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A problem as received: the fields of the Problem schema, each still to be checked. */
type ProblemBody = { [K in keyof Problem]?: unknown };

function isLeaseEnd(value: unknown): value is LeaseEnd {
  const v = value as Partial<LeaseEnd> | null;
  return typeof v === "object" && v !== null && typeof v.at === "string" && typeof v.cause === "string";
}

function errorFromResponse(res: RawResponse): NetslotApiError {
  let problem: ProblemBody = {};
  try {
    const parsed = JSON.parse(res.body) as unknown;
    if (parsed !== null && typeof parsed === "object") problem = parsed;
  } catch {
    // Not JSON: fall back to the status.
  }
  const code: ErrorCode = isErrorCode(problem.code) ? problem.code : res.status === 404 ? "not_found" : "internal";
  const retryHeader = res.headers["retry-after"];
  const retryAfter = retryHeader !== undefined && /^\d+$/.test(retryHeader) ? Number(retryHeader) : undefined;
  return new NetslotApiError({
    code,
    status: res.status,
    title: typeof problem.title === "string" ? problem.title : ERRORS[code].title,
    detail: typeof problem.detail === "string" ? problem.detail : `HTTP ${res.status}`,
    ...(typeof problem.field === "string" ? { field: problem.field } : {}),
    ...(retryAfter !== undefined ? { retryAfter } : {}),
    ...(isLeaseEnd(problem.ended) ? { ended: problem.ended } : {}),
  });
}

export class NetslotClient {
  readonly socketPath: string;
  private readonly token: string | undefined;
  private readonly timeoutMs: number;
  private readonly onAutoRenewError: ((error: Error, leaseId: string) => void) | undefined;
  private readonly agent: http.Agent;
  /** Lease id → its pending background renewal. */
  private readonly renewals = new Map<string, NodeJS.Timeout>();

  constructor(options: NetslotClientOptions = {}) {
    this.socketPath = options.socketPath ?? process.env.NETSLOT_SOCKET ?? DEFAULT_SOCKET_PATH;
    this.token = options.token;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.onAutoRenewError = options.onAutoRenewError;
    // A timeout is what makes Node's agent honour the daemon's Keep-Alive: timeout=5 (it
    // drops an idle connection 1 s before; without one it keeps it until the daemon closes
    // it, and a request sent just then fails). It applies to idle connections only.
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 16, timeout: 60_000 });
  }

  health(): Promise<Health> {
    return this.operation("health", []);
  }

  pool(): Promise<PoolCounts> {
    return this.operation("pool", []);
  }

  /** Leases a slot. See AcquireOptions for process binding and background renewal. */
  async acquire(opts: AcquireOptions = {}): Promise<Lease> {
    const { bindToProcess = true, autoRenew = true, ...request } = opts;
    const body: LeaseRequest = { ...request };
    if (bindToProcess && body.ownerPid === undefined && body.owner === undefined) body.owner = "caller";
    // A request that may wait for a slot gets its wait on top of the usual timeout.
    const lease = await this.operation("acquireLease", [], body, undefined, this.timeoutMs + (body.waitSeconds ?? 0) * 1000);
    if (autoRenew && lease.expiresAt !== null) {
      const ttl = request.ttlSeconds ?? Math.max(1, Math.round((Date.parse(lease.expiresAt) - Date.parse(lease.createdAt)) / 1000));
      this.startAutoRenew(lease.id, ttl, request.ttlSeconds);
    }
    return lease;
  }

  /** The caller's leases; `all` (operators only): every consumer's. */
  async list(opts: { all?: boolean } = {}): Promise<Lease[]> {
    return (await this.operation("listLeases", [], undefined, opts.all ? { all: "true" } : undefined)).leases;
  }

  get(id: string): Promise<Lease> {
    return this.operation("getLease", [{ id }]);
  }

  /** Moves the expiry to now + ttlSeconds (default: the lease's own TTL). */
  renew(id: string, ttlSeconds?: number): Promise<Lease> {
    return this.operation("renewLease", [{ id }], ttlSeconds === undefined ? {} : { ttlSeconds });
  }

  /** Releases the lease; a second release throws lease_not_found. */
  async release(id: string): Promise<void> {
    this.stopAutoRenew(id);
    await this.operation("releaseLease", [{ id }]);
  }

  /**
   * Leases a slot, runs `fn` with it and always releases it, also when `fn` throws (then
   * `fn`'s error is what you get). A lease that is already gone at release is not an error.
   */
  async withSlot<T>(opts: AcquireOptions | undefined, fn: (lease: Lease) => Promise<T> | T): Promise<T> {
    const lease = await this.acquire(opts ?? {});
    let result: T;
    try {
      result = await fn(lease);
    } catch (err) {
      await this.release(lease.id).catch(() => undefined);
      throw err;
    }
    try {
      await this.release(lease.id);
    } catch (err) {
      if (!(err instanceof NetslotApiError && err.code === "lease_not_found")) throw err;
    }
    return result;
  }

  /** Prometheus text of the daemon and the API. */
  async metrics(): Promise<string> {
    return this.operation("metrics", []);
  }

  /** Operator action: scrub a quarantined slot again (throws slot_not_quarantined otherwise). */
  releaseQuarantined(index: number): Promise<SlotStateResult> {
    return this.operation("releaseQuarantined", [{ index }], {});
  }

  /**
   * Operator action (`netslot upgrade`): the daemon hands over to a new one started from the
   * installed code; `args` are daemon flags replacing the running ones of the same name.
   */
  upgrade(args: string[] = []): Promise<UpgradeResult> {
    return this.operation("upgrade", [], args.length > 0 ? { args } : {});
  }

  /** Operator action: stop granting leases (new requests get 503 draining); existing leases run on. */
  drain(): Promise<DrainState> {
    return this.operation("drain", [], {});
  }

  /** Operator action: grant leases again. */
  undrain(): Promise<DrainState> {
    return this.operation("undrain", []);
  }

  /** Stops background renewals and closes idle connections. Leases are not released. */
  close(): void {
    for (const timer of this.renewals.values()) clearTimeout(timer);
    this.renewals.clear();
    this.agent.destroy();
  }

  // ── background renewal ──────────────────────────────────────────────────────────────

  private startAutoRenew(id: string, ttlSeconds: number, requestTtl: number | undefined): void {
    const interval = Math.max(100, (ttlSeconds * 1000) / 3);
    const schedule = (): void => {
      const timer = setTimeout(() => void tick(), interval);
      timer.unref();
      this.renewals.set(id, timer);
    };
    const tick = async (): Promise<void> => {
      try {
        await this.renew(id, requestTtl);
      } catch (err) {
        if (err instanceof NetslotApiError && err.code === "lease_not_found") {
          this.renewals.delete(id);
          return;
        }
        this.onAutoRenewError?.(err as Error, id);
      }
      // Released (or closed) while the renewal was in flight: do not start another.
      if (this.renewals.has(id)) schedule();
    };
    schedule();
  }

  private stopAutoRenew(id: string): void {
    const timer = this.renewals.get(id);
    if (timer !== undefined) clearTimeout(timer);
    this.renewals.delete(id);
  }

  // ── transport ───────────────────────────────────────────────────────────────────────

  /** One operation of core/schema.ts: its method and path from there, its answer typed by its response schema. */
  private async operation<K extends OperationId>(
    operationId: K,
    params: PathArgs<K>,
    body?: [RequestOf<K>] extends [never] ? Record<string, never> : RequestOf<K>,
    query?: Record<string, string>,
    timeoutMs = this.timeoutMs,
  ): Promise<ResponseOf<K>> {
    const op: Operation = OPERATIONS[operationId];
    const method = op.method.toUpperCase();
    const search = query === undefined ? "" : `?${new URLSearchParams(query).toString()}`;
    const path = `${pathOf(operationId, ...params)}${search}`;
    const res = await this.call(method, path, body, timeoutMs);
    if (op.response.text) return res.body as ResponseOf<K>;
    if (!op.response.schema) return undefined as ResponseOf<K>;
    try {
      return JSON.parse(res.body) as ResponseOf<K>;
    } catch {
      throw new Error(`netslot answered ${method} ${path} with a body that is not JSON`);
    }
  }

  /** One request; a 4xx/5xx becomes a NetslotApiError. */
  private async call(method: string, path: string, body?: unknown, timeoutMs = this.timeoutMs): Promise<RawResponse> {
    let res: RawResponse;
    try {
      res = await this.send(method, path, body, timeoutMs);
    } catch (err) {
      // A kept-alive socket the server closed meanwhile, before any answer: a GET may be
      // retried once; any request that could not even be written (EPIPE: the server had
      // closed the connection, so it never saw this request) too.
      const failed = err as { reusedSocket?: boolean; errno?: string };
      if (failed.reusedSocket && (method === "GET" || failed.errno === "EPIPE")) res = await this.send(method, path, body, timeoutMs);
      else throw err;
    }
    if (res.status >= 400) throw errorFromResponse(res);
    return res;
  }

  private send(method: string, path: string, body?: unknown, timeoutMs = this.timeoutMs): Promise<RawResponse> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body), "utf8");
    const headers: http.OutgoingHttpHeaders = { Accept: "application/json" };
    if (this.token !== undefined) headers["Authorization"] = `Bearer ${this.token}`;
    if (payload) {
      headers["Content-Type"] = "application/json";
      headers["Content-Length"] = payload.length;
    }
    return new Promise<RawResponse>((resolve, reject) => {
      const req = http.request({ socketPath: this.socketPath, path, method, headers, agent: this.agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", (err) => reject(new NetslotConnectionError(this.socketPath, err)));
      });
      req.setTimeout(timeoutMs, () => {
        const err: Error & { code?: string } = new Error(`no answer within ${timeoutMs} ms`);
        err.code = "ETIMEDOUT";
        req.destroy(err);
      });
      req.on("error", (err: Error & { code?: string }) => {
        const wrapped = new NetslotConnectionError(this.socketPath, err);
        if (req.reusedSocket && (err.code === "ECONNRESET" || err.code === "EPIPE")) Object.assign(wrapped, { reusedSocket: true });
        reject(wrapped);
      });
      req.end(payload);
    });
  }
}
