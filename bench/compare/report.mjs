// @ts-check
/**
 * The run as people read it: one Markdown table per job (so it pastes into the README as is),
 * each tool's medians and its ratio to the floor (nbdkit's file plugin: the same server with no
 * copy-on-write). A latency ratio above 1 is slower than the floor; a rate ratio below 1 is.
 * Then the chain-depth variant and issue 5's targets for cowdisk, met or missed by how much.
 */

import { renderSealed } from './sealed.mjs';

/** @typedef {import('./run.mjs').Result} Result */
/** @typedef {import('./fio.mjs').Measurement} Measurement */

/**
 * @typedef {object} Target
 * @property {string} name
 * @property {string} want  e.g. "<= 1.30"
 * @property {number | null} value  the measured ratio; null when a side was not measured
 * @property {boolean | null} met
 */

/**
 * Issue 5's targets for one cowdisk configuration (the chain-depth variant runs with the default).
 * @param {Result} result
 * @param {string} [tool]  'cowdisk' (the default) or 'cowdisk-nopoll'
 * @returns {Target[]}
 */
export function targets(result, tool = 'cowdisk') {
  /** @param {string} tool @param {string} job */
  const get = (tool, job) => result.results.find((r) => r.tool === tool && r.job === job)?.median ?? null;
  /**
   * @param {string} name @param {number | null | undefined} a @param {number | null | undefined} b
   * @param {'<=' | '>='} op @param {number} bound
   */
  const target = (name, a, b, op, bound) => {
    const value = a == null || b == null ? null : a / b;
    const met = value === null ? null : op === '<=' ? value <= bound : value >= bound;
    return { name, want: `${op} ${bound.toFixed(2)}`, value, met };
  };
  const chain = Array.isArray(result.chain) ? result.chain : [];
  const depth = (/** @type {number} */ d) => chain.find((c) => c.depth === d)?.median;
  return [
    target('first-write p50 / floor', get(tool, 'write-first-qd1')?.p50Us, get('nbdkit-file', 'write-first-qd1')?.p50Us, '<=', 1.3),
    target('rewrite p50 / floor', get(tool, 'rewrite-qd1')?.p50Us, get('nbdkit-file', 'rewrite-qd1')?.p50Us, '<=', 1.15),
    target('QD16 rewrite IOPS / qemu-nbd qcow2 64K', get(tool, 'rewrite-qd16')?.iops, get('qemu-qcow2-64k', 'rewrite-qd16')?.iops, '>=', 1.5),
    target('randread p50, 16-deep / 1-deep chain', tool === 'cowdisk' ? depth(16)?.p50Us : null, depth(1)?.p50Us, '<=', 1.1),
  ];
}

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
  /** @param {string} tool @param {string} job */
  const get = (tool, job) => result.results.find((r) => r.tool === tool && r.job === job)?.median;

  out.push('', '## Summary', '', `Each job's headline figure${floor ? ', and in brackets its ratio to the floor' : ''}; the tables below have the rest.`, '');
  /** @type {string[][]} */
  const summary = result.tools.map((tool) => [
    tool.label,
    ...result.jobs.map((job) => {
      const x = get(tool.id, job.id);
      const f = floor ? get(floor, job.id) : undefined;
      if (!x) return '';
      /** @param {Measurement} m */
      const value = (m) => (job.headline === 'p50' ? m.p50Us : job.rate === 'iops' ? m.iops : m.mibps);
      const text = job.headline === 'p50' ? `${us(x.p50Us)} µs` : whole(value(x));
      return f ? `${text} (${ratio(value(x) / value(f))})` : text;
    }),
  ]);
  out.push(
    ...markdownTable(
      ['tool', ...result.jobs.map((j) => (j.headline === 'p50' ? j.short : `${j.short}, ${j.rate === 'iops' ? 'IOPS' : 'MiB/s'}`))],
      summary,
    ),
  );

  for (const job of result.jobs) {
    const rateName = job.rate === 'iops' ? 'IOPS' : 'MiB/s';
    /** @param {Measurement} x */
    const rate = (x) => (job.rate === 'iops' ? x.iops : x.mibps);
    const base = floor && get(floor, job.id);
    out.push('', `## ${job.title}`, '');
    const head = ['tool', 'p50 µs', 'p99 µs', rateName];
    if (base) head.push('p50 × floor', `${rateName} × floor`);
    /** @type {string[][]} */
    const rows = [];
    for (const tool of result.tools) {
      const x = get(tool.id, job.id);
      if (!x) continue;
      const row = [tool.label, us(x.p50Us), us(x.p99Us), whole(rate(x))];
      if (base) row.push(ratio(x.p50Us / base.p50Us), ratio(rate(x) / rate(base)));
      rows.push(row);
    }
    out.push(...markdownTable(head, rows));
  }

  out.push('', '## Random 4 KiB read through a cowdisk chain, QD16', '');
  if (Array.isArray(result.chain)) {
    const one = result.chain.find((c) => c.depth === 1)?.median;
    const rows = result.chain.map((c) => {
      const row = [`${c.depth}`, us(c.median.p50Us), us(c.median.p99Us), whole(c.median.iops)];
      if (one) row.push(ratio(c.median.p50Us / one.p50Us), ratio(c.median.iops / one.iops));
      return row;
    });
    out.push(...markdownTable(['layers under the overlay', 'p50 µs', 'p99 µs', 'IOPS', 'p50 × 1-deep', 'IOPS × 1-deep'], rows));
  } else {
    out.push(`Not measured: ${result.chain.skipped}.`);
  }

  out.push(...renderSealed(result.sealed, result.chain));

  const variants = result.tools.filter((t) => t.id === 'cowdisk' || t.id === 'cowdisk-nopoll');
  if (variants.length === 0) return out.join('\n') + '\n';
  out.push('', '## Targets for cowdisk (issue 5)', '');
  const perVariant = variants.map((v) => targets(result, v.id));
  out.push(
    ...markdownTable(
      ['target', 'want', ...variants.map((v) => v.label)],
      perVariant[0].map((t, i) => [
        t.name,
        t.want,
        ...perVariant.map((ts) => {
          const x = ts[i];
          return x.value === null ? 'not measured' : `${x.value.toFixed(3)}× ${x.met ? 'met' : 'MISSED'}`;
        }),
      ]),
    ),
  );
  return out.join('\n') + '\n';
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
