/**
 * Latency distributions as a picture: a CDF (the fraction of requests answered within a given
 * time) on a logarithmic latency axis, one line per series, as a self-contained SVG string.
 *
 * Why a CDF on a log axis: latencies span decades (a rewrite in tens of microseconds, a request
 * that waits for the disk in milliseconds), and a CDF shows every percentile at once: the median
 * is where a line crosses 50%, the tail is how far right it runs before reaching 100%, and two
 * lines compare at every percentile instead of one. A histogram would depend on its buckets.
 *
 * Used by `cowdisk bench --plot` (first write against rewrite, from every request's latency) and
 * by bench/compare's HTML page (one line per tool, from fio's latency histogram bins). The SVG
 * has no script, no style sheet and no reference to anything outside itself; each line is a
 * `<path>` with `data-series` naming it, so a test or a script can find it.
 */

/** A point of a CDF: latency in microseconds, and the fraction (0 to 1) of requests at or under it. */
export type CdfPoint = [number, number];

export interface CdfSeries {
  label: string;
  /** Ascending in both coordinates. */
  points: CdfPoint[];
  /** Drawn dashed (a second pass of the same tool, say). */
  dashed?: boolean;
  /** Index into the palette (default: the series' position); series that belong together share one. */
  color?: number;
}

/** Fractions a CDF built from samples keeps: every percent, and the tail finer. */
const FRACTIONS = [...Array.from({ length: 100 }, (_, i) => i / 100), 0.995, 0.999, 1];

/**
 * The CDF of individual latencies (any order), reduced to the nearest-rank latency at each kept
 * fraction: a plot needs about a hundred points, not one per request.
 */
export function cdfFromSamples(latenciesUs: ArrayLike<number>): CdfPoint[] {
  const sorted = Float64Array.from(latenciesUs).sort();
  const n = sorted.length;
  if (n === 0) return [];
  const points: CdfPoint[] = [];
  for (const f of FRACTIONS) {
    const rank = Math.max(1, Math.ceil(f * n));
    const point: CdfPoint = [sorted[rank - 1], rank / n];
    const last = points[points.length - 1];
    if (last && last[0] === point[0]) last[1] = point[1];
    else points.push(point);
  }
  return points;
}

/** The CDF of a histogram: [latency in nanoseconds, count] pairs, ascending (fio's bins). */
export function cdfFromBins(bins: ReadonlyArray<readonly [number, number]>): CdfPoint[] {
  const total = bins.reduce((sum, [, count]) => sum + count, 0);
  let seen = 0;
  return bins.map(([ns, count]) => {
    seen += count;
    return [ns / 1000, seen / total];
  });
}

export interface PlotOptions {
  title: string;
  width?: number;
  height?: number;
}

/** Distinct colours, also apart for the common colour blindnesses (Okabe and Ito's palette). */
const PALETTE = ['#0072b2', '#d55e00', '#009e73', '#cc79a7', '#e69f00', '#56b4e9', '#000000', '#999933'];
const MARGIN = { left: 56, right: 16, top: 16, bottom: 44 };
const LEGEND_LINE = 16;
const TITLE_LINE = 16;

