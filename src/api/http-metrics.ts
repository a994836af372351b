// The API's request metrics (declared in core/metrics.ts): a request counter by method, route
// and status and a latency histogram by method and route, observed once per answered (or
// abandoned) request.
import type * as http from "node:http";
import type { HttpMetrics } from "../core/metrics.js";

const KNOWN_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

/** The route label of a request that matched no route. */
export const UNMATCHED_ROUTE = "unmatched";

/**
 * Observes the request when its response ends (or the client goes away); `route()` is read
 * then, so the router can name the route after the hook is installed.
 */
export function observeRequest(metrics: HttpMetrics, req: http.IncomingMessage, res: http.ServerResponse, route: () => string): void {
  const started = process.hrtime.bigint();
  let observed = false;
  const observe = (): void => {
    if (observed) return;
    observed = true;
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    // An unbounded method label would grow the registry with every made-up verb.
    const method = KNOWN_METHODS.has(req.method ?? "") ? req.method! : "OTHER";
    const labels = { method, route: route() };
    metrics.requests.inc({ ...labels, status: res.statusCode });
    metrics.duration.observe(labels, seconds);
  };
  res.once("finish", observe);
  res.once("close", observe);
}
