// The HTTP API: HTTP/1.1 + JSON on a unix socket. This module only composes the pieces:
// the routes come from the OpenAPI document (router.ts), which comes from core/schema.ts;
// bodies are read by body.ts and validated by validate.ts before handlers.ts calls the
// service; auth.ts says who is calling; problem.ts turns every error into problem+json;
// http-metrics.ts counts into core/metrics.ts. Nothing a client sends can crash the server.
import * as http from "node:http";
import type * as net from "node:net";
import { NetslotError } from "../core/errors.js";
import { OPERATIONS, type Operation, type OperationId } from "../core/schema.js";
import type { LeaseService, ProcessTree } from "../core/types.js";
import { ConsumerDirectory, type ConsumerConfig } from "../tenancy/consumers.js";
import { packageVersion } from "../core/version.js";
import { announcesBody, ANSWERED, readJsonBody } from "./body.js";
import { AUTHENTICATE_HEADERS, adoptRelayedPeer, authorize, peerOf, trackPeers } from "./auth.js";
import { createHandlers, type Handler, type PoolAdmin, type Reply } from "./handlers.js";
import { observeRequest, UNMATCHED_ROUTE } from "./http-metrics.js";
import { createMetrics, type Metrics } from "../core/metrics.js";
import { openApiDocument } from "./openapi.js";
import { answerError, rawProblemResponse, sendProblem, type ApiLogger } from "./problem.js";
import { Router } from "./router.js";
import { UnixSocketListener, type ListenOptions } from "./socket.js";
import { RequestGate } from "./handover.js";
import { createRequestValidators } from "./validate.js";
import { randomUUID } from "node:crypto";
import { createLogger, inRequestScope } from "../core/log.js";

export type { ConsumerConfig } from "../tenancy/consumers.js";
export type { PoolAdmin } from "./handlers.js";
export type { ApiLogger } from "./problem.js";
export { MAX_BODY_BYTES } from "./body.js";

export interface ApiServerOptions {
  service: LeaseService;
  /** The host's process tree, for explicit ownerPid checks (kernel/procfs.ts processTree in the daemon). */
  processes: ProcessTree;
  /** Enables POST /v1/pool/quarantined/{index}/release (and /v1/pool/drain when it can drain). */
  admin?: PoolAdmin;
  /** The configured consumers: entries, or the daemon's parsed directory (shared with the pool's quotas). */
  consumers?: ConsumerConfig[] | ConsumerDirectory;
  /** The daemon's one metrics registry (core/metrics.ts), which GET /metrics renders; a registry of its own when absent. */
  metrics?: Metrics;
  logger?: ApiLogger;
  /** Reported in /v1/health and the Netslot-Version header; the package's version when omitted. */
  version?: string;
  /**
   * The new daemon of a handover: the old one's pid. Requests it relays carry the client's
   * peer credentials (auth.ts adoptRelayedPeer).
   */
  trustRelayFrom?: number;
}

/**
 * Header on every answer: the request's id, the `reqId` of every line the daemon logged while
 * serving it. A client may choose it (letters, digits, `._:-`, at most 64); else the daemon does.
 */
export const REQUEST_ID_HEADER = "X-Request-Id";
const CLIENT_REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;

function requestIdOf(req: http.IncomingMessage): string {
  const given = req.headers["x-request-id"];
  return typeof given === "string" && CLIENT_REQUEST_ID.test(given) ? given : randomUUID();
}

/** Header on every answer: which daemon version answered (clients may log it; /v1 only grows). */
export const VERSION_HEADER = "Netslot-Version";

/** Idle keep-alive timeout announced to clients (Keep-Alive: timeout=…), in seconds. */
export const KEEP_ALIVE_ANNOUNCED_S = 5;
/** When this server really closes an idle keep-alive connection: far past the announced timeout. */
const KEEP_ALIVE_IDLE_CLOSE_MS = 30_000;

export interface ApiServer {
  /**
   * `group`: the socket file's group (--socket-group), so its members may connect.
   * `bindFd` makes the listening socket instead of node (the daemon's, so that closing it
   * never unlinks the path: see kernel/unixsocket.ts).
   */
  listen(socketPath: string, opts?: ListenOptions): Promise<void>;
  close(): Promise<void>;
  /** Holds, resumes or relays requests during a handover (handover.ts). */
  readonly gate: RequestGate;
  /** The listening server, to pass to the new daemon (child_process handle passing). */
  listeningServer(): net.Server;
  /** The new daemon: serve the connections of a listening socket received from the old one. */
  adopt(listening: net.Server, socketPath: string): void;
  /**
   * The old daemon: stop accepting on the shared socket (the file stays: it is the new
   * daemon's now) and resolve once every connection it still has is closed.
   */
  stopAccepting(): Promise<void>;
  /** The old daemon of a handover: close no idle keep-alive connection (true) / as usual again (false). */
  keepIdleConnections(keep: boolean): void;
}

