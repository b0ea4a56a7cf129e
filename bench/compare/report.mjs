// @ts-check
/**
 * The run as people read it: a summary, the server's CPU time per request, then one Markdown
 * table per job (so it pastes into the README as is), each tool's medians and its ratio to the
 * floor (nbdkit's file plugin: the same server with no copy-on-write). A latency ratio above 1
 * is slower than the floor; a rate ratio below 1 is. Then the chain-depth variant and cowdisk's
 * targets (targets.mjs), met or missed by how much.
 */
import { targets } from './targets.mjs';

import { renderSealed } from './sealed.mjs';

/** @typedef {import('./run.mjs').Result} Result */
/** @typedef {import('./run.mjs').Sample} Measurement */

/**
 * @param {Result} result
 * @param {string} command  how the run was started, for the header
 */
export function renderText(result, command) {
  const m = result.machine;
  const s = result.settings;
  const out = [
    `# bench/compare, ${result.date.slice(0, 10)}`,
    '',
    `Machine: ${m.cores} cores (${m.cpu}), Linux ${m.kernel}, ${m.memoryGiB} GiB; ${m.node}, ${m.fio}.`,
    `Command: \`${command}\`. Base: ${s.size / 2 ** 20} MiB of random data, the first ${s.measured / 2 ** 20} MiB measured ` +
      `(the rest is the warm-up's). First writes: 4 KiB every ${s.stride / 1024} KiB. Medians of ${s.reps} repetition${s.reps === 1 ? '' : 's'}${s.quick ? ' (--quick: smoke test sizes, not a measurement)' : ''}.`,
    `Tools: ${result.tools.map((t) => `${t.label} (${t.version})`).join('; ')}.`,
  ];
  const foreign = [...result.results, ...(Array.isArray(result.chain) ? result.chain : [])].flatMap((r) => r.reps.map((x) => x.foreignCores)).sort((a, b) => a - b);
  if (foreign.length) {
    out.push(
      `Other work on the machine during the measurements: median ${foreign[Math.floor(foreign.length / 2)].toFixed(2)} cores, ` +
        `worst ${foreign[foreign.length - 1].toFixed(2)} of ${m.cores} (near 0 is a clean measurement).`,
    );
  }
  for (const skip of result.skipped) out.push(`Not measured: ${skip.label}: ${skip.reason}.`);
  const floor = result.tools.some((t) => t.id === 'nbdkit-file') ? 'nbdkit-file' : null;

  out.push('', '## Summary', '', `Each job's headline figure${floor ? ', and in brackets its ratio to the floor' : ''} (the cold start: its p50 and the ratio to the same tool's warm p50); the tables below have the rest.`, '');
  out.push(...markdownTable(...summaryTable(result)));
  out.push('', '## CPU per request', '', CPU_NOTE, '', ...markdownTable(...cpuTable(result)));

  for (const job of result.jobs) {
    out.push('', `## ${job.title}`, '');
    out.push(...(job.headline === 'cold' ? coldTable(result, job.id) : jobTable(result, job, floor)));
  }

  out.push('', '## Random 4 KiB read through a cowdisk chain, QD16', '');
  if (Array.isArray(result.chain)) {
    const one = result.chain.find((c) => c.depth === 1)?.median;
    const rows = result.chain.map((c) => {
      const row = [`${c.depth}`, us(c.median.p50Us), us(c.median.p99Us), whole(c.median.iops), us(c.median.cpuUsPerIo)];
      if (one) row.push(ratio(c.median.p50Us / one.p50Us), ratio(c.median.iops / one.iops));
      return row;
    });
    out.push(...markdownTable(['layers under the overlay', 'p50 µs', 'p99 µs', 'IOPS', 'CPU µs/req', 'p50 × 1-deep', 'IOPS × 1-deep'], rows));
  } else {
    out.push(`Not measured: ${result.chain.skipped}.`);
  }

  out.push(...renderSealed(result.sealed, result.chain));

  const goals = targetTable(result);
  if (goals) out.push('', '## Targets for cowdisk (issues 5 and 13)', '', ...markdownTable(...goals));
  return out.join('\n') + '\n';
}

export const CPU_NOTE =
  "The server process's user + system time (every thread) during each measured pass, divided by the pass's requests, in µs; for the cold start, its cold pass.";

/** @typedef {[string[], string[][]]} Table  a heading row and the rows */

/**
 * Each tool's headline figure per job, with its ratio to the floor.
 * @param {Result} result
 * @returns {Table}
 */
