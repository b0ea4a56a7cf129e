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
 * fio prints "fio: connected to NBD server" on stdout even in JSON mode, so the report goes to
 * a file and the parser starts at the first line that opens the JSON document.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';

/**
 * @typedef {object} FioPass  One fio invocation.
 * @property {string} name
 * @property {'write' | 'read' | 'randread' | 'randwrite' | 'randrw'} rw  (randrw: half reads, half writes)
 * @property {number} stride  bytes between the starts of consecutive I/Os (sequential rw only); bs when dense
 * @property {number} bs  bytes per I/O
 * @property {number} iodepth
 * @property {number} ios  I/Os per loop
 * @property {number} [loops]  passes over the same offsets (default 1)
 * @property {number} size  bytes of the export; the pass ranges over [offset, size)
 * @property {number} [offset]  where the pass starts (default 0)
 */

/**
 * @typedef {object} Measurement
 * @property {number} p50Us  median total latency, microseconds
 * @property {number} p99Us
 * @property {number} clatP50Us  median completion latency, microseconds
 * @property {number} iops
 * @property {number} mibps
 * @property {number} ios  I/Os completed
 */

/** @param {FioPass} pass */
export function direction(pass) {
  return pass.rw.endsWith('read') ? 'read' : 'write';
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
    '--lat_percentiles=1',
    '--percentile_list=50:99',
    '--output-format=json',
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
 * Reads one job's numbers out of fio's JSON report.
 * @param {string} text  the report, possibly preceded by fio's informational lines
 * @param {'read' | 'write'} dir
 * @returns {Measurement}
 */
export function parseFioJson(text, dir) {
  const start = text.search(/^\{/m);
  if (start < 0) throw new Error('fio wrote no JSON report');
  const report = JSON.parse(text.slice(start));
  const job = report.jobs?.[0];
  if (!job) throw new Error('fio JSON report has no job');
  if (job.error) throw new Error(`fio job ${job.jobname} failed with error ${job.error}`);
  const side = job[dir];
  if (!side || side.total_ios === 0) throw new Error(`fio job ${job.jobname} did no ${dir} I/O`);
  const lat = side.lat_ns?.percentile;
  const clat = side.clat_ns?.percentile;
  if (!lat || !clat) throw new Error(`fio job ${job.jobname} reported no latency percentiles`);
  return {
    p50Us: lat['50.000000'] / 1000,
    p99Us: lat['99.000000'] / 1000,
    clatP50Us: clat['50.000000'] / 1000,
    iops: side.iops,
    mibps: side.bw_bytes / 2 ** 20,
    ios: side.total_ios,
  };
}
