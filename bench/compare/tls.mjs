// @ts-check
/**
 * bench/compare --tls: what TLS costs each server, in one run on this machine.
 *
 * Each tool serves a fresh copy-on-write image over the shared random base (the same images and
 * servers as bench/compare), once in plaintext and once requiring TLS with a pre-shared key:
 *   - cowdisk:   `cowdisk serve --tls require --tls-psk FILE`
 *   - qemu-nbd:  `--object tls-creds-psk,endpoint=server,dir=DIR --tls-creds` on a qcow2 overlay
 *   - nbdkit:    `--tls=require --tls-psk=FILE` with its cow filter
 * and fio runs the two read jobs the target is about, 4 KiB random reads at QD16 and 1 MiB
 * sequential reads (jobs.mjs), through a libnbd `nbds+unix://` URI with `tls-psk-file`. The
 * figure compared is each tool's TLS/plaintext throughput ratio: what TLS takes away from that
 * server, whatever its plaintext speed.
 *
 * fio is the same binary in both modes; for TLS it runs with tls-uri-shim.c preloaded (built with
 * cc into the run's directory), because its nbd engine never lets libnbd read the PSK file a URI
 * names. The measurement is run.mjs's: a fresh image and server per measurement, the same
 * unmeasured warm-up, the base read into the page cache, the server stopped by its PID, the run's
 * file system synced; the six variants rotate with the repetition; medians over repetitions; and
 * how much CPU everything else used meanwhile, since the machine is shared.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeRandomBase, warmPageCache } from './base.mjs';
import { cowdiskTool } from './cowdisk.mjs';
import { runFio } from './fio.mjs';
import { foreignCores, sampleCpu, waitForIdle } from './interference.mjs';
import { cpuSeconds } from './server-cpu.mjs';
import { MIN_STRIDE, buildJobs, warmupPass } from './jobs.mjs';
import { PEERS } from './peers.mjs';
import { median, rotate } from './run.mjs';
import { startServer } from './server.mjs';
import { firstLine, missingPrograms, runChecked } from './tool.mjs';

/** @typedef {import('./tool.mjs').Tool} Tool */
/** @typedef {import('./server.mjs').Launch} Launch */
/** @typedef {import('./run.mjs').Sample} Sample  a measurement, the server's CPU per request included */
/** @typedef {{ dir: string, file: string }} Keys  the PSK file, and the directory qemu-nbd reads keys.psk from */

const IDENTITY = 'bench';
const SHIM = join(dirname(fileURLToPath(import.meta.url)), 'tls-uri-shim.c');
const JOBS = ['randread-qd16', 'seqread-1m'];

/**
 * The tools, and what each adds to its plaintext command line to require TLS-PSK.
 * @type {{ tool: Tool, tls: (launch: Launch, keys: Keys) => Launch }[]}
 */
const TLS_TOOLS = [
  { tool: cowdiskTool, tls: (l, k) => ({ ...l, args: [...l.args, '--tls', 'require', '--tls-psk', k.file] }) },
  {
    tool: peer('qemu-qcow2-64k'),
    tls: (l, k) => ({ ...l, args: ['--object', `tls-creds-psk,id=tls0,endpoint=server,dir=${k.dir}`, '--tls-creds=tls0', ...l.args] }),
  },
  { tool: peer('nbdkit-cow'), tls: (l, k) => ({ ...l, args: ['--tls=require', `--tls-psk=${k.file}`, ...l.args] }) },
];

export const TLS_TOOL_IDS = TLS_TOOLS.map((t) => t.tool.id);

/** @param {string} id */
function peer(id) {
  return /** @type {Tool} */ (PEERS.find((p) => p.id === id));
}

/**
 * @typedef {object} TlsOptions
 * @property {number} reps
 * @property {boolean} quick
 * @property {number} size
 * @property {string[] | null} tools  ids among TLS_TOOL_IDS; null: all
 * @property {string} dir
 * @property {number} waitIdle
 * @property {AbortSignal} [signal]
 */

/**
 * @typedef {object} TlsResult
 * @property {string} date
 * @property {{ cores: number, cpu: string, kernel: string, node: string, fio: string, loadBefore: number[], loadAfter: number[] }} machine
 * @property {{ reps: number, quick: boolean, size: number }} settings
 * @property {{ id: string, label: string, version: string }[]} tools
 * @property {{ id: string, title: string, short: string, rate: 'iops' | 'mibps' }[]} jobs
 * @property {{ tool: string, job: string, tls: boolean, reps: Sample[], median: Sample }[]} results
 */

/**
 * @param {TlsOptions} options
 * @param {(line: string) => void} progress
 * @returns {Promise<TlsResult>}
 */