function pathnameOf(url: string | undefined): string {
  const raw = url ?? "/";
  const end = raw.search(/[?#]/);
  return end === -1 ? raw : raw.slice(0, end);
}

/** Writes a handler's reply with the status, media type and headers its operation declares. */
function sendReply(res: http.ServerResponse, op: Operation, reply: Reply<OperationId>): void {
  res.statusCode = op.response.status;
  res.setHeader("Cache-Control", "no-store");
  if (op.response.schema || op.response.text) {
    const text = op.response.text ? String(reply.body) : JSON.stringify(reply.body);
    res.setHeader("Content-Type", op.response.text ? "text/plain; charset=utf-8" : "application/json; charset=utf-8");
    res.setHeader("Content-Length", Buffer.byteLength(text));
    for (const [name, value] of Object.entries(reply.headers ?? {})) res.setHeader(name, value);
    res.end(text);
    return;
  }
  for (const [name, value] of Object.entries(reply.headers ?? {})) res.setHeader(name, value);
  res.end();
}

export function createApiServer(options: ApiServerOptions): ApiServer {
  const { service } = options;
  const logger = options.logger ?? createLogger({ bindings: { component: "api" } });
  const directory = options.consumers instanceof ConsumerDirectory ? options.consumers : new ConsumerDirectory(options.consumers ?? []);
  const version = options.version ?? packageVersion();
  const metrics = options.metrics ?? createMetrics();
  // Compiled once, now: a broken schema fails at startup, not on the first request.
  const validators = createRequestValidators();
  const handlers = createHandlers({
    service,
    admin: options.admin,
    version,
    document: openApiDocument(),
    metrics,
    processes: options.processes,
  });
  const handlerOf = (id: OperationId): Handler<OperationId> | undefined => handlers[id];
  const router = new Router(openApiDocument(), (id) => handlerOf(id) !== undefined);

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let routeLabel = UNMATCHED_ROUTE;
    observeRequest(metrics.http, req, res, () => routeLabel);
    adoptRelayedPeer(req, options.trustRelayFrom);
    // Early answers leave an announced body unread: close rather than read it to the end.
    const early = (error: NetslotError, headers: Record<string, string> = {}): void => {
      sendProblem(res, error, announcesBody(req) ? { ...headers, Connection: "close" } : headers);
    };
    const pathname = pathnameOf(req.url);
    const found = router.match(pathname);
    if (found) routeLabel = found.route.template;
    // HEAD is GET without a body (node leaves the body out).
    const method = req.method === "HEAD" ? "GET" : (req.method ?? "");
    const consumer = authorize(directory, req, found?.route.publicMethods.has(method) === true);
    if (consumer instanceof NetslotError) {
      early(consumer, AUTHENTICATE_HEADERS);
      return;
    }
    if (!found) {
      early(new NetslotError("not_found", `no endpoint ${JSON.stringify(pathname)}`));
      return;
    }
    const operationId = found.route.methods.get(method);
    if (operationId === undefined) {
      const { allow, template } = found.route;
      early(new NetslotError("method_not_allowed", `${req.method} is not allowed on ${template}; allowed: ${allow}`), { Allow: allow });
      return;
    }
    // A parameter that cannot exist (e.g. a malformed lease id): the service never sees it.
    if ("error" in found) {
      early(found.error);
      return;
    }
    const op: Operation = OPERATIONS[operationId];
    const query = validators.query(operationId, req.url);
    if (!query.ok) throw new NetslotError("invalid_request", query.error.detail, { field: query.error.field });
    let body: unknown = {};
    if (op.body) {
      const raw = await readJsonBody(req, res);
      if (raw === ANSWERED) return;
      const checked = validators.body(operationId, raw);
      if (!checked.ok) throw new NetslotError("invalid_request", checked.error.detail, { field: checked.error.field });
      body = checked.value;
    }
    const handler = handlerOf(operationId)!;
    // The router only matches operations that have a handler; consumer is null only on public ones.
    const ctx = { consumer, peer: peerOf(req), params: found.params, query: query.value, body, gone: () => res.destroyed };
    const reply = await handler(ctx as Parameters<Handler<OperationId>>[0]);
    sendReply(res, op, reply);
  }

  const gate = new RequestGate(peerOf);
  const server = http.createServer(
    gate.wrap((req, res) => {
      res.setHeader(VERSION_HEADER, version);
      // Clients (Node's agent among them, old SDKs included) drop an idle connection one
      // second before the timeout announced here; this server closes it much later
      // (keepAliveTimeout), so a client that was slow to see the previous answer (a loaded
      // host) never reuses a connection this server has just closed (write EPIPE).
      res.setHeader("Keep-Alive", `timeout=${KEEP_ALIVE_ANNOUNCED_S}`);
      const reqId = requestIdOf(req);
      res.setHeader(REQUEST_ID_HEADER, reqId);
      // Lines logged while serving it (an audit of its grant, a bug's error) carry reqId.
      void inRequestScope(reqId, () =>
        handle(req, res).catch((err: unknown) => {
          try {
            answerError(req, res, err, logger);
          } catch (inner) {
            logger.error({ err: inner }, "could not answer a request");
            res.destroy();
          }
        }),
      );
    }),
  );
  trackPeers(server);
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = KEEP_ALIVE_IDLE_CLOSE_MS;
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
  server.on("error", (err) => logger.error({ err }, "API server error"));

  const socket = new UnixSocketListener(server);
  return {
    listen: (socketPath, opts) => socket.listen(socketPath, opts),
    close: () => socket.close(),
    gate,
    listeningServer: () => socket.listening(),
    adopt: (listening, socketPath) => socket.adopt(listening, socketPath),
    stopAccepting: () => socket.stopAccepting(),
    keepIdleConnections: (keep) => socket.keepIdleConnections(keep),
  };
}
