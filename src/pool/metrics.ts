// A small Prometheus text-format registry: counters, gauges and histograms with labels.
// Enough for the daemon's own metrics without a dependency.

type Labels = Record<string, string>;

function labelText(labels: Labels): string {
  const keys = Object.keys(labels);
  if (keys.length === 0) return "";
  return `{${keys.map((k) => `${k}="${labels[k]!.replace(/["\\\n]/g, (c) => (c === "\n" ? "\\n" : `\\${c}`))}"`).join(",")}}`;
}

abstract class Metric {
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}
  abstract render(): string;
  protected header(type: string): string {
    return `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} ${type}\n`;
  }
}

export class Counter extends Metric {
  private readonly values = new Map<string, { labels: Labels; value: number }>();
  inc(labels: Labels = {}, by = 1): void {
    const key = labelText(labels);
    const entry = this.values.get(key) ?? { labels, value: 0 };
    entry.value += by;
    this.values.set(key, entry);
  }
  get(labels: Labels = {}): number {
    return this.values.get(labelText(labels))?.value ?? 0;
  }
  render(): string {
    let out = this.header("counter");
    if (this.values.size === 0) out += `${this.name} 0\n`;
    for (const { labels, value } of this.values.values()) out += `${this.name}${labelText(labels)} ${value}\n`;
    return out;
  }
}

export class Gauge extends Metric {
  constructor(
    name: string,
    help: string,
    private readonly read: () => Array<{ labels: Labels; value: number }>,
  ) {
    super(name, help);
  }
  render(): string {
    let out = this.header("gauge");
    for (const { labels, value } of this.read()) out += `${this.name}${labelText(labels)} ${value}\n`;
    return out;
  }
}

/** A counter kept elsewhere (e.g. in an eBPF map), read when scraped. */
export class ReadCounter extends Metric {
  constructor(
    name: string,
    help: string,
    private readonly read: () => number,
  ) {
    super(name, help);
  }
  render(): string {
    return `${this.header("counter")}${this.name} ${this.read()}\n`;
  }
}

/** A summary kept elsewhere (e.g. Node's event-loop delay monitor), read when scraped. */
export class ReadSummary extends Metric {
  constructor(
    name: string,
    help: string,
    private readonly read: () => { quantiles: Array<[number, number]>; sum: number; count: number },
  ) {
    super(name, help);
  }
  render(): string {
    const { quantiles, sum, count } = this.read();
    let out = this.header("summary");
    for (const [q, v] of quantiles) out += `${this.name}{quantile="${q}"} ${v}\n`;
    return `${out}${this.name}_sum ${sum}\n${this.name}_count ${count}\n`;
  }
}

/** Latency histogram in seconds; buckets from 50 µs to 5 s. */
export class Histogram extends Metric {
  static readonly DEFAULT_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5];
  private readonly counts: number[];
  private sum = 0;
  private count = 0;
  constructor(
    name: string,
    help: string,
    private readonly buckets: number[] = Histogram.DEFAULT_BUCKETS,
  ) {
    super(name, help);
    this.counts = new Array<number>(buckets.length).fill(0);
  }
  observe(seconds: number): void {
    this.sum += seconds;
    this.count++;
    for (let i = 0; i < this.buckets.length; i++) if (seconds <= this.buckets[i]!) this.counts[i]!++;
  }
  render(): string {
    let out = this.header("histogram");
    this.buckets.forEach((b, i) => (out += `${this.name}_bucket{le="${b}"} ${this.counts[i]}\n`));
    out += `${this.name}_bucket{le="+Inf"} ${this.count}\n${this.name}_sum ${this.sum}\n${this.name}_count ${this.count}\n`;
    return out;
  }
}

export class Registry {
  private readonly metrics: Metric[] = [];
  add<M extends Metric>(metric: M): M {
    this.metrics.push(metric);
    return metric;
  }
  render(): string {
    return this.metrics.map((m) => m.render()).join("");
  }
}