export async function compareTls(options, progress) {
  const unknown = (options.tools ?? []).filter((id) => !TLS_TOOL_IDS.includes(id));
  if (unknown.length) throw new Error(`--tls measures ${TLS_TOOL_IDS.join(', ')}; not ${unknown.join(', ')}`);
  const tools = TLS_TOOLS.filter((t) => options.tools === null || options.tools.includes(t.tool.id));
  for (const reason of [missingPrograms(['fio'], 'fio'), missingPrograms(['psktool'], 'gnutls-bin'), missingPrograms(['cc'], 'gcc'), ...tools.map((t) => t.tool.unavailable())]) {
    if (reason) throw new Error(reason);
  }
  const jobs = buildJobs({ size: options.size, stride: MIN_STRIDE, quick: options.quick }).filter((j) => JOBS.includes(j.id));
  const loadBefore = loadavg();
  mkdirSync(options.dir, { recursive: true });
  const dir = mkdtempSync(join(options.dir, 'cowdisk-tls-'));
  try {
    const runCtx = { dir, base: join(dir, 'base.raw'), size: options.size };
    progress(`making a ${options.size / 2 ** 20} MiB random base in ${dir}`);
    makeRandomBase(runCtx.base, options.size);
    const keys = { dir: join(dir, 'psk'), file: join(dir, 'psk', 'keys.psk') };
    mkdirSync(keys.dir);
    runChecked('psktool', ['-u', IDENTITY, '-p', keys.file]);
    const shim = join(dir, 'tls-uri-shim.so');
    runChecked('cc', ['-shared', '-fPIC', '-O2', '-o', shim, SHIM, '-ldl']);

    const variants = tools.flatMap((t) => [false, true].map((secure) => ({ tool: t.tool, addTls: t.tls, tls: secure })));
    /** @type {TlsResult['results']} */
    const results = [];
    for (const v of variants) for (const job of jobs) results.push({ tool: v.tool.id, job: job.id, tls: v.tls, reps: [], median: /** @type {any} */ (null) });
    let seq = 0;
    for (let rep = 0; rep < options.reps; rep++) {
      for (const job of jobs) {
        for (const v of rotate(variants, rep)) {
          options.signal?.throwIfAborted();
          const jobDir = join(dir, `t${++seq}`);
          mkdirSync(jobDir);
          try {
            const plain = await v.tool.fresh(runCtx, jobDir);
            const socket = join(jobDir, 'nbd.sock');
            const server = await startServer(v.tls ? v.addTls(plain, keys) : plain, socket, jobDir);
            const uri = v.tls ? `nbds+unix://${IDENTITY}@/?socket=${socket}&tls-psk-file=${keys.file}` : server.uri;
            const env = v.tls ? { LD_PRELOAD: shim } : undefined;
            try {
              await runFio(warmupPass(options), uri, join(jobDir, 'warm-up.json'), env);
              if (options.waitIdle > 0) await waitForIdle(options.waitIdle);
              warmPageCache([runCtx.base]);
              const before = sampleCpu(server.pid);
              const cpuBefore = cpuSeconds(server.pid);
              const m = await runFio(job.measure, uri, join(jobDir, 'fio.json'), env);
              const cpuAfter = cpuSeconds(server.pid);
              if (cpuBefore === null || cpuAfter === null) throw new Error(`the server (PID ${server.pid}) exited during ${job.id}`);
              const sample = { ...m, foreignCores: foreignCores(before, sampleCpu(server.pid)), cpuUsPerIo: ((cpuAfter - cpuBefore) * 1e6) / m.ios };
              const row = /** @type {TlsResult['results'][number]} */ (results.find((r) => r.tool === v.tool.id && r.job === job.id && r.tls === v.tls));
              row.reps.push(sample);
              const rate = job.rate === 'iops' ? `${Math.round(m.iops)} IOPS` : `${m.mibps.toFixed(0)} MiB/s`;
              progress(`rep ${rep + 1}/${options.reps}  ${job.id.padEnd(14)} ${v.tool.id.padEnd(15)} ${v.tls ? 'TLS  ' : 'plain'}  ${rate}  (others used ${sample.foreignCores.toFixed(2)} cores)`);
            } finally {
              await server.stop();
            }
          } finally {
            rmSync(jobDir, { recursive: true, force: true });
            // The warm-up's writes must not be written back under the next measurement.
            spawnSync('sync', ['--file-system', dir], { stdio: 'ignore', timeout: 120_000 });
          }
        }
      }
    }
    for (const row of results) row.median = median(row.reps);
    return {
      date: new Date().toISOString(),
      machine: { cores: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', kernel: release(), node: process.version, fio: firstLine('fio', ['--version']), loadBefore, loadAfter: loadavg() },
      settings: { reps: options.reps, quick: options.quick, size: options.size },
      tools: tools.map((t) => ({ id: t.tool.id, label: t.tool.label, version: t.tool.version() })),
      jobs: jobs.map((j) => ({ id: j.id, title: j.title, short: j.short, rate: j.rate })),
      results,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A tool's median throughput on a job, plaintext or TLS, and TLS over plaintext.
 * @param {TlsResult} result
 * @param {string} tool
 * @param {string} job
 */
export function tlsRatio(result, tool, job) {
  const rate = result.jobs.find((j) => j.id === job)?.rate === 'iops' ? 'iops' : 'mibps';
  const get = (/** @type {boolean} */ tls) => /** @type {TlsResult['results'][number]} */ (result.results.find((r) => r.tool === tool && r.job === job && r.tls === tls)).median[rate];
  return { plain: get(false), tls: get(true), ratio: get(true) / get(false) };
}

/**
 * A tool's server CPU per request on one job, in plaintext and over TLS (medians), µs.
 * @param {TlsResult} result
 * @param {string} tool
 * @param {string} job
 */
export function tlsCpu(result, tool, job) {
  const get = (/** @type {boolean} */ tls) => /** @type {TlsResult['results'][number]} */ (result.results.find((r) => r.tool === tool && r.job === job && r.tls === tls)).median.cpuUsPerIo;
  return { plain: get(false), tls: get(true) };
}

/**
 * Issue 14's target, per job: cowdisk's TLS/plaintext ratio at least qemu-nbd's.
 * @param {TlsResult} result
 */
export function tlsTargets(result) {
  const has = (/** @type {string} */ id) => result.tools.some((t) => t.id === id);
  if (!has('cowdisk') || !has('qemu-qcow2-64k')) return [];
  return result.jobs.map((j) => {
    const cowdisk = tlsRatio(result, 'cowdisk', j.id).ratio;
    const qemu = tlsRatio(result, 'qemu-qcow2-64k', j.id).ratio;
    return { job: j.id, cowdisk, qemu, met: cowdisk >= qemu };
  });
}

/**
 * @param {TlsResult} result
 * @param {string} command
 */
export function renderTls(result, command) {
  const fmt = (/** @type {number} */ v, /** @type {'iops' | 'mibps'} */ rate) => (rate === 'iops' ? `${Math.round(v).toLocaleString('en-US')} IOPS` : `${v.toFixed(0)} MiB/s`);
  const others = result.results.flatMap((r) => r.reps.map((m) => m.foreignCores)).sort((a, b) => a - b);
  const lines = [
    `# TLS-PSK against plaintext: ${result.date}, ${result.settings.reps} repetition(s), medians, a ${result.settings.size / 2 ** 20} MiB base`,
    '',
    `\`${command}\` on ${result.machine.cores} cores (${result.machine.cpu}), Linux ${result.machine.kernel}, Node ${result.machine.node}, ${result.machine.fio}.`,
    `Load average before ${result.machine.loadBefore.map((l) => l.toFixed(2)).join(' ')}, after ${result.machine.loadAfter.map((l) => l.toFixed(2)).join(' ')}; other processes used ${others[Math.floor(others.length / 2)].toFixed(2)} cores in the median measurement, ${others[others.length - 1].toFixed(2)} at most.`,
    '',
    `| tool | ${result.jobs.map((j) => `${j.short}: plaintext | TLS-PSK | TLS/plaintext`).join(' | ')} |`,
    `|---|${result.jobs.map(() => '--:|--:|--:|').join('')}`,
  ];
  for (const t of result.tools) {
    const cells = result.jobs.map((j) => {
      const r = tlsRatio(result, t.id, j.id);
      return `${fmt(r.plain, j.rate)} | ${fmt(r.tls, j.rate)} | ${r.ratio.toFixed(2)}×`;
    });
    lines.push(`| ${t.label} | ${cells.join(' | ')} |`);
  }
  lines.push(
    '',
    "The server's CPU time (user + system, every thread) per request, µs:",
    '',
    `| tool | ${result.jobs.map((j) => `${j.short}: plaintext | TLS-PSK | TLS adds`).join(' | ')} |`,
    `|---|${result.jobs.map(() => '--:|--:|--:|').join('')}`,
  );
  for (const t of result.tools) {
    const cells = result.jobs.map((j) => {
      const c = tlsCpu(result, t.id, j.id);
      return `${c.plain.toFixed(1)} | ${c.tls.toFixed(1)} | ${(c.tls - c.plain).toFixed(1)}`;
    });
    lines.push(`| ${t.label} | ${cells.join(' | ')} |`);
  }
  const targets = tlsTargets(result);
  if (targets.length) {
    lines.push('', "Issue 14's target, cowdisk's TLS/plaintext ratio at least qemu-nbd's in the same run:");
    for (const t of targets) lines.push(`- ${t.job}: cowdisk ${t.cowdisk.toFixed(2)}×, qemu-nbd ${t.qemu.toFixed(2)}×: ${t.met ? 'met' : 'missed'}`);
  }
  lines.push('', `Versions: ${result.tools.map((t) => `${t.label}: ${t.version}`).join('; ')}.`, '');
  return lines.join('\n');
}

/**
 * `node bench/compare.mjs --tls`: runs the comparison and prints it (JSON with `json`).
 * @param {TlsOptions & { json: boolean }} options
 * @param {(line: string) => void} progress
 */
export async function printTlsComparison(options, progress) {
  const result = await compareTls(options, progress);
  const command = ['node bench/compare.mjs', ...process.argv.slice(2)].join(' ');
  process.stdout.write(options.json ? `${JSON.stringify({ command, ...result, targets: tlsTargets(result) }, null, 2)}\n` : renderTls(result, command));
}
