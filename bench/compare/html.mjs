// @ts-check
/**
 * `bench/compare --html FILE`: the run as one self-contained page: the summary, CPU per request
 * and targets tables, then per job the latency distribution of every tool (a CDF on a log scale,
 * one line per tool, from fio's histogram bins pooled over the repetitions). Inline SVG and a few
 * lines of inline CSS; no script, nothing fetched from anywhere, so the file can be mailed,
 * attached to an issue or opened offline.
 *
 * The page is also well-formed XML (every element closed, no named entities), so any XML parser
 * can check it, as the test does.
 *
 * The plot itself is cowdisk's (src/bench/cdf-plot.ts, the same one `cowdisk bench --plot` draws),
 * so this needs the build (`npm run build`); the text report does not.
 */
import { summaryTable, cpuTable, targetTable, CPU_NOTE } from './report.mjs';

/** @typedef {import('./run.mjs').Result} Result */
/** @typedef {import('./report.mjs').Table} Table */
/** @typedef {import('../../dist/bench/cdf-plot.js').CdfSeries} CdfSeries */

/**
 * The plot module, or an error saying to build it (called at the start of a run too, so that a
 * missing build fails in a second, not after the whole run).
 * @returns {Promise<typeof import('../../dist/bench/cdf-plot.js')>}
 */
export async function plotModule() {
  try {
    return await import('../../dist/bench/cdf-plot.js');
  } catch (err) {
    throw new Error(`--html draws with cowdisk's plot module, which is not built: run \`npm run build\` (${/** @type {Error} */ (err).message.split('\n')[0]})`);
  }
}

/**
 * @param {Result} result
 * @param {string} command  how the run was started
 * @returns {Promise<string>}
 */
export async function renderHtml(result, command) {
  const { escapeXml } = await plotModule();
  const m = result.machine;
  const s = result.settings;
  /** @param {Table} table @param {string} id */
  const htmlTable = ([head, rows], id) =>
    [
      `<table id="${id}">`,
      `<thead><tr>${head.map((h) => `<th>${escapeXml(h)}</th>`).join('')}</tr></thead>`,
      '<tbody>',
      ...rows.map((r) => `<tr>${r.map((c, i) => (i === 0 ? `<th>${escapeXml(c)}</th>` : `<td>${escapeXml(c)}</td>`)).join('')}</tr>`),
      '</tbody>',
      '</table>',
    ].join('\n');
  const out = [
    '<!DOCTYPE html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8"/>',
    `<title>bench/compare, ${escapeXml(result.date.slice(0, 10))}</title>`,
    '<style>',
    'body { font-family: sans-serif; max-width: 60rem; margin: 1rem auto; padding: 0 1rem; color: #222; }',
    'table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }',
    'th, td { padding: 0.2rem 0.6rem; border-bottom: 1px solid #ddd; text-align: right; }',
    'tbody th, thead th:first-child { text-align: left; }',
    'figure { margin: 1rem 0 2rem; } svg { max-width: 100%; height: auto; }',
    '</style>',
    '</head>',
    '<body>',
    `<h1>bench/compare, ${escapeXml(result.date.slice(0, 16).replace('T', ' '))} UTC</h1>`,
    `<p>Machine: ${escapeXml(`${m.cores} cores (${m.cpu}), Linux ${m.kernel}, ${m.memoryGiB} GiB; ${m.node}, ${m.fio}`)}.</p>`,
    `<p>Command: <code>${escapeXml(command)}</code>. Base: ${s.size / 2 ** 20} MiB of random data; medians of ${s.reps} repetition${s.reps === 1 ? '' : 's'}${s.quick ? ' (--quick: smoke-test sizes, not a measurement)' : ''}.</p>`,
    '<h2>Summary</h2>',
    '<p>Each job’s headline figure and in brackets its ratio to the floor (nbdkit’s file plugin on a plain copy); for the cold start, its p50 and the ratio to the same tool’s warm p50.</p>',
    htmlTable(summaryTable(result), 'summary'),
    '<h2>CPU per request</h2>',
    `<p>${escapeXml(CPU_NOTE)}</p>`,
    htmlTable(cpuTable(result), 'cpu'),
  ];
  const goals = targetTable(result);
  if (goals) out.push('<h2>Targets for cowdisk</h2>', htmlTable(goals, 'targets'));
  out.push(
    '<h2>Latency distributions</h2>',
    '<p>The share of requests answered within a given latency (fio’s total latency, every repetition pooled): further left is faster; where a line crosses 50% is its median. Dashed: the same tool’s warm pass.</p>',
  );
  for (const plot of await plots(result)) {
    out.push(`<figure id="${escapeXml(plot.id)}">`, plot.svg.trim(), `<figcaption>${escapeXml(plot.caption)}</figcaption>`, '</figure>');
  }
  out.push('</body>', '</html>');
  return out.join('\n') + '\n';
}

/**
 * Every job's latency CDF as an SVG document (one line per tool; the cold start's warm pass
 * dashed), and the chain variant's: what the page shows, and what `--plots DIR` writes as files
 * (for a README that shows the plot of the run its table came from).
 * @param {Result} result
 * @returns {Promise<{ id: string, caption: string, svg: string }[]>}
 */
export async function plots(result) {
  const { renderCdfSvg, cdfFromBins } = await plotModule();
  const out = [];
  for (const job of result.jobs) {
    /** @type {CdfSeries[]} */
    const series = [];
    result.tools.forEach((tool, i) => {
      const row = result.results.find((r) => r.tool === tool.id && r.job === job.id)?.median;
      if (!row) return;
      series.push({ label: job.headline === 'cold' ? `${tool.label}, cold` : tool.label, points: cdfFromBins(row.latNs), color: i });
      if (row.warm) series.push({ label: `${tool.label}, warm`, points: cdfFromBins(row.warm.latNs), color: i, dashed: true });
    });
    if (series.length > 0) out.push({ id: `job-${job.id}`, caption: job.id, svg: renderCdfSvg(series, { title: job.title }) });
  }
  if (Array.isArray(result.chain)) {
    const series = result.chain.map((c, i) => ({ label: `${c.depth} layer${c.depth === 1 ? '' : 's'} under the overlay`, points: cdfFromBins(c.median.latNs), color: i }));
    out.push({ id: 'job-chain', caption: 'chain depth', svg: renderCdfSvg(series, { title: 'Random 4 KiB read through a cowdisk chain, QD16' }) });
  }
  return out;
}