/** Renders the series as an SVG document (also fit to be inlined in HTML). */
export function renderCdfSvg(series: readonly CdfSeries[], options: PlotOptions): string {
  const width = options.width ?? 720;
  const titleLines = wrap(options.title, Math.floor(width / 7));
  const top = MARGIN.top + titleLines.length * TITLE_LINE;
  const legendHeight = series.length * LEGEND_LINE + 8;
  const height = (options.height ?? 360) + legendHeight + (titleLines.length - 1) * TITLE_LINE;
  const plotW = width - MARGIN.left - MARGIN.right;
  const plotH = height - legendHeight - top - MARGIN.bottom;
  const all = series.flatMap((s) => s.points.map((p) => p[0])).filter((us) => us > 0);
  const lo = 10 ** Math.floor(Math.log10(all.length ? Math.min(...all) : 1));
  const hi = 10 ** Math.ceil(Math.log10(all.length ? Math.max(...all) : 10));
  const span = Math.log10(hi) - Math.log10(lo) || 1;
  const x = (us: number): number => MARGIN.left + ((Math.log10(Math.max(us, lo)) - Math.log10(lo)) / span) * plotW;
  const y = (fraction: number): number => top + (1 - fraction) * plotH;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<title>${escapeXml(options.title)}</title>`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    ...titleLines.map((line, i) => `<text x="${width / 2}" y="${18 + i * TITLE_LINE}" text-anchor="middle" font-size="13">${escapeXml(line)}</text>`),
  ];
  // Latency grid: every 1, 2 and 5 of each decade, labelled.
  for (let decade = lo; decade < hi; decade *= 10) {
    for (const m of [1, 2, 5]) {
      const us = decade * m;
      const at = fixed(x(us));
      out.push(`<line x1="${at}" y1="${top}" x2="${at}" y2="${top + plotH}" stroke="${m === 1 ? '#bbbbbb' : '#e4e4e4'}"/>`);
      out.push(`<text x="${at}" y="${top + plotH + 14}" text-anchor="middle">${escapeXml(formatLatency(us))}</text>`);
    }
  }
  out.push(`<line x1="${fixed(x(hi))}" y1="${top}" x2="${fixed(x(hi))}" y2="${top + plotH}" stroke="#bbbbbb"/>`);
  out.push(`<text x="${fixed(x(hi))}" y="${top + plotH + 14}" text-anchor="middle">${escapeXml(formatLatency(hi))}</text>`);
  out.push(`<text x="${MARGIN.left + plotW / 2}" y="${top + plotH + 32}" text-anchor="middle">latency (log scale)</text>`);
  // Fraction grid every 10%, with the median and p99 drawn darker.
  for (let pct = 0; pct <= 100; pct += 10) {
    const at = fixed(y(pct / 100));
    out.push(`<line x1="${MARGIN.left}" y1="${at}" x2="${MARGIN.left + plotW}" y2="${at}" stroke="${pct === 50 ? '#999999' : '#e4e4e4'}"/>`);
    out.push(`<text x="${MARGIN.left - 6}" y="${at}" text-anchor="end" dominant-baseline="middle">${pct}%</text>`);
  }
  const p99 = fixed(y(0.99));
  out.push(`<line x1="${MARGIN.left}" y1="${p99}" x2="${MARGIN.left + plotW}" y2="${p99}" stroke="#999999" stroke-dasharray="2 3"/>`);
  out.push(`<text x="${MARGIN.left + 4}" y="${fixed(y(0.99) + 11)}" fill="#777777">p99</text>`);
  out.push(`<text transform="translate(14 ${top + plotH / 2}) rotate(-90)" text-anchor="middle">requests answered within</text>`);
  out.push(`<rect x="${MARGIN.left}" y="${top}" width="${plotW}" height="${plotH}" fill="none" stroke="#666666"/>`);

  series.forEach((s, i) => {
    const color = PALETTE[(s.color ?? i) % PALETTE.length];
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    // A step up at each point: the fraction holds until the next latency is reached.
    let d = '';
    let prev: CdfPoint | undefined;
    for (const p of s.points) {
      d += prev === undefined ? `M${fixed(x(p[0]))} ${fixed(y(0))}V${fixed(y(p[1]))}` : `H${fixed(x(p[0]))}V${fixed(y(p[1]))}`;
      prev = p;
    }
    out.push(`<path data-series="${escapeXml(s.label)}" d="${d}" fill="none" stroke="${color}" stroke-width="1.6"${dash}/>`);
    const ly = height - legendHeight + 4 + i * LEGEND_LINE;
    out.push(`<line x1="${MARGIN.left}" y1="${ly + 6}" x2="${MARGIN.left + 24}" y2="${ly + 6}" stroke="${color}" stroke-width="2"${dash}/>`);
    out.push(`<text x="${MARGIN.left + 30}" y="${ly + 6}" dominant-baseline="middle">${escapeXml(s.label)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** Splits text at spaces into lines of at most `max` characters (a longer word keeps its own line). */
function wrap(text: string, max: number): string[] {
  const lines: string[] = [];
  for (const word of text.split(' ')) {
    const last = lines.length - 1;
    if (last >= 0 && lines[last].length + 1 + word.length <= max) lines[last] += ` ${word}`;
    else lines.push(word);
  }
  return lines;
}

/** 0.5 µs, 20 µs, 1 ms, 2 s: the axis labels. */
function formatLatency(us: number): string {
  if (us < 1000) return `${Number(us.toPrecision(3))} µs`;
  if (us < 1_000_000) return `${Number((us / 1000).toPrecision(3))} ms`;
  return `${Number((us / 1_000_000).toPrecision(3))} s`;
}

function fixed(v: number): string {
  return v.toFixed(1);
}

export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