export function summaryTable(result) {
  const floor = result.tools.some((t) => t.id === 'nbdkit-file') ? 'nbdkit-file' : null;
  /** @param {string} tool @param {string} job */
  const get = (tool, job) => result.results.find((r) => r.tool === tool && r.job === job)?.median;
  /** @type {string[][]} */
  const summary = result.tools.map((tool) => [
    tool.label,
    ...result.jobs.map((job) => {
      const x = get(tool.id, job.id);
      const f = floor ? get(floor, job.id) : undefined;
      if (!x) return '';
      if (job.headline === 'cold') return x.warm ? `${us(x.p50Us)} µs (${ratio(x.p50Us / x.warm.p50Us)})` : `${us(x.p50Us)} µs`;
      /** @param {Measurement} m */
      const value = (m) => (job.headline === 'p50' ? m.p50Us : job.rate === 'iops' ? m.iops : m.mibps);
      const text = job.headline === 'p50' ? `${us(x.p50Us)} µs` : whole(value(x));
      return f ? `${text} (${ratio(value(x) / value(f))})` : text;
    }),
  ]);
  return [['tool', ...result.jobs.map((j) => (j.headline !== 'rate' ? j.short : `${j.short}, ${j.rate === 'iops' ? 'IOPS' : 'MiB/s'}`))], summary];
}

/**
 * The server's CPU time per request, each tool and job.
 * @param {Result} result
 * @returns {Table}
 */
export function cpuTable(result) {
  /** @param {string} tool @param {string} job */
  const get = (tool, job) => result.results.find((r) => r.tool === tool && r.job === job)?.median;
  return [
    ['tool', ...result.jobs.map((j) => j.id)],
    result.tools.map((tool) => [tool.label, ...result.jobs.map((job) => {
      const x = get(tool.id, job.id);
      return x ? us(x.cpuUsPerIo) : '';
    })]),
  ];
}

/**
 * cowdisk's targets, one column per cowdisk configuration measured; null without cowdisk.
 * @param {Result} result
 * @returns {Table | null}
 */
export function targetTable(result) {
  const variants = result.tools.filter((t) => t.id === 'cowdisk' || t.id === 'cowdisk-nopoll');
  if (variants.length === 0) return null;
  const perVariant = variants.map((v) => targets(result, v.id));
  return [
    ['target', 'issue', 'want', ...variants.map((v) => v.label)],
    perVariant[0].map((t, i) => [
      t.name,
      t.issue,
      t.want,
      ...perVariant.map((ts) => {
        const x = ts[i];
        if (x.na) return '—';
        return x.value === null ? 'not measured' : `${x.value.toFixed(3)}× ${x.met ? 'met' : 'MISSED'}`;
      }),
    ]),
  ];
}

/**
 * One job's table: every tool's p50, p99, rate and CPU per request, and the ratios to the floor.
 * @param {Result} result
 * @param {Result['jobs'][number]} job
 * @param {string | null} floor
 */
function jobTable(result, job, floor) {
  /** @param {string} tool */
  const get = (tool) => result.results.find((r) => r.tool === tool && r.job === job.id)?.median;
  const rateName = job.rate === 'iops' ? 'IOPS' : 'MiB/s';
  /** @param {Measurement} x */
  const rate = (x) => (job.rate === 'iops' ? x.iops : x.mibps);
  const base = floor && get(floor);
  const head = ['tool', 'p50 µs', 'p99 µs', rateName, 'CPU µs/req'];
  if (base) head.push('p50 × floor', `${rateName} × floor`);
  /** @type {string[][]} */
  const rows = [];
  for (const tool of result.tools) {
    const x = get(tool.id);
    if (!x) continue;
    const row = [tool.label, us(x.p50Us), us(x.p99Us), whole(rate(x)), us(x.cpuUsPerIo)];
    if (base) row.push(ratio(x.p50Us / base.p50Us), ratio(rate(x) / rate(base)));
    rows.push(row);
  }
  return markdownTable(head, rows);
}

/**
 * The cold-start job's table: the cold pass against the same tool's warm pass.
 * @param {Result} result
 * @param {string} jobId
 */
function coldTable(result, jobId) {
  /** @type {string[][]} */
  const rows = [];
  for (const tool of result.tools) {
    const x = result.results.find((r) => r.tool === tool.id && r.job === jobId)?.median;
    if (!x?.warm) continue;
    rows.push([tool.label, us(x.p50Us), us(x.p99Us), us(x.warm.p50Us), us(x.warm.p99Us), ratio(x.p50Us / x.warm.p50Us), us(x.cpuUsPerIo), us(x.warm.cpuUsPerIo)]);
  }
  return markdownTable(['tool', 'cold p50 µs', 'cold p99 µs', 'warm p50 µs', 'warm p99 µs', 'cold p50 × warm', 'CPU µs/req cold', 'CPU µs/req warm'], rows);
}

/** @param {string[]} head @param {string[][]} rows */
function markdownTable(head, rows) {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  /** @param {string[]} cells */
  const line = (cells) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`;
  return [line(head), rule, ...rows.map(line)];
}

/** @param {number} v */
const us = (v) => (v < 100 ? v.toFixed(1) : Math.round(v).toString());
/** @param {number} v */
const whole = (v) => Math.round(v).toLocaleString('en-US');
/** @param {number} v */
const ratio = (v) => `${v.toFixed(2)}×`;
