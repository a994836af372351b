// The HTTP API: HTTP/1.1 + JSON on a unix socket. openapi.json is the source of truth for
// routes and bodies; every error is a problem+json from the registry. Bad input is answered
// before the service is called, and nothing a client sends can crash the server.
import * as fs from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import * as path from "node:path";
import { NetslotError } from "../core/errors.js";
import { packageVersion } from "../core/version.js";
import type { LeaseRequest, LeaseService, PoolCounts, SlotState } from "../core/types.js";
import { peerCred, type PeerCred } from "../kernel/libc.js";
import { isSelfOrDescendant, parentPid } from "../kernel/procfs.js";
import { checkNetwork, ConsumerDirectory, requireOperator, type Consumer, type ConsumerConfig } from "../tenancy/consumers.js";
import { rawProblemResponse, sendProblem } from "./problem.js";
import { openApiDocument } from "./openapi.js";
import { createRequestValidators } from "./validate.js";

export type { ConsumerConfig } from "../tenancy/consumers.js";

/** Request bodies larger than this are refused with 413. */
export const MAX_BODY_BYTES = 64 * 1024;

export interface ApiLogger {
  /** Genuine bugs only (errors that are not NetslotError); client mistakes are not logged. */
  error(message: string, fields?: Record<string, unknown>): void;
}

/** Operator actions on the pool (not scoped to a consumer); `by` names the operator for the audit log. */
export interface PoolAdmin {
  /** Scrubs a quarantined slot again; throws slot_not_quarantined when it is not quarantined. */
  retryQuarantined(index: number, by?: string): SlotState | Promise<SlotState>;
  /** Stops (or resumes) granting leases. */
  setDraining?(on: boolean, by?: string): { draining: boolean };
}

export interface ApiServerOptions {
  service: LeaseService;
  /** Enables POST /v1/pool/quarantined/{index}/release (and /v1/pool/drain when it can drain). */
  admin?: PoolAdmin;
  /** The configured consumers: entries, or the daemon's parsed directory (shared with the pool's quotas). */
  consumers?: ConsumerConfig[] | ConsumerDirectory;
  /** More Prometheus text appended to GET /metrics (e.g. the daemon's process metrics). */
  metricsExtra?: () => string;
  logger?: ApiLogger;
  /** Reported in /v1/health and the Netslot-Version header; the package's version when omitted. */
  version?: string;
}

/** Header on every answer: which daemon version answered (clients may log it; /v1 only grows). */
export const VERSION_HEADER = "Netslot-Version";

export interface ApiServer {
  /** `group`: the socket file's group (--socket-group), so its members may connect. */
  listen(socketPath: string, opts?: { group?: number }): Promise<void>;
  close(): Promise<void>;
}

const stderrLogger: ApiLogger = {
  error: (message, fields) => process.stderr.write(`${JSON.stringify({ level: "error", msg: message, ...fields })}\n`),
};

// ---------------------------------------------------------------------------------------
// Metrics: a request counter by method, route and status, a latency histogram by route.

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const KNOWN_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

interface Histogram {
  buckets: number[];
  sum: number;
  count: number;
}

class HttpMetrics {
  private readonly requests = new Map<string, number>();
  private readonly latency = new Map<string, Histogram>();

  observe(method: string, route: string, status: number, seconds: number): void {
    const m = KNOWN_METHODS.has(method) ? method : "OTHER";
    const counterKey = `${m}\u0000${route}\u0000${status}`;
    this.requests.set(counterKey, (this.requests.get(counterKey) ?? 0) + 1);
    const histKey = `${m}\u0000${route}`;
    let hist = this.latency.get(histKey);
    if (!hist) {
      hist = { buckets: LATENCY_BUCKETS.map(() => 0), sum: 0, count: 0 };
      this.latency.set(histKey, hist);
    }
    for (let i = 0; i < LATENCY_BUCKETS.length; i++) if (seconds <= LATENCY_BUCKETS[i]!) hist.buckets[i]!++;
    hist.sum += seconds;
    hist.count++;
  }

