// @ts-check
/**
 * The targets cowdisk is held to, each a ratio between two medians of the same run: issue 5's
 * (latency against the floor, QD16 rewrites against qemu-nbd, chain depth) and issue 13's
 * (throughput at the floor, CPU per request no more than qemu-nbd's, a cold server within 1.5×
 * of a warm one). Every target is computed for each cowdisk configuration measured, so that the
 * default is never the only figure.
 */

/** @typedef {import('./run.mjs').Result} Result */
/** @typedef {import('./run.mjs').Sample} Sample */

/**
 * @typedef {object} Target
 * @property {string} name
 * @property {string} issue  where the target was set
 * @property {string} want  e.g. "<= 1.30"
 * @property {number | null} value  the measured ratio; null when a side was not measured
 * @property {boolean} [na]  the target is about another configuration (e.g. --poll-us 0 only)
 * @property {boolean | null} met
 */

/**
 * A target as measured for this configuration, or marked as another's (the chain is measured with
 * cowdisk's defaults; the --poll-us 0 target is about that configuration only).
 * @param {boolean} applies @param {Target} t @returns {Target}
 */
function only(applies, t) {
  return applies ? t : { ...t, value: null, met: null, na: true };
}

/** The peer the CPU and QD16 targets compare with. */
const QEMU = 'qemu-qcow2-64k';
const FLOOR = 'nbdkit-file';

/**
 * @param {Result} result
 * @param {string} [tool]  'cowdisk' (the default) or 'cowdisk-nopoll'
 * @returns {Target[]}
 */
export function targets(result, tool = 'cowdisk') {
  /** @param {string} who @param {string} job @returns {Sample | undefined} */
  const get = (who, job) => result.results.find((r) => r.tool === who && r.job === job)?.median;
  /**
   * @param {string} issue @param {string} name @param {number | null | undefined} a @param {number | null | undefined} b
   * @param {'<=' | '>='} op @param {number} bound
   * @returns {Target}
   */
  const target = (issue, name, a, b, op, bound) => {
    const value = a == null || b == null || b === 0 ? null : a / b;
    const met = value === null ? null : op === '<=' ? value <= bound : value >= bound;
    return { name, issue, want: `${op} ${bound.toFixed(2)}`, value, met };
  };
  /**
   * @param {string} job @param {(m: Sample) => number} metric @param {string} other
   * @returns {[number | undefined, number | undefined]}
   */
  const vs = (job, metric, other) => {
    const a = get(tool, job);
    const b = get(other, job);
    return [a && metric(a), b && metric(b)];
  };
  const p50 = (/** @type {Sample} */ m) => m.p50Us;
  const cpu = (/** @type {Sample} */ m) => m.cpuUsPerIo;
  const chain = Array.isArray(result.chain) ? result.chain : [];
  const depth = (/** @type {number} */ d) => chain.find((c) => c.depth === d)?.median;
  const cold = get(tool, 'cold-start');
  return [
    target('5', 'first-write p50 / floor', ...vs('write-first-qd1', p50, FLOOR), '<=', 1.3),
    target('5', 'rewrite p50 / floor', ...vs('rewrite-qd1', p50, FLOOR), '<=', 1.15),
    target('5', 'QD16 rewrite IOPS / qemu-nbd qcow2 64K', ...vs('rewrite-qd16', (m) => m.iops, QEMU), '>=', 1.5),
    only(tool === 'cowdisk', target('5', 'randread p50, 16-deep / 1-deep chain', depth(16)?.p50Us, depth(1)?.p50Us, '<=', 1.1)),
    only(tool === 'cowdisk-nopoll', target('13', 'first-write p50 / floor (with --poll-us 0)', ...vs('write-first-qd1', p50, FLOOR), '<=', 1.1)),
    target('13', 'random read QD16 IOPS / floor', ...vs('randread-qd16', (m) => m.iops, FLOOR), '>=', 1.0),
    target('13', '1 MiB seq. read MiB/s / floor', ...vs('seqread-1m', (m) => m.mibps, FLOOR), '>=', 1.0),
    target('13', '1 MiB seq. write MiB/s / floor', ...vs('seqwrite-1m', (m) => m.mibps, FLOOR), '>=', 0.8),
    target('13', 'CPU per request, first write QD1 / qemu-nbd', ...vs('write-first-qd1', cpu, QEMU), '<=', 1.0),
    target('13', 'CPU per request, rewrite QD1 / qemu-nbd', ...vs('rewrite-qd1', cpu, QEMU), '<=', 1.0),
    target('13', 'CPU per request, rewrite QD16 / qemu-nbd', ...vs('rewrite-qd16', cpu, QEMU), '<=', 1.0),
    target('13', 'cold-start p50 / warm p50', cold?.p50Us, cold?.warm?.p50Us, '<=', 1.5),
  ];
}
