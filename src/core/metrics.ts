// Every Prometheus metric of the daemon, declared once here (name, help, type, labels), in one
// prom-client registry that renders GET /metrics. The parts that own a figure are handed the
// few metrics they update (pool, API) or set the source a scraped gauge reads (slot counts,
// the eBPF NAT's drop counter). Scrub timings come from the scrub worker thread's answers and
// are observed on the main thread, so one registry sees them all.
//
// prom-client, not a hand-written registry: bench/metrics-cost.ts measures what a request's
// metrics (the API's counter and histogram with labels, the pool's counter and histogram)
// cost in CPU time: 1.4-1.9 µs per request against 0.6-0.8 µs for the hand-written registry
// netslot had before, far under issue 9's 20 µs limit.
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { packageVersion } from "./version.js";

/** Latency buckets of the pool's histograms, in seconds: 50 µs to 5 s. */
const POOL_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5];
/** The API's request latency buckets, in seconds. */
const HTTP_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export interface Sample<L extends string> {
  labels: Partial<Record<L, string | number>>;
  value: number;
}

/** A gauge whose samples are read when scraped, from the source its owner sets. */
export interface ScrapedGauge<L extends string> {
  readFrom(source: () => Iterable<Sample<L>>): void;
}

/** A counter kept elsewhere (an eBPF map, the DNS forwarder), read when scraped. */
export interface ScrapedCounter<L extends string = never> {
  readFrom(source: () => Iterable<Sample<L>>): void;
}

export function createMetrics() {
  const registry = new Registry();
  const registers = [registry];

  const counter = <L extends string = never>(name: string, help: string, labelNames: readonly L[] = []) =>
    new Counter<L>({ name, help, labelNames, registers });
  const histogram = <L extends string = never>(name: string, help: string, buckets: number[], labelNames: readonly L[] = []) =>
    new Histogram<L>({ name, help, buckets, labelNames, registers });
  // A metric whose samples are read from the source its owner sets, when scraped: a gauge
  // set to them, or a counter kept elsewhere (an eBPF map, the DNS forwarder) raised to them.
  const scraped = <L extends string, M extends Gauge<L> | Counter<L>>(
    make: (collect: (this: M) => void) => M,
    put: (m: M, labels: Partial<Record<L, string | number>>, value: number) => void,
  ): ScrapedGauge<L> & ScrapedCounter<L> => {
    let source: () => Iterable<Sample<L>> = () => [];
    make(function (this: M) {
      this.reset();
      for (const { labels, value } of source()) put(this, labels, value);
    });
    return { readFrom: (read) => void (source = read) };
  };
  const scrapedGauge = <L extends string = never>(name: string, help: string, labelNames: readonly L[] = []): ScrapedGauge<L> =>
    scraped<L, Gauge<L>>(
      (collect) => new Gauge<L>({ name, help, labelNames, registers, collect }),
      (g, labels, value) => g.set(labels, value),
    );
  const scrapedCounter = <L extends string = never>(name: string, help: string, labelNames: readonly L[] = []): ScrapedCounter<L> =>
    scraped<L, Counter<L>>(
      (collect) => new Counter<L>({ name, help, labelNames, registers, collect }),
      (c, labels, value) => c.inc(labels, value),
    );

  const pool = {
    leasesTotal: counter("netslot_leases_total", "Leases granted"),
    releasesTotal: counter("netslot_releases_total", "Leases ended, by cause", ["cause"]),
    scrubOutcomes: counter("netslot_scrub_outcomes_total", "Scrub results, by outcome", ["outcome"]),
    scrubProofs: counter(
      "netslot_scrub_proofs_total",
      "Proofs of released slots, by path (fast: only what may have changed was read; full; fast-dirty: the fast proof found a difference)",
      ["path"],
    ),
    voidedTotal: counter("netslot_leases_voided_total", "Leases voided at start, by cause (reboot: granted before the host rebooted)", ["cause"]),
    buildFailures: counter("netslot_slot_build_failures_total", "Slot builds that failed"),
    quarantineRetries: counter("netslot_quarantine_retries_total", "Automatic retries of quarantined slots"),
    goldenRetakes: counter("netslot_golden_retakes_total", "Golden fingerprints re-taken because the host changed"),
    auditProofs: counter("netslot_audit_proofs_total", "Free slots proven again with the full fingerprint by the background audit"),
    auditDirty: counter("netslot_audit_dirty_total", "Free slots the background audit found different from a fresh slot (then scrubbed, rebuilt or quarantined)"),
    buildSeconds: histogram("netslot_slot_build_seconds", "Time to build one slot", POOL_BUCKETS),
    acquireSeconds: histogram("netslot_acquire_seconds", "Time to grant a lease", POOL_BUCKETS),
    releaseSeconds: histogram("netslot_release_seconds", "Time to acknowledge a release", POOL_BUCKETS),
    scrubSeconds: histogram("netslot_scrub_seconds", "Time to scrub a released slot", POOL_BUCKETS),
    reuseSeconds: histogram("netslot_release_to_reusable_seconds", "Release until the slot is free again", POOL_BUCKETS),
    slots: scrapedGauge("netslot_pool_slots", "Slots by state", ["state"]),
    quarantined: scrapedGauge(
      "netslot_quarantined_slot",
      "1 per quarantined slot, with the kind of cause (the log and GET /v1/pool give the full reason)",
      ["slot", "cause"],
    ),
    ready: scrapedGauge("netslot_ready", "1 once the pool is built"),
  };

  const http = {
    requests: counter("netslot_http_requests_total", "HTTP requests answered by the API, by method, route and status.", ["method", "route", "status"]),
    duration: histogram(
      "netslot_http_request_duration_seconds",
      "Time from request to the end of the response, by method and route.",
      HTTP_BUCKETS,
      ["method", "route"],
    ),
  };

  const daemon = {
    natUnattributedDrops: scrapedCounter(
      "netslot_nat_unattributed_drops_total",
      "IPv4 frames the eBPF NAT dropped because no slot owns them (a MAC of no slot, or another slot's MAC)",
    ),
    dnsQueries: scrapedCounter(
      "netslot_dns_queries_total",
      "Guests' DNS queries the forwarder answered (profiles with egress.allowDomains), by outcome: forwarded upstream, refused (a name the lease's profile does not allow), malformed (answered FORMERR)",
      ["outcome"],
    ),
    dnsAdmitted: scrapedCounter("netslot_dns_admitted_addresses_total", "Addresses admitted to a lease's egress by DNS answers to allowed names"),
    dnsTcpConnections: scrapedCounter(
      "netslot_dns_tcp_connections_total",
      "Guests' DNS-over-TCP connections, by result (rejected: over the per-slot or total bound, or from no leased slot)",
      ["result"],
    ),
    eventLoopDelay: scrapedGauge(
      "netslot_event_loop_delay_seconds",
      "Delay of the daemon's main event loop since the previous scrape, by percentile (100: the maximum)",
      ["percentile"],
    ),
  };
  new Gauge({ name: "netslot_build_info", help: "Always 1; the labels say which netslot and Node answer", labelNames: ["version", "node"], registers }).set(
    { version: packageVersion(), node: process.version },
    1,
  );

  return {
    pool,
    http,
    daemon,
    /** The Prometheus text exposition of every metric. */
    render: (): Promise<string> => registry.metrics(),
    contentType: registry.contentType as string,
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
export type PoolMetrics = Metrics["pool"];
export type HttpMetrics = Metrics["http"];