  render(): string {
    const lines: string[] = [
      "# HELP netslot_http_requests_total HTTP requests answered by the API, by method, route and status.",
      "# TYPE netslot_http_requests_total counter",
    ];
    for (const [key, value] of this.requests) {
      const [method, route, status] = key.split("\u0000");
      lines.push(`netslot_http_requests_total{method="${method}",route="${route}",status="${status}"} ${value}`);
    }
    lines.push(
      "# HELP netslot_http_request_duration_seconds Time from request to the end of the response, by method and route.",
      "# TYPE netslot_http_request_duration_seconds histogram",
    );
    for (const [key, hist] of this.latency) {
      const [method, route] = key.split("\u0000");
      const labels = `method="${method}",route="${route}"`;
      LATENCY_BUCKETS.forEach((le, i) => {
        lines.push(`netslot_http_request_duration_seconds_bucket{${labels},le="${le}"} ${hist.buckets[i]}`);
      });
      lines.push(`netslot_http_request_duration_seconds_bucket{${labels},le="+Inf"} ${hist.count}`);
      lines.push(`netslot_http_request_duration_seconds_sum{${labels}} ${hist.sum}`);
      lines.push(`netslot_http_request_duration_seconds_count{${labels}} ${hist.count}`);
    }
    return `${lines.join("\n")}\n`;
  }
}

// ---------------------------------------------------------------------------------------
// Routes.

interface RequestContext {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  /** null only on the public routes when the caller was not recognised. */
  consumer: Consumer | null;
  /** The calling process as the kernel names it (SO_PEERCRED); undefined when unknown. */
  peer: PeerCred | undefined;
  query: URLSearchParams | undefined;
  /** The decoded lease id of /v1/leases/{id} routes. */
  id: string;
}

type Handler = (ctx: RequestContext) => Promise<void> | void;

interface Route {
  /** The OpenAPI path template; also the `route` label of the metrics. */
  template: string;
  /** Needs no token (GET only). */
  public?: boolean;
  methods: { [method: string]: Handler };
}

interface RouteMatch {
  route: Route;
  idSegment?: string;
  /** The slot index of the quarantine route (digits). */
  index?: string;
}

const UNMATCHED_ROUTE = "unmatched";

/** The query string of a URL (undefined without one: most requests have none). */
function queryOf(url: string | undefined): URLSearchParams | undefined {
  const at = url?.indexOf("?") ?? -1;
  if (at === -1) return undefined;
  const end = url!.indexOf("#", at);
  return new URLSearchParams(url!.slice(at + 1, end === -1 ? undefined : end));
}

/** Peer credentials per connection, read once when it is accepted. */
const peers = new WeakMap<net.Socket, PeerCred>();

/** SO_PEERCRED of an accepted unix connection; undefined when node does not expose the fd. */
function readPeer(socket: net.Socket): PeerCred | undefined {
  // net.Socket has no public accessor for its descriptor; _handle.fd is the libuv pipe's.
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== "number" || fd < 0) return undefined;
  try {
    return peerCred(fd);
  } catch {
    return undefined;
  }
}

function pathOf(url: string | undefined): string {
  const raw = url ?? "/";
  const end = raw.search(/[?#]/);
  return end === -1 ? raw : raw.slice(0, end);
}

/** Reads a body of at most `limit` bytes; null when it is larger (reading stops there). */
function readLimited(req: http.IncomingMessage, limit: number): Promise<Buffer | null | "aborted"> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = (): void => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onAbort);
      req.off("close", onAbort);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        cleanup();
        req.pause();
        chunks.length = 0;
        resolve(null);
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      cleanup();
      resolve(Buffer.concat(chunks, size));
    };
    const onAbort = (): void => {
      cleanup();
      resolve("aborted");
    };
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onAbort);
    req.on("close", onAbort);
  });
}

/** Sentinel: the request was already answered (or abandoned by the client). */
const ANSWERED = Symbol("answered");

/** Whether the request carries a body (chunked, or a Content-Length over zero). */
function announcesBody(req: http.IncomingMessage): boolean {
  if (req.headers["transfer-encoding"] !== undefined) return true;
  const length = req.headers["content-length"];
  return length !== undefined && Number(length) > 0;
}

