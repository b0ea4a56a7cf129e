// @ts-check
/**
 * One comparison run: the shared base once, then for each repetition, each job, each tool (in an
 * order that rotates with the repetition, so no tool always runs first after a sync or last on
 * a warm cache): a fresh image in its own directory, the tool's server on a Unix socket there,
 * fio, the server stopped by its PID, the directory removed, and the run's file system synced
 * (syncfs, not sync(2): a global sync waits on every mount, and a hung FUSE mount from some other
 * test would hang it forever) so that the job's write-back cannot run under the next measurement. The reported figure for each metric is the
 * median over the repetitions.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { cpus, release, totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import { baseIdentity, makeRandomBase, warmPageCache } from './base.mjs';
import { CHAIN_DEPTHS, buildChains, chainUnavailable, cloneAndServe, cowdiskNoPollTool, cowdiskTool } from './cowdisk.mjs';
import { mergeBins, runFio } from './fio.mjs';
import { foreignCores, sampleCpu, waitForIdle } from './interference.mjs';
import { MIN_STRIDE, buildJobs, chainReadPass, measuredSize, warmupPass } from './jobs.mjs';
import { PEERS } from './peers.mjs';
import { cpuSeconds } from './server-cpu.mjs';
import { measureSealed, sealedUnavailable } from './sealed.mjs';
import { startServer } from './server.mjs';
import { firstLine } from './tool.mjs';

/** @typedef {import('./tool.mjs').Tool} Tool */
/** @typedef {import('./tool.mjs').RunContext} RunContext */
/** @typedef {import('./fio.mjs').Measurement} Measurement */
/**
 * @typedef {Measurement & { foreignCores: number, cpuUsPerIo: number, warm?: Sample }} Sample  a measurement, how busy
 * others kept the machine meanwhile, the server's CPU time per request, and (cold-start job) the warm pass after it
 */
/** @typedef {import('./fio.mjs').FioPass} FioPass */
/** @typedef {import('./jobs.mjs').Job} Job */
/** @typedef {import('./server.mjs').RunningServer} RunningServer */
/** @typedef {import('./server.mjs').Launch} Launch */

/** Every tool, cowdisk first: the order of the table's rows. */
export const TOOLS = [cowdiskTool, cowdiskNoPollTool, ...PEERS];

/**
 * @typedef {object} Options
 * @property {number} reps
 * @property {boolean} quick
 * @property {number} size  bytes of the base
 * @property {string[] | null} tools  ids; null: every tool (cowdisk skipped, with the reason, if its verbs are missing)
 * @property {string[] | null} jobs  ids; null: every job
 * @property {boolean} chain  run the chain-depth variant
 * @property {boolean} sealed  run the sealed-import variant (sealed.mjs)
 * @property {string} dir  parent of the run's temporary directory
 * @property {number} waitIdle  seconds each measurement may wait for other processes to go quiet
 * @property {AbortSignal} [signal]  aborts the run between measurements (Ctrl-C)
 */

/**
 * @typedef {object} Result
 * @property {string} date
 * @property {{ cores: number, cpu: string, kernel: string, memoryGiB: number, node: string, fio: string }} machine
 * @property {{ reps: number, quick: boolean, size: number, measured: number, stride: number }} settings
 * @property {{ id: string, label: string, role: string, version: string }[]} tools
 * @property {{ id: string, label: string, reason: string }[]} skipped
 * @property {{ id: string, title: string, short: string, rate: 'iops' | 'mibps', headline: Job['headline'] }[]} jobs
 * @property {{ tool: string, job: string, reps: Sample[], median: Sample }[]} results
 * @property {{ depth: number, reps: Sample[], median: Sample }[] | { skipped: string }} chain
 * @property {import('./sealed.mjs').SealedResult | { skipped: string }} sealed
 */

export const defaultDir = tmpdir();

/**
 * @param {Options} options
 * @param {(line: string) => void} progress
 * @returns {Promise<Result>}
 */
