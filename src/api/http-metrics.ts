// The API's own metrics: a request counter by method, route and status and a latency
// histogram by route, observed once per answered (or abandoned) request.
import type * as http from "node:http";

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const KNOWN_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

interface Histogram {
  buckets: number[];
  sum: number;
  count: number;
}

export class HttpMetrics {
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
    metrics.observe(req.method ?? "OTHER", route(), res.statusCode, seconds);
  };
  res.once("finish", observe);
  res.once("close", observe);
}