function isJsonContentType(value: string): boolean {
  const [type, ...params] = value.split(";").map((part) => part.trim().toLowerCase());
  if (type !== "application/json") return false;
  for (const param of params) {
    const [name, v] = param.split("=").map((s) => s.trim());
    if (name === "charset" && v !== "utf-8" && v !== '"utf-8"') return false;
  }
  return true;
}

export function createApiServer(options: ApiServerOptions): ApiServer {
  const { service } = options;
  const logger = options.logger ?? stderrLogger;
  const directory = options.consumers instanceof ConsumerDirectory ? options.consumers : new ConsumerDirectory(options.consumers ?? []);
  const documentText = JSON.stringify(openApiDocument());
  // Compiled once, now: a broken schema fails at startup, not on the first request.
  const validators = createRequestValidators();
  const metrics = new HttpMetrics();
  const version = options.version ?? packageVersion();

  function sendJson(res: http.ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
    const body = JSON.stringify(value);
    res.statusCode = status;
    res.setHeader("Content-Type", "application/json; charset=utf-8");
    res.setHeader("Content-Length", Buffer.byteLength(body));
    res.setHeader("Cache-Control", "no-store");
    for (const [name, v] of Object.entries(headers)) res.setHeader(name, v);
    res.end(body);
  }

  /** The JSON body of a POST, `{}` when empty; answers 413/415/400 itself. */
  async function readJsonBody(req: http.IncomingMessage, res: http.ServerResponse): Promise<unknown> {
    const lengthHeader = req.headers["content-length"];
    const length = lengthHeader === undefined ? undefined : Number(lengthHeader);
    const hasBody = announcesBody(req);
    if (length !== undefined && length > MAX_BODY_BYTES) {
      // Answered without reading; the connection closes so the rest is never read.
      sendProblem(res, new NetslotError("payload_too_large", `the body is ${length} bytes; at most ${MAX_BODY_BYTES} are accepted`), {
        Connection: "close",
      });
      return ANSWERED;
    }
    const contentType = req.headers["content-type"];
    // Only a body needs a media type: an empty POST is {} whatever its headers say.
    if (hasBody && !(contentType !== undefined && isJsonContentType(contentType))) {
      const got = contentType === undefined ? "no Content-Type" : `Content-Type ${JSON.stringify(contentType)}`;
      sendProblem(res, new NetslotError("unsupported_media_type", `the body must be application/json; got ${got}`), {
        Connection: "close",
      });
      return ANSWERED;
    }
    if (!hasBody) return {};
    const body = await readLimited(req, MAX_BODY_BYTES);
    if (body === "aborted") return ANSWERED;
    if (body === null) {
      sendProblem(res, new NetslotError("payload_too_large", `the body is larger than ${MAX_BODY_BYTES} bytes`), {
        Connection: "close",
      });
      return ANSWERED;
    }
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(body);
    } catch {
      throw new NetslotError("invalid_request", "the request body is not valid UTF-8", { field: "" });
    }
    if (text.trim() === "") return {};
    try {
      return JSON.parse(text) as unknown;
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      throw new NetslotError("invalid_request", `the request body is not valid JSON: ${reason}`, { field: "" });
    }
  }

  function callerOf(ctx: RequestContext): Consumer {
    // Only public routes run without a consumer, and they never ask for one.
    if (ctx.consumer === null) throw new Error("no consumer on an authenticated route");
    return ctx.consumer;
  }

  function consumerOf(ctx: RequestContext): string {
    return callerOf(ctx).name;
  }

  function isOperator(ctx: RequestContext): boolean {
    return callerOf(ctx).role === "operator";
  }

  /**
   * Authorises the tenant network and settles the owner: "caller" is the connecting process
   * as the kernel names it (right across PID namespaces); an explicit ownerPid must be the
   * caller or a descendant, so a consumer cannot tie a lease to a process it does not run.
   */
  function authorise(ctx: RequestContext, request: LeaseRequest): LeaseRequest {
    const consumer = callerOf(ctx);
    if (request.network) checkNetwork(consumer, request.network.vni);
    if (request.owner === undefined && request.ownerPid === undefined) return request;
    const { owner, ...rest } = request;
    const peer = ctx.peer;
    if (peer === undefined || peer.pid <= 0) {
      throw new NetslotError("owner_forbidden", "the daemon cannot tell which process is calling (no SO_PEERCRED), so it cannot bind the lease to one");
    }
    if (owner === "caller") return { ...rest, ownerPid: peer.pid };
    const pid = request.ownerPid!;
    if (parentPid(pid) === undefined) throw new NetslotError("invalid_request", `process ${pid} does not exist`, { field: "/ownerPid" });
    if (!isSelfOrDescendant(pid, peer.pid)) {
      throw new NetslotError("owner_forbidden", `process ${pid} is neither the caller (pid ${peer.pid}) nor one of its descendants; send owner: "caller" instead`);
    }
    return rest;
  }

  /** What a consumer may see of the pool: no quarantine reasons (they may name other consumers' processes), only its own use. */
  function poolView(ctx: RequestContext): PoolCounts {
    const counts = service.pool();
    if (isOperator(ctx)) return counts;
    const name = consumerOf(ctx);
    return {
      ...counts,
      quarantinedSlots: counts.quarantinedSlots.map(({ index, since }) => ({ index, since })),
      consumers: counts.consumers.filter((c) => c.name === name),
    };
  }

  const leaseRoute: Route = {
    template: "/v1/leases/{id}",
    methods: {
      GET: (ctx) => sendJson(ctx.res, 200, service.get(consumerOf(ctx), ctx.id, { operator: isOperator(ctx) })),
      DELETE: async (ctx) => {
        await service.release(consumerOf(ctx), ctx.id, { operator: isOperator(ctx) });
        ctx.res.statusCode = 204;
        ctx.res.setHeader("Cache-Control", "no-store");
        ctx.res.end();
      },
    },
  };
  const renewRoute: Route = {
    template: "/v1/leases/{id}/renew",
    methods: {
      POST: async (ctx) => {
        const body = await readJsonBody(ctx.req, ctx.res);
        if (body === ANSWERED) return;
        const checked = validators.body("renewLease", body);
        if (!checked.ok) throw new NetslotError("invalid_request", checked.error.detail, { field: checked.error.field });
        sendJson(ctx.res, 200, await service.renew(consumerOf(ctx), ctx.id, checked.value.ttlSeconds));
      },
    },
  };
  const staticRoutes = new Map<string, Route>([
    ["/v1/health", { template: "/v1/health", public: true, methods: { GET: (ctx) => sendJson(ctx.res, 200, { ...service.health(), version }) } }],
    ["/v1/pool", { template: "/v1/pool", methods: { GET: (ctx) => sendJson(ctx.res, 200, poolView(ctx)) } }],
    [
      "/v1/leases",
      {
        template: "/v1/leases",
        methods: {
          GET: (ctx) => {
            const all = ctx.query?.get("all");
            if (all !== undefined && all !== null && all !== "true" && all !== "false") {
              throw new NetslotError("invalid_request", "all must be true or false", { field: "all" });
            }
            if (all === "true") requireOperator(callerOf(ctx), "listing every consumer's leases");
            sendJson(ctx.res, 200, { leases: service.list(consumerOf(ctx), { all: all === "true" }) });
          },
          POST: async (ctx) => {
            const body = await readJsonBody(ctx.req, ctx.res);
            if (body === ANSWERED) return;
            const checked = validators.body("acquireLease", body);
            if (!checked.ok) throw new NetslotError("invalid_request", checked.error.detail, { field: checked.error.field });
            const lease = await service.acquire(consumerOf(ctx), authorise(ctx, checked.value));
            sendJson(ctx.res, 201, lease, { Location: `/v1/leases/${encodeURIComponent(lease.id)}` });
          },
        },
      },
    ],
    [
      "/v1/openapi.json",
      {
        template: "/v1/openapi.json",
        public: true,
        methods: {
          GET: (ctx) => {
            ctx.res.statusCode = 200;
            ctx.res.setHeader("Content-Type", "application/json; charset=utf-8");
            ctx.res.setHeader("Content-Length", Buffer.byteLength(documentText));
            ctx.res.end(documentText);
          },
        },
      },
    ],
    [
      "/metrics",
      {
        template: "/metrics",
        methods: {
          GET: (ctx) => {
            const parts = [service.metrics(), options.metricsExtra?.() ?? "", metrics.render()];
            const text = parts
              .filter((part) => part !== "")
              .map((part) => (part.endsWith("\n") ? part : `${part}\n`))
              .join("");
            ctx.res.statusCode = 200;
            ctx.res.setHeader("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
            ctx.res.setHeader("Content-Length", Buffer.byteLength(text));
            ctx.res.setHeader("Cache-Control", "no-store");
            ctx.res.end(text);
          },
        },
      },
    ],
  ]);

  const admin = options.admin;
  const quarantineRoute: Route = {
    template: "/v1/pool/quarantined/{index}/release",
    methods: {
      POST: async (ctx) => {
        if (!admin) throw new Error("quarantine route without admin");
        requireOperator(callerOf(ctx), "retrying a quarantined slot");
        const index = Number(ctx.id);
        sendJson(ctx.res, 200, { index, state: await admin.retryQuarantined(index, consumerOf(ctx)) });
      },
    },
  };
  if (admin?.setDraining) {
    const setDraining = admin.setDraining.bind(admin);
    const drain = (on: boolean) => (ctx: RequestContext) => {
      requireOperator(callerOf(ctx), on ? "draining" : "ending a drain");
      sendJson(ctx.res, 200, setDraining(on, consumerOf(ctx)));
    };
    staticRoutes.set("/v1/pool/drain", { template: "/v1/pool/drain", methods: { POST: drain(true), DELETE: drain(false) } });
  }

  function match(pathname: string): RouteMatch | null {
    const exact = staticRoutes.get(pathname);
    if (exact) return { route: exact };
    if (admin) {
      const q = /^\/v1\/pool\/quarantined\/(0|[1-9][0-9]{0,8})\/release$/.exec(pathname);
      if (q) return { route: quarantineRoute, index: q[1]! };
    }
    const m = /^\/v1\/leases\/([^/]+)(\/renew)?$/.exec(pathname);
    if (!m) return null;
    return { route: m[2] ? renewRoute : leaseRoute, idSegment: m[1]! };
  }

  function allowOf(route: Route): string {
    const methods = Object.keys(route.methods);
    if (methods.includes("GET")) methods.push("HEAD");
    return methods.join(", ");
  }

  function fail(req: http.IncomingMessage, res: http.ServerResponse, err: unknown): void {
    if (err instanceof NetslotError) {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      sendProblem(res, err);
      return;
    }
    // Not one of ours: a bug. Log it, answer 500, keep serving.
    logger.error("unexpected error while answering a request", {
      method: req.method,
      path: pathOf(req.url),
      error: err instanceof Error ? (err.stack ?? err.message) : String(err),
    });
    if (res.headersSent) {
      res.destroy();
      return;
    }
    sendProblem(res, new NetslotError("internal", "internal error; the daemon's log has the details"));
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    let routeLabel = UNMATCHED_ROUTE;
    let observed = false;
    const observe = (): void => {
      if (observed) return;
      observed = true;
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      metrics.observe(req.method ?? "OTHER", routeLabel, res.statusCode, seconds);
    };
    res.once("finish", observe);
    res.once("close", observe);

    // Early answers leave an announced body unread: close rather than read it to the end.
    const early = (error: NetslotError, headers: Record<string, string> = {}): void => {
      sendProblem(res, error, announcesBody(req) ? { ...headers, Connection: "close" } : headers);
    };
    const pathname = pathOf(req.url);
    const found = match(pathname);
    if (found) routeLabel = found.route.template;
    // HEAD is GET without a body (node leaves the body out).
    const method = req.method === "HEAD" ? "GET" : (req.method ?? "");
    const isPublic = found?.route.public === true && method === "GET";
    const peer = peers.get(req.socket);
    const consumer = directory.identify(req.headers.authorization, peer);
    if (consumer === null && !isPublic) {
      const detail =
        req.headers.authorization === undefined
          ? `this daemon has consumers configured and none is matched by uid ${peer?.uid ?? "?"} or gid ${peer?.gid ?? "?"}; send Authorization: Bearer <token>`
          : "the bearer token is not one of a configured consumer";
      early(new NetslotError("unauthorized", detail), { "WWW-Authenticate": 'Bearer realm="netslot"' });
      return;
    }
    if (!found) {
      early(new NetslotError("not_found", `no endpoint ${JSON.stringify(pathname)}`));
      return;
    }
    const handler = found.route.methods[method];
    if (!handler) {
      const allow = allowOf(found.route);
      early(new NetslotError("method_not_allowed", `${req.method} is not allowed on ${found.route.template}; allowed: ${allow}`), { Allow: allow });
      return;
    }
    let id = found.index ?? "";
    if (found.idSegment !== undefined) {
      let decoded: string | null;
      try {
        decoded = decodeURIComponent(found.idSegment);
      } catch {
        decoded = null;
      }
      // An id that cannot exist is simply not found; the service never sees it.
      if (decoded === null || !validators.leaseId(decoded)) {
        early(new NetslotError("lease_not_found", `no lease ${JSON.stringify(decoded ?? found.idSegment)}`));
        return;
      }
      id = decoded;
    }
    await handler({ req, res, consumer, peer, query: queryOf(req.url), id });
  }

  const server = http.createServer((req, res) => {
    res.setHeader(VERSION_HEADER, version);
    handle(req, res).catch((err: unknown) => {
      try {
        fail(req, res, err);
      } catch (inner) {
        logger.error("could not answer a request", { error: String(inner) });
        res.destroy();
      }
    });
  });
  // The kernel's word on who connected, once per connection (requests on it reuse it).
  server.on("connection", (socket: net.Socket) => {
    const cred = readPeer(socket);
    if (cred !== undefined) peers.set(socket, cred);
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = 5_000;
  server.on("clientError", (err: NodeJS.ErrnoException, socket: net.Socket) => {
    // Malformed HTTP: answer a problem when the socket can still take it, then close.
    if (err.code === "ECONNRESET" || !socket.writable) {
      socket.destroy();
      return;
    }
    const tooLarge = err.code === "HPE_HEADER_OVERFLOW";
    const error = tooLarge
      ? new NetslotError("invalid_request", "the request headers are too large", { field: "" })
      : new NetslotError("invalid_request", `malformed HTTP request (${err.code ?? err.message})`, { field: "" });
    socket.end(rawProblemResponse(error, { [VERSION_HEADER]: version }));
  });
  server.on("error", (err) => logger.error("API server error", { error: String(err) }));

  let boundPath: string | null = null;
  let boundIno: number | null = null;

  return {
    async listen(socketPath: string, opts: { group?: number } = {}): Promise<void> {
      await prepareSocketPath(socketPath);
      await new Promise<void>((resolve, reject) => {
        const onError = (err: Error): void => reject(err);
        server.once("error", onError);
        server.listen(socketPath, () => {
          server.off("error", onError);
          resolve();
        });
      });
      // Owner and group only: the socket's group decides who may connect (--socket-group).
      if (opts.group !== undefined) fs.chownSync(socketPath, -1, opts.group);
      fs.chmodSync(socketPath, 0o660);
      boundPath = socketPath;
      boundIno = fs.statSync(socketPath).ino;
    },
    async close(): Promise<void> {
      if (server.listening) {
        await new Promise<void>((resolve) => {
          const force = setTimeout(() => server.closeAllConnections(), 5_000);
          force.unref();
          server.close(() => {
            clearTimeout(force);
            resolve();
          });
          server.closeIdleConnections();
        });
      }
      if (boundPath !== null) {
        // Remove the socket file only if it is still the one we created.
        try {
          if (fs.statSync(boundPath).ino === boundIno) fs.unlinkSync(boundPath);
        } catch {
          // Already gone.
        }
        boundPath = null;
      }
    },
  };
}

/** Removes a stale socket left by a dead daemon; refuses to touch anything else. */
async function prepareSocketPath(socketPath: string): Promise<void> {
  fs.mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o755 });
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(socketPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  if (!stat.isSocket()) throw new Error(`${socketPath} exists and is not a socket; refusing to replace it`);
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect(socketPath);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
  if (live) throw new Error(`another process is serving on ${socketPath}`);
  try {
    fs.unlinkSync(socketPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}
