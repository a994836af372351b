// Hand-written SVG charts (no dependencies): a line chart and a grouped bar chart, both
// with an optional logarithmic value axis.

export interface Series {
  name: string;
  points: Array<[number, number]>;
  /** Drawn dashed (e.g. a target line). */
  dashed?: boolean;
}

export interface LineChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  logY?: boolean;
  logX?: boolean;
  width?: number;
  height?: number;
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
const FONT = `font-family="system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif"`;

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function fmt(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e9) return `${+(v / 1e9).toPrecision(3)}G`;
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toPrecision(3)}k`;
  if (a >= 1) return `${+v.toPrecision(3)}`;
  return `${+v.toPrecision(2)}`;
}

/** "Nice" linear ticks covering [lo, hi]. */
function linearTicks(lo: number, hi: number, count = 5): number[] {
  if (hi <= lo) hi = lo + 1;
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const ticks: number[] = [];
  for (let v = Math.floor(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toPrecision(12));
  if (ticks[ticks.length - 1]! < hi) ticks.push(ticks[ticks.length - 1]! + step);
  return ticks;
}

function logTicks(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) ticks.push(10 ** e);
  return ticks;
}

interface Axis {
  ticks: number[];
  map: (v: number) => number;
}

function axis(values: number[], log: boolean, from: number, to: number, includeZero: boolean): Axis {
  const finite = values.filter((v) => Number.isFinite(v) && (!log || v > 0));
  let lo = finite.length ? Math.min(...finite) : 0;
  let hi = finite.length ? Math.max(...finite) : 1;
  if (log) {
    if (!finite.length) {
      lo = 1;
      hi = 10;
    }
    const ticks = logTicks(lo, hi);
    const a = Math.log10(ticks[0]!);
    const b = Math.log10(ticks[ticks.length - 1]!);
    const span = b - a || 1;
    return { ticks, map: (v) => from + ((Math.log10(Math.max(v, ticks[0]!)) - a) / span) * (to - from) };
  }
  if (includeZero) lo = Math.min(0, lo);
  const ticks = linearTicks(lo, hi);
  const a = ticks[0]!;
  const b = ticks[ticks.length - 1]!;
  return { ticks, map: (v) => from + ((v - a) / (b - a || 1)) * (to - from) };
}

export function lineChart(o: LineChartOptions): string {
  const W = o.width ?? 720;
  const H = o.height ?? 420;
  const m = { l: 70, r: 20, t: 40, b: 90 };
  const xs = o.series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = o.series.flatMap((s) => s.points.map((p) => p[1]));
  const X = axis(xs, o.logX === true, m.l, W - m.r, false);
  const Y = axis(ys, o.logY === true, H - m.b, m.t, true);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ${FONT} font-size="12">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="600">${esc(o.title)}</text>`);
  for (const t of Y.ticks) {
    const y = Y.map(t);
    parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${y.toFixed(1)}" y2="${y.toFixed(1)}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${m.l - 6}" y="${(y + 4).toFixed(1)}" text-anchor="end" fill="#444">${fmt(t)}</text>`);
  }
  for (const t of X.ticks) {
    const x = X.map(t);
    parts.push(`<line x1="${x.toFixed(1)}" x2="${x.toFixed(1)}" y1="${m.t}" y2="${H - m.b}" stroke="#f0f0f0"/>`);
    parts.push(`<text x="${x.toFixed(1)}" y="${H - m.b + 16}" text-anchor="middle" fill="#444">${fmt(t)}</text>`);
  }
  parts.push(`<line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${H - m.b}" stroke="#333"/>`);
  parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${H - m.b}" y2="${H - m.b}" stroke="#333"/>`);
  parts.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - m.b + 34}" text-anchor="middle">${esc(o.xLabel)}</text>`);
  parts.push(`<text transform="translate(16 ${(m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`);
  o.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length]!;
    const pts = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!o.logY || y > 0));
    if (pts.length === 0) return;
    const d = pts.map(([x, y], j) => `${j === 0 ? "M" : "L"}${X.map(x).toFixed(1)},${Y.map(y).toFixed(1)}`).join(" ");
    parts.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ` stroke-dasharray="6 4"` : ""}/>`);
    if (pts.length <= 40) {
      for (const [x, y] of pts) parts.push(`<circle cx="${X.map(x).toFixed(1)}" cy="${Y.map(y).toFixed(1)}" r="3" fill="${color}"/>`);
    }
  });
  parts.push(legend(o.series.map((s) => s.name), m.l, H - m.b + 52, W - m.l - m.r));
  parts.push(`</svg>`);
  return parts.join("\n") + "\n";
}

function legend(names: string[], x0: number, y0: number, width: number): string {
  const out: string[] = [];
  let x = x0;
  let y = y0;
  names.forEach((name, i) => {
    const w = 24 + name.length * 6.5 + 16;
    if (x + w > x0 + width && x > x0) {
      x = x0;
      y += 18;
    }
    out.push(`<rect x="${x}" y="${y - 9}" width="14" height="10" fill="${COLORS[i % COLORS.length]}"/>`);
    out.push(`<text x="${x + 20}" y="${y}">${esc(name)}</text>`);
    x += w;
  });
  return out.join("\n");
}

export interface BarChartOptions {
  title: string;
  yLabel: string;
  /** Category labels along the x axis. */
  categories: string[];
  /** One value per category per group; NaN or undefined leaves a gap. */
  groups: Array<{ name: string; values: Array<number | undefined> }>;
  logY?: boolean;
  /** Horizontal reference lines. */
  references?: Array<{ name: string; value: number }>;
  width?: number;
  height?: number;
}

export function barChart(o: BarChartOptions): string {
  const W = o.width ?? 720;
  const H = o.height ?? 420;
  const m = { l: 70, r: 20, t: 40, b: 90 };
  const values = o.groups.flatMap((g) => g.values.filter((v): v is number => v !== undefined && Number.isFinite(v)));
  const refs = o.references ?? [];
  const Y = axis([...values, ...refs.map((r) => r.value)], o.logY === true, H - m.b, m.t, true);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ${FONT} font-size="12">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="600">${esc(o.title)}</text>`);
  for (const t of Y.ticks) {
    const y = Y.map(t);
    parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${y.toFixed(1)}" y2="${y.toFixed(1)}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${m.l - 6}" y="${(y + 4).toFixed(1)}" text-anchor="end" fill="#444">${fmt(t)}</text>`);
  }
  const plotW = W - m.l - m.r;
  const catW = plotW / Math.max(1, o.categories.length);
  const barW = (catW * 0.8) / Math.max(1, o.groups.length);
  const base = o.logY ? H - m.b : Y.map(0);
  o.categories.forEach((cat, ci) => {
    const cx = m.l + ci * catW;
    parts.push(`<text x="${(cx + catW / 2).toFixed(1)}" y="${H - m.b + 16}" text-anchor="middle" fill="#333">${esc(cat)}</text>`);
    o.groups.forEach((g, gi) => {
      const v = g.values[ci];
      if (v === undefined || !Number.isFinite(v) || (o.logY && v <= 0)) return;
      const x = cx + catW * 0.1 + gi * barW;
      const y = Y.map(v);
      parts.push(
        `<rect x="${x.toFixed(1)}" y="${Math.min(y, base).toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${Math.abs(base - y).toFixed(1)}" fill="${COLORS[gi % COLORS.length]}"><title>${esc(`${g.name} ${cat}: ${fmt(v)}`)}</title></rect>`,
      );
      parts.push(`<text x="${(x + barW / 2).toFixed(1)}" y="${(y - 3).toFixed(1)}" text-anchor="middle" font-size="10" fill="#333">${fmt(v)}</text>`);
    });
  });
  refs.forEach((r) => {
    const y = Y.map(r.value);
    parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${y.toFixed(1)}" y2="${y.toFixed(1)}" stroke="#000" stroke-dasharray="6 4"/>`);
    parts.push(`<text x="${W - m.r - 4}" y="${(y - 4).toFixed(1)}" text-anchor="end" font-size="11">${esc(r.name)}</text>`);
  });
  parts.push(`<line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${H - m.b}" stroke="#333"/>`);
  parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${H - m.b}" y2="${H - m.b}" stroke="#333"/>`);
  parts.push(`<text transform="translate(16 ${(m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`);
  parts.push(legend(o.groups.map((g) => g.name), m.l, H - m.b + 52, W - m.l - m.r));
  parts.push(`</svg>`);
  return parts.join("\n") + "\n";
}
