// Reads histograms out of the daemon's Prometheus text (GET /metrics) and estimates
// percentiles of the observations made between two snapshots.

export interface HistogramSnapshot {
  /** Upper bounds in seconds, ascending, ending with Infinity. */
  bounds: number[];
  /** Cumulative counts per bound. */
  cumulative: number[];
  sum: number;
  count: number;
}

/** The unlabelled (apart from `le`) histogram `name` in `text`, or undefined. */
export function parseHistogram(text: string, name: string): HistogramSnapshot | undefined {
  const buckets: Array<[number, number]> = [];
  let sum = 0;
  let count = 0;
  let found = false;
  for (const line of text.split("\n")) {
    if (line.startsWith(`${name}_bucket{`)) {
      const m = /le="([^"]+)"\}\s+([0-9.eE+-]+)/.exec(line);
      if (!m) continue;
      found = true;
      buckets.push([m[1] === "+Inf" ? Infinity : Number(m[1]), Number(m[2])]);
    } else if (line.startsWith(`${name}_sum `)) {
      sum = Number(line.slice(name.length + 5));
    } else if (line.startsWith(`${name}_count `)) {
      count = Number(line.slice(name.length + 7));
    }
  }
  if (!found) return undefined;
  buckets.sort((a, b) => a[0] - b[0]);
  return { bounds: buckets.map((b) => b[0]), cumulative: buckets.map((b) => b[1]), sum, count };
}

export function histogramDelta(before: HistogramSnapshot | undefined, after: HistogramSnapshot): HistogramSnapshot {
  if (!before) return after;
  return {
    bounds: after.bounds,
    cumulative: after.cumulative.map((c, i) => c - (before.cumulative[i] ?? 0)),
    sum: after.sum - before.sum,
    count: after.count - before.count,
  };
}

export interface HistogramPercentile {
  /** The bucket bound the percentile lies under (an upper bound), in ms. */
  upperBoundMs: number;
  /** Linear interpolation inside that bucket, in ms. */
  estimateMs: number;
}

export function histogramPercentile(h: HistogramSnapshot, p: number): HistogramPercentile | undefined {
  if (h.count <= 0) return undefined;
  const target = (p / 100) * h.count;
  let prevBound = 0;
  let prevCum = 0;
  for (let i = 0; i < h.bounds.length; i++) {
    const bound = h.bounds[i]!;
    const cum = h.cumulative[i]!;
    if (cum >= target) {
      if (bound === Infinity) return { upperBoundMs: Infinity, estimateMs: prevBound * 1000 };
      const inBucket = cum - prevCum;
      const frac = inBucket > 0 ? (target - prevCum) / inBucket : 1;
      return { upperBoundMs: bound * 1000, estimateMs: (prevBound + frac * (bound - prevBound)) * 1000 };
    }
    prevBound = bound;
    prevCum = cum;
  }
  return undefined;
}

export function histogramSummary(h: HistogramSnapshot): {
  count: number;
  meanMs: number;
  p50: HistogramPercentile | undefined;
  p90: HistogramPercentile | undefined;
  p99: HistogramPercentile | undefined;
} {
  return {
    count: h.count,
    meanMs: h.count > 0 ? (h.sum / h.count) * 1000 : NaN,
    p50: histogramPercentile(h, 50),
    p90: histogramPercentile(h, 90),
    p99: histogramPercentile(h, 99),
  };
}

/** A gauge labelled by percentile (0–100) in `text`: percentile → value. */
export function parsePercentiles(text: string, name: string): Map<number, number> | undefined {
  const out = new Map<number, number>();
  const re = new RegExp(`^${name}\\{percentile="([^"]+)"\\}\\s+(\\S+)$`);
  for (const line of text.split("\n")) {
    const m = re.exec(line);
    if (m && Number.isFinite(Number(m[2]))) out.set(Number(m[1]), Number(m[2]));
  }
  return out.size > 0 ? out : undefined;
}