export async function compare(options, progress) {
  const fioMissing = spawnSync('fio', ['--version']).status !== 0;
  if (fioMissing) throw new Error('fio not found: install the Debian package fio (npm run setup does)');
  const { tools, skipped } = selectTools(options.tools);
  const stride = Math.max(MIN_STRIDE, ...tools.map((t) => t.unit));
  const warmup = warmupPass(options);
  const jobs = buildJobs({ size: options.size, stride, quick: options.quick }).filter(
    (j) => options.jobs === null || options.jobs.includes(j.id),
  );

  mkdirSync(options.dir, { recursive: true });
  const dir = mkdtempSync(join(options.dir, 'cowdisk-compare-'));
  try {
    const runCtx = { dir, base: join(dir, 'base.raw'), size: options.size };
    progress(`making a ${options.size / 2 ** 20} MiB random base in ${dir}`);
    makeRandomBase(runCtx.base, options.size);
    for (const tool of tools) await tool.prepare?.(runCtx);
    const baseBefore = baseIdentity(runCtx.base);

    /** @type {Result['results']} */
    const results = [];
    for (const tool of tools) for (const job of jobs) results.push({ tool: tool.id, job: job.id, reps: [], median: /** @type {any} */ (null) });
    let seq = 0;
    for (let rep = 0; rep < options.reps; rep++) {
      for (const job of jobs) {
        for (const tool of rotate(tools, rep)) {
          options.signal?.throwIfAborted();
          const m = await measure(dir, `${++seq}`, (jobDir) => tool.fresh(runCtx, jobDir), job, warmup, options.waitIdle, filesIn(dir));
          const row = /** @type {Result['results'][number]} */ (results.find((r) => r.tool === tool.id && r.job === job.id));
          row.reps.push(m);
          progress(`rep ${rep + 1}/${options.reps}  ${job.id.padEnd(15)} ${tool.id.padEnd(19)} ${describe(m, job.rate)}`);
        }
      }
    }
    for (const row of results) row.median = median(row.reps);

    const chain = !options.chain
      ? { skipped: 'not requested (--no-chain)' }
      : !tools.includes(cowdiskTool)
        ? { skipped: 'cowdisk is not among the tools measured' }
        : await measureChain(runCtx, options, progress);
    const sealedWhy = !options.sealed ? 'not requested (--no-sealed)' : !tools.includes(cowdiskTool) ? 'cowdisk is not among the tools measured' : (chainUnavailable() ?? sealedUnavailable());
    const sealed = sealedWhy ? { skipped: sealedWhy } : await measureSealed(runCtx, options, mkdtempSync(join(dir, 'sealed-')), progress);
    if (baseIdentity(runCtx.base) !== baseBefore) throw new Error('the shared base changed during the run: a tool wrote to it');
    return {
      date: new Date().toISOString(),
      machine: machine(),
      settings: { reps: options.reps, quick: options.quick, size: options.size, measured: measuredSize(options.size), stride },
      tools: tools.map((t) => ({ id: t.id, label: t.label, role: t.role, version: t.version() })),
      skipped,
      jobs: jobs.map((j) => ({ id: j.id, title: j.title, short: j.short, rate: j.rate, headline: j.headline })),
      results,
      chain,
      sealed,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * One measurement on a fresh image: serve it, run the unmeasured passes (the warm-up, unless the
 * job is the cold start; its preparation), then the measured one, and for the cold start the
 * warm-up and the warm pass after it; stop the server, remove everything.
 * @param {string} runDir
 * @param {string} name  the job directory's name (kept short: the socket path is bounded)
 * @param {(jobDir: string) => Promise<Launch> | Launch} fresh
 * @param {Pick<Job, 'cold' | 'prepare' | 'measure' | 'reference'>} job
 * @param {FioPass} warmup
 * @param {number} waitIdle  see Options
 * @param {string[]} shared  the files the image reads through to, kept in the page cache
 * @returns {Promise<Sample>}
 */
export async function measure(runDir, name, fresh, job, warmup, waitIdle, shared) {
  const jobDir = join(runDir, name);
  mkdirSync(jobDir);
  try {
    const launch = await fresh(jobDir);
    const server = await startServer(launch, join(jobDir, 'nbd.sock'), jobDir);
    try {
      /** @param {FioPass} p */
      const unmeasured = (p) => runFio(p, server.uri, join(jobDir, `${p.name}.json`));
      if (!job.cold) await unmeasured(warmup);
      if (job.prepare) await unmeasured(job.prepare);
      const m = await measuredPass(server, job.measure, jobDir, waitIdle, shared);
      if (!job.reference) return m;
      await unmeasured(warmup);
      return { ...m, warm: await measuredPass(server, job.reference, jobDir, waitIdle, shared) };
    } finally {
      await server.stop();
    }
  } finally {
    rmSync(jobDir, { recursive: true, force: true });
    await syncFileSystem(runDir);
  }
}

/**
 * A measured pass: once the machine is quiet (up to waitIdle) and the shared files are in the
 * page cache, fio's figures, how much other work ran meanwhile, and the server's CPU time.
 * @param {RunningServer} server
 * @param {FioPass} pass
 * @param {string} jobDir
 * @param {number} waitIdle
 * @param {string[]} shared
 * @returns {Promise<Sample>}
 */
async function measuredPass(server, pass, jobDir, waitIdle, shared) {
  if (waitIdle > 0) await waitForIdle(waitIdle);
  if (pass.settleMs) await new Promise((r) => setTimeout(r, pass.settleMs));
  warmPageCache(shared);
  const before = sampleCpu(server.pid);
  const cpuBefore = cpuSeconds(server.pid);
  const m = await runFio(pass, server.uri, join(jobDir, `${pass.name}.json`));
  const cpuAfter = cpuSeconds(server.pid);
  if (cpuBefore === null || cpuAfter === null) throw new Error(`the server (PID ${server.pid}) exited during ${pass.name}`);
  return { ...m, foreignCores: foreignCores(before, sampleCpu(server.pid)), cpuUsPerIo: ((cpuAfter - cpuBefore) * 1e6) / m.ios };
}

/**
 * The regular files directly in dir: the shared base and the floor's copy in the run's
 * directory, the sealed layers in the chain's.
 * @param {string} dir
 */
function filesIn(dir) {
  return readdirSync(dir, { withFileTypes: true }).filter((e) => e.isFile()).map((e) => join(dir, e.name));
}

/** A sync that hangs (a storage fault, not ours to fix) gets reported, not waited for forever. */
const SYNC_TIMEOUT_MS = 120_000;

/** @param {string} dir  any path on the file system to sync */
async function syncFileSystem(dir) {
  const child = spawn('sync', ['--file-system', dir], { stdio: 'ignore' });
  /** @type {NodeJS.Timeout | undefined} */
  let timer;
  const finished = await Promise.race([
    new Promise((resolve) => child.on('exit', (code) => resolve(code === 0))),
    new Promise((resolve) => (timer = setTimeout(() => resolve(false), SYNC_TIMEOUT_MS))),
  ]);
  clearTimeout(timer);
  if (!finished) {
    child.unref();
    throw new Error(`sync --file-system ${dir} failed or did not finish in ${SYNC_TIMEOUT_MS / 1000} s: is the disk under ${dir} healthy?`);
  }
}

/**
 * @param {RunContext} runCtx
 * @param {Options} options
 * @param {(line: string) => void} progress
 * @returns {Promise<Result['chain']>}
 */
async function measureChain(runCtx, options, progress) {
  const reason = chainUnavailable();
  if (reason) {
    progress(`chain depth: not measured: ${reason}`);
    return { skipped: reason };
  }
  const chainDir = join(runCtx.dir, 'chain');
  mkdirSync(chainDir);
  const parents = await buildChains(runCtx, chainDir, progress);
  const pass = chainReadPass(options);
  const rows = CHAIN_DEPTHS.map((depth) => ({ depth, reps: /** @type {Sample[]} */ ([]), median: /** @type {any} */ (null) }));
  for (let rep = 0; rep < options.reps; rep++) {
    for (const row of rotate(rows, rep)) {
      options.signal?.throwIfAborted();
      const parent = /** @type {string} */ (parents.get(row.depth));
      const m = await measure(runCtx.dir, `chain-${row.depth}`, (jobDir) => cloneAndServe(parent, jobDir), { measure: pass }, warmupPass(options), options.waitIdle, filesIn(chainDir));
      row.reps.push(m);
      progress(`rep ${rep + 1}/${options.reps}  chain depth ${String(row.depth).padEnd(3)} ${describe(m, 'iops')}`);
    }
  }
  for (const row of rows) row.median = median(row.reps);
  return rows;
}

/**
 * @param {string[] | null} ids
 * @returns {{ tools: Tool[], skipped: Result['skipped'] }}
 */
function selectTools(ids) {
  const unknown = (ids ?? []).filter((id) => !TOOLS.some((t) => t.id === id));
  if (unknown.length) throw new Error(`unknown tool ${unknown.join(', ')}; the tools are ${TOOLS.map((t) => t.id).join(', ')}`);
  const wanted = ids === null ? TOOLS : TOOLS.filter((t) => ids.includes(t.id));
  /** @type {Tool[]} */
  const tools = [];
  /** @type {Result['skipped']} */
  const skipped = [];
  for (const tool of wanted) {
    const reason = tool.unavailable();
    if (reason === null) tools.push(tool);
    // cowdisk's own verbs are still being written: a full run reports it missing, and why,
    // rather than refusing to measure the peers. Asked for by name, it must be there.
    else if (ids === null && (tool === cowdiskTool || tool === cowdiskNoPollTool)) skipped.push({ id: tool.id, label: tool.label, reason });
    else throw new Error(`${tool.label}: ${reason}`);
  }
  if (tools.length === 0) throw new Error('no tool to measure');
  return { tools, skipped };
}

/**
 * @template T
 * @param {T[]} items
 * @param {number} by
 */
export function rotate(items, by) {
  const k = by % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

/**
 * Each metric's median over the repetitions (the middle pair's mean for an even count); the
 * latency distribution is every repetition's pooled.
 * @param {Sample[]} reps
 * @returns {Sample}
 */
export function median(reps) {
  /** @param {(m: Sample) => number} get */
  const mid = (get) => {
    const v = reps.map(get).sort((a, b) => a - b);
    const h = Math.floor(v.length / 2);
    return v.length % 2 ? v[h] : (v[h - 1] + v[h]) / 2;
  };
  const warm = reps.flatMap((m) => (m.warm ? [m.warm] : []));
  return {
    p50Us: mid((m) => m.p50Us),
    p99Us: mid((m) => m.p99Us),
    clatP50Us: mid((m) => m.clatP50Us),
    iops: mid((m) => m.iops),
    mibps: mid((m) => m.mibps),
    ios: mid((m) => m.ios),
    foreignCores: mid((m) => m.foreignCores),
    cpuUsPerIo: mid((m) => m.cpuUsPerIo),
    latNs: mergeBins(reps.map((m) => m.latNs)),
    ...(warm.length === reps.length && warm.length > 0 ? { warm: median(warm) } : {}),
  };
}

/** @param {Sample} m @param {'iops' | 'mibps'} rate */
function describe(m, rate) {
  const r = rate === 'iops' ? `${Math.round(m.iops)} IOPS` : `${m.mibps.toFixed(0)} MiB/s`;
  const warm = m.warm ? `  warm p50 ${m.warm.p50Us.toFixed(1)} µs` : '';
  return `p50 ${m.p50Us.toFixed(1)} µs  p99 ${m.p99Us.toFixed(1)} µs  ${r}  CPU ${m.cpuUsPerIo.toFixed(1)} µs/req${warm}  (others used ${m.foreignCores.toFixed(2)} cores)`;
}

function machine() {
  return {
    cores: cpus().length,
    cpu: cpus()[0]?.model ?? 'unknown',
    kernel: release(),
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    fio: firstLine('fio', ['--version']),
  };
}
