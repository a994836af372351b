// Errors on the wire: application/problem+json (RFC 9457), one shape for every code of the
// registry in core/errors.ts. `type` is a stable identifier, never fetched.
import type { Logger } from "../core/log.js";
import type { IncomingMessage, ServerResponse } from "node:http";
import { ERRORS, NetslotError, type ErrorCode } from "../core/errors.js";
import type { Problem } from "../core/schema.js";

export type { Problem } from "../core/schema.js";

export const PROBLEM_TYPE_BASE = "https://netslot.dev/errors/";
export const PROBLEM_CONTENT_TYPE = "application/problem+json";

/** Seconds to suggest in Retry-After when the service gave none. */
const DEFAULT_RETRY_AFTER: Partial<Record<ErrorCode, number>> = {
  pool_exhausted: 1,
  quota_exceeded: 1,
  draining: 30,
  booting: 2,
  store_unavailable: 5,
};

export function problemType(code: ErrorCode): string {
  return `${PROBLEM_TYPE_BASE}${code}`;
}

export function toProblem(error: NetslotError): Problem {
  const entry = ERRORS[error.code];
  const problem: Problem = {
    type: problemType(error.code),
    title: entry.title,
    status: entry.status,
    detail: error.message || entry.title,
    code: error.code,
  };
  if (error.field !== undefined) problem.field = error.field;
  if (error.ended !== undefined) problem.ended = error.ended;
  return problem;
}

export function retryAfterOf(error: NetslotError): number | undefined {
  const seconds = error.retryAfter ?? DEFAULT_RETRY_AFTER[error.code];
  return seconds === undefined ? undefined : Math.max(0, Math.ceil(seconds));
}

/** Writes the problem; extra headers (Allow, WWW-Authenticate, Connection) go with it. */
export function sendProblem(res: ServerResponse, error: NetslotError, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.writableEnded) return;
  const problem = toProblem(error);
  const body = JSON.stringify(problem);
  const retryAfter = retryAfterOf(error);
  res.statusCode = problem.status;
  res.setHeader("Content-Type", PROBLEM_CONTENT_TYPE);
  res.setHeader("Content-Length", Buffer.byteLength(body));
  res.setHeader("Cache-Control", "no-store");
  if (retryAfter !== undefined && (problem.status === 503 || problem.status === 429)) res.setHeader("Retry-After", String(retryAfter));
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
  res.end(body);
}

/** The raw HTTP bytes of a problem, for answering before node has a response (clientError). */
export function rawProblemResponse(error: NetslotError, headers: Record<string, string> = {}): string {
  const body = JSON.stringify(toProblem(error));
  return (
    `HTTP/1.1 ${ERRORS[error.code].status} ${ERRORS[error.code].title}\r\n` +
    Object.entries(headers)
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join("") +
    `Content-Type: ${PROBLEM_CONTENT_TYPE}\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    "Connection: close\r\n\r\n" +
    body
  );
}

/** Genuine bugs only are logged (errors that are not NetslotError); client mistakes are answered, not logged. */
export type ApiLogger = Pick<Logger, "error">;

/**
 * Answers a request whose handling threw: a NetslotError as its problem; anything else is a
 * bug, logged and answered 500 internal. A response already under way is cut instead.
 */
export function answerError(req: IncomingMessage, res: ServerResponse, err: unknown, logger: ApiLogger): void {
  if (!(err instanceof NetslotError)) {
    logger.error({ method: req.method, path: req.url?.split(/[?#]/)[0], err }, "unexpected error while answering a request");
  }
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendProblem(res, err instanceof NetslotError ? err : new NetslotError("internal", "internal error; the daemon's log has the details"));
}
