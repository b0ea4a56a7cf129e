// @ts-check
/**
 * fio through its nbd ioengine (libnbd inside fio, one connection, `iodepth` requests in flight).
 *
 * Latency is fio's total latency (`lat`, submission + completion, with `lat_percentiles=1`), the
 * time a request takes as the application sees it. With the nbd engine the submission part is
 * libnbd sending the request down the socket, a real share of a 4 KiB request's cost, so
 * completion latency (`clat`) alone would flatter every tool by the same few microseconds; it
 * is kept in the JSON for comparison with numbers quoted as clat.
 *
 * The report is fio's `json+`: the JSON report plus every latency histogram bin (fio keeps
 * latencies in about 1,800 logarithmic bins, 1/64 of a power of two wide: its percentiles come
 * from them too). The bins are the distribution the HTML page plots, at no cost to the run: a
 * latency log of every request would make fio write while it measures.
 *
 * fio prints "fio: connected to NBD server" on stdout even in JSON mode, so the report goes to
 * a file and the parser starts at the first line that opens the JSON document.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';

/**
 * @typedef {object} FioPass  One fio invocation.
 * @property {string} name
 * @property {'write' | 'read' | 'randread' | 'randwrite' | 'randrw'} rw  (randrw: half reads, half writes, reported together)
 * @property {number} stride  bytes between the starts of consecutive I/Os (sequential rw only); bs when dense
 * @property {number} bs  bytes per I/O
 * @property {number} iodepth
 * @property {number} ios  I/Os per loop
 * @property {number} [loops]  passes over the same offsets (default 1)
 * @property {number} size  bytes of the export; the pass ranges over [offset, size)
 * @property {number} [offset]  where the pass starts (default 0)
 * @property {number} [seed]  fio's randseed: another seed, other random offsets (default fio's own)
 * @property {number} [settleMs]  a measured pass waits this long first, every tool alike (jobs.mjs SETTLE_MS)
 */

/**
 * @typedef {object} Measurement
 * @property {number} p50Us  median total latency, microseconds
 * @property {number} p99Us
 * @property {number} clatP50Us  median completion latency, microseconds
 * @property {number} iops
 * @property {number} mibps
 * @property {number} ios  I/Os completed
 * @property {Bins} latNs  the total latency's distribution: [nanoseconds, count] pairs, ascending
 */

/** @typedef {[number, number][]} Bins */

/**
 * Which side of fio's report a pass's figures come from; a mixed pass counts both together.
 * @param {FioPass} pass
 * @returns {'read' | 'write' | 'mixed'}
 */
export function direction(pass) {
  return pass.rw === 'randrw' ? 'mixed' : pass.rw.endsWith('read') ? 'read' : 'write';
}

/**
 * The command line for one pass. Every option that changes what the I/O pattern is goes here,
 * so that every tool sees byte-for-byte the same job.
 * @param {FioPass} pass
 * @param {string} uri
 * @param {string} outputPath
 */
