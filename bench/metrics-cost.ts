// What the metrics cost the request path, per request: prom-client against the hand-written
// registry netslot had before (reproduced below, verbatim in behaviour), doing what one
// POST /v1/leases does: the API's request counter (method, route, status) and latency
// histogram (method, route), plus the pool's lease counter and acquire-latency histogram.
// Issue 9's rule: prom-client unless it costs the request path more than ~20 µs.
//
//   npm run build && node dist/bench/metrics-cost.js [requests]
//
// Figures on the 2-core build host (Node 20.20, 2026-12-02, load average ~16 from other
// work, 1,000,000 requests, median of 7 rounds, CPU time): hand-written 0.6-0.8 µs,
// prom-client 1.4-1.9 µs per request (+0.8-1.1 µs); rendering /metrics (once per scrape, not
// per request) 0.06 ms against 0.4-0.5 ms. Far under 20 µs: the registry is prom-client's.
import { Counter, Histogram, Registry } from "prom-client";

const ROUTES = ["/v1/leases", "/v1/leases/{id}", "/v1/pool", "/v1/health"];
const METHODS = ["POST", "DELETE", "GET", "GET"];
const STATUSES = [201, 204, 200, 200, 404];
const POOL_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5];
const HTTP_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

interface Sink {
  request(method: string, route: string, status: number, seconds: number): void;
  render(): Promise<string> | string;
}

/** The hand-written registry's request-path work (src/api/http-metrics.ts and src/pool/metrics.ts before). */
function handWritten(): Sink {
  const requests = new Map<string, number>();
  const latency = new Map<string, { buckets: number[]; sum: number; count: number }>();
  const leases = { value: 0 };
  const acquire = { counts: POOL_BUCKETS.map(() => 0), sum: 0, count: 0 };
  return {
    request(method, route, status, seconds) {
      const counterKey = `${method}\u0000${route}\u0000${status}`;
      requests.set(counterKey, (requests.get(counterKey) ?? 0) + 1);
      const histKey = `${method}\u0000${route}`;
      let hist = latency.get(histKey);
      if (!hist) latency.set(histKey, (hist = { buckets: HTTP_BUCKETS.map(() => 0), sum: 0, count: 0 }));
      for (let i = 0; i < HTTP_BUCKETS.length; i++) if (seconds <= HTTP_BUCKETS[i]!) hist.buckets[i]!++;
      hist.sum += seconds;
      hist.count++;
      leases.value++;
      acquire.sum += seconds;
      acquire.count++;
      for (let i = 0; i < POOL_BUCKETS.length; i++) if (seconds <= POOL_BUCKETS[i]!) acquire.counts[i]!++;
    },
    render() {
      let out = "";
      for (const [k, v] of requests) out += `netslot_http_requests_total{${k}} ${v}\n`;
      for (const [k, h] of latency) {
        HTTP_BUCKETS.forEach((le, i) => (out += `netslot_http_request_duration_seconds_bucket{${k},le="${le}"} ${h.buckets[i]}\n`));
        out += `${k} ${h.sum} ${h.count}\n`;
      }
      return out;
    },
  };
}

function promClient(): Sink {
  const registry = new Registry();
  const registers = [registry];
  const requests = new Counter({ name: "netslot_http_requests_total", help: "h", labelNames: ["method", "route", "status"] as const, registers });
  const latency = new Histogram({ name: "netslot_http_request_duration_seconds", help: "h", labelNames: ["method", "route"] as const, buckets: HTTP_BUCKETS, registers });
  const leases = new Counter({ name: "netslot_leases_total", help: "h", registers });
  const acquire = new Histogram({ name: "netslot_acquire_seconds", help: "h", buckets: POOL_BUCKETS, registers });
  return {
    request(method, route, status, seconds) {
      requests.inc({ method, route, status });
      latency.observe({ method, route }, seconds);
      leases.inc();
      acquire.observe(seconds);
    },
    render: () => registry.metrics(),
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function measure(make: () => Sink, n: number, rounds: number): Promise<{ perRequestUs: number; renderMs: number }> {
  const perRequest: number[] = [];
  const render: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const sink = make();
    // CPU time, not wall time: on a shared machine the wall clock counts other processes.
    const c0 = process.cpuUsage();
    for (let i = 0; i < n; i++) {
      const k = i & 3;
      sink.request(METHODS[k]!, ROUTES[k]!, STATUSES[i % 5]!, (i % 1000) * 1e-5);
    }
    const c1 = process.cpuUsage(c0);
    perRequest.push((c1.user + c1.system) / n);
    const t2 = process.hrtime.bigint();
    await sink.render();
    render.push(Number(process.hrtime.bigint() - t2) / 1e6);
  }
  return { perRequestUs: median(perRequest), renderMs: median(render) };
}

const n = Number(process.argv[2] ?? 1_000_000);
const rounds = 7;
// Warm both up first so that neither pays for the JIT in its figure.
await measure(handWritten, 100_000, 2);
await measure(promClient, 100_000, 2);
const hand = await measure(handWritten, n, rounds);
const prom = await measure(promClient, n, rounds);
const fmt = (x: number) => x.toFixed(3);
console.log(`metrics cost per request (${n} requests, median of ${rounds} rounds, Node ${process.version})`);
console.log(`  hand-written: ${fmt(hand.perRequestUs)} µs CPU/request, render ${fmt(hand.renderMs)} ms`);
console.log(`  prom-client:  ${fmt(prom.perRequestUs)} µs CPU/request, render ${fmt(prom.renderMs)} ms`);
console.log(`  difference:   ${fmt(prom.perRequestUs - hand.perRequestUs)} µs/request (the issue's limit: 20 µs)`);