export function fioArgs(pass, uri, outputPath) {
  const hole = pass.stride - pass.bs;
  if (hole < 0) throw new Error(`fio pass ${pass.name}: stride ${pass.stride} is smaller than bs ${pass.bs}`);
  const rw = hole > 0 ? `${pass.rw}:${hole}` : pass.rw;
  return [
    `--name=${pass.name}`,
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--rw=${rw}`,
    `--bs=${pass.bs}`,
    `--iodepth=${pass.iodepth}`,
    `--offset=${pass.offset ?? 0}`,
    `--size=${pass.size - (pass.offset ?? 0)}`,
    // io_size, not number_ios: fio counts bytes moved, and would otherwise wrap around the
    // region and turn the tail of a first-write pass into rewrites.
    `--io_size=${pass.ios * pass.bs}`,
    `--loops=${pass.loops ?? 1}`,
    '--randrepeat=1',
    ...(pass.seed === undefined ? [] : [`--randseed=${pass.seed}`]),
    '--lat_percentiles=1',
    '--percentile_list=50:99',
    '--output-format=json+',
    `--output=${outputPath}`,
  ];
}

/**
 * @param {FioPass} pass
 * @param {string} uri
 * @param {string} outputPath
 * @param {Record<string, string>} [env]  added to fio's environment (tls.mjs preloads a shim)
 * @returns {Promise<Measurement>}
 */
export async function runFio(pass, uri, outputPath, env) {
  const args = fioArgs(pass, uri, outputPath);
  const stderr = await new Promise((resolve, reject) => {
    const child = spawn('fio', args, { stdio: ['ignore', 'ignore', 'pipe'], env: env && { ...process.env, ...env } });
    let err = '';
    child.stderr.on('data', (chunk) => (err += chunk));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code === 0) resolve(err);
      else reject(new Error(`fio ${args.join(' ')} exited with ${code}:\n${err}`));
    });
  });
  const text = await readFile(outputPath, 'utf8');
  try {
    return parseFioJson(text, direction(pass));
  } catch (e) {
    throw new Error(`${/** @type {Error} */ (e).message}\nfio stderr:\n${stderr}`);
  }
}

/**
 * Reads one job's numbers out of fio's json+ report.
 * @param {string} text  the report, possibly preceded by fio's informational lines
 * @param {'read' | 'write' | 'mixed'} dir  'mixed': reads and writes together
 * @returns {Measurement}
 */
export function parseFioJson(text, dir) {
  const start = text.search(/^\{/m);
  if (start < 0) throw new Error('fio wrote no JSON report');
  const report = JSON.parse(text.slice(start));
  const job = report.jobs?.[0];
  if (!job) throw new Error('fio JSON report has no job');
  if (job.error) throw new Error(`fio job ${job.jobname} failed with error ${job.error}`);
  const sides = (dir === 'mixed' ? ['read', 'write'] : [dir]).map((d) => job[d]).filter((side) => side && side.total_ios > 0);
  if (sides.length === 0) throw new Error(`fio job ${job.jobname} did no ${dir === 'mixed' ? 'reads or writes' : dir} I/O`);
  for (const side of sides) {
    if (!side.lat_ns?.bins || !side.clat_ns?.bins) throw new Error(`fio job ${job.jobname} reported no latency histogram (json+)`);
  }
  const latNs = mergeBins(sides.map((side) => Object.entries(side.lat_ns.bins)));
  const clatNs = mergeBins(sides.map((side) => Object.entries(side.clat_ns.bins)));
  /** @param {(side: any) => number} get */
  const sum = (get) => sides.reduce((total, side) => total + get(side), 0);
  return {
    p50Us: percentile(latNs, 0.5) / 1000,
    p99Us: percentile(latNs, 0.99) / 1000,
    clatP50Us: percentile(clatNs, 0.5) / 1000,
    iops: sum((side) => side.iops),
    mibps: sum((side) => side.bw_bytes) / 2 ** 20,
    ios: sum((side) => side.total_ios),
    latNs,
  };
}

/**
 * Several distributions (fio's bins as [nanoseconds, count] entries, or Bins) as one ascending list.
 * @param {[string | number, number][][]} binSets
 * @returns {Bins}
 */
export function mergeBins(binSets) {
  /** @type {Map<number, number>} */
  const counts = new Map();
  for (const bins of binSets) for (const [ns, n] of bins) counts.set(Number(ns), (counts.get(Number(ns)) ?? 0) + n);
  return [...counts].sort((a, b) => a[0] - b[0]);
}

/**
 * The nearest-rank percentile of a distribution: the smallest bin that holds at least
 * fraction q of the requests (fio reports its own percentiles the same way, from the same bins).
 * @param {Bins} bins
 * @param {number} q  0 < q <= 1
 */
export function percentile(bins, q) {
  const total = bins.reduce((n, [, c]) => n + c, 0);
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (const [ns, n] of bins) {
    seen += n;
    if (seen >= rank) return ns;
  }
  return bins.length ? bins[bins.length - 1][0] : 0;
}
