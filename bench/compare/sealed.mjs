// @ts-check
/**
 * The sealed-import variant (issue 11): the everyday path is `cowdisk import` then `cowdisk
 * clone`, so every clone reads its base through a sealed, compressed layer. Measured on a
 * compressible base (bench/data.mjs: a real tree's files, the same bytes for every tool):
 *   - cowdisk, a clone of the base imported (format version 2, 4 KiB frames);
 *   - cowdisk, a clone of the base written by the version 1 writer (whole 64 KiB lz4 blocks):
 *     what version 2 changed;
 *   - cowdisk, a clone of the same bytes as a raw base: the reference the sealed clone is held
 *     to (issue 11: at least 0.9x its random-read IOPS);
 *   - qemu-nbd, a qcow2 overlay over `qemu-img convert -O qcow2 -c` of the base (qcow2's
 *     compressed clusters, zlib: the peer's sealed compressed base), and over the raw base.
 * The jobs are jobs.mjs's random 4 KiB reads at QD16 and sequential 1 MiB reads, each on a fresh
 * clone or overlay, tools in rotating order, medians of the run's repetitions; before each
 * measurement the files the tool reads are read through (bench/compare/base.mjs).
 */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { makeCompressibleRaw } from '../data.mjs';
import { cloneAndServe, cowdisk } from './cowdisk.mjs';
import { buildJobs, warmupPass } from './jobs.mjs';
import { measure, median, rotate } from './run.mjs';
import { missingPrograms, runChecked } from './tool.mjs';

/** @typedef {import('./run.mjs').Sample} Sample */
/** @typedef {import('./server.mjs').Launch} Launch */
/** @typedef {import('./tool.mjs').RunContext} RunContext */

/**
 * @typedef {object} SealedResult
 * @property {{ bytes: number, files: Record<string, number> }} base  the base's size and each sealed form's file size
 * @property {{ id: string, label: string }[]} tools
 * @property {{ id: string, title: string, rate: 'iops' | 'mibps' }[]} jobs
 * @property {{ tool: string, job: string, reps: Sample[], median: Sample }[]} results
 */

export const SEALED_JOBS = ['randread-qd16', 'seqread-1m'];
const REFERENCE = 'cowdisk-raw';

/**
 * @param {string} dir  where the variant's files go
 * @returns {{ id: string, label: string, reads: string, fresh: (jobDir: string) => Launch }[]}
 */
function tools(dir) {
  const file = (/** @type {string} */ name) => join(dir, name);
  /** @param {string} backing @param {'raw' | 'qcow2'} format @param {string} jobDir */
  const qemu = (backing, format, jobDir) => {
    const overlay = join(jobDir, 'overlay.qcow2');
    runChecked('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', backing, '-F', format, '-o', 'cluster_size=64k', overlay]);
    return { command: 'qemu-nbd', args: ['--format=qcow2', '--persistent', '--cache=writeback', '--aio=threads', `--socket=${join(jobDir, 'nbd.sock')}`, overlay] };
  };
  return [
    { id: 'cowdisk-sealed', label: 'cowdisk, clone of the import (v2)', reads: file('base.snap'), fresh: (d) => cloneAndServe(file('base.snap'), d) },
    { id: 'cowdisk-sealed-v1', label: 'cowdisk, clone of a v1 import', reads: file('base-v1.snap'), fresh: (d) => cloneAndServe(file('base-v1.snap'), d) },
    { id: REFERENCE, label: 'cowdisk, clone of the raw base', reads: file('base.raw'), fresh: (d) => cloneAndServe(file('base.raw'), d) },
    { id: 'qemu-qcow2-c', label: 'qemu-nbd, qcow2 over convert -c', reads: file('base.qcow2'), fresh: (d) => qemu(file('base.qcow2'), 'qcow2', d) },
    { id: 'qemu-qcow2-raw', label: 'qemu-nbd, qcow2 over the raw base', reads: file('base.raw'), fresh: (d) => qemu(file('base.raw'), 'raw', d) },
  ];
}

/** Why the variant cannot run here, or null. */
export function sealedUnavailable() {
  return missingPrograms(['qemu-img', 'qemu-nbd'], 'qemu-utils');
}

/**
 * Makes the base and its sealed forms in dir, then measures every tool on every job.
 * @param {RunContext} runCtx
 * @param {{ reps: number, quick: boolean, waitIdle: number, signal?: AbortSignal }} options
 * @param {string} dir
 * @param {(line: string) => void} progress
 * @returns {Promise<SealedResult>}
 */
export async function measureSealed(runCtx, options, dir, progress) {
  progress(`sealed: making a ${runCtx.size / 2 ** 20} MiB compressible base and its sealed forms`);
  const base = join(dir, 'base.raw');
  makeCompressibleRaw(base, runCtx.size);
  cowdisk(['import', base, join(dir, 'base.snap')]);
  runChecked(process.execPath, [join(import.meta.dirname, '..', 'v1-layer.mjs'), base, join(dir, 'base-v1.snap')]);
  runChecked('qemu-img', ['convert', '-O', 'qcow2', '-c', base, join(dir, 'base.qcow2')]);
  const all = tools(dir);
  const jobs = buildJobs({ size: runCtx.size, stride: 64 * 1024, quick: options.quick }).filter((j) => SEALED_JOBS.includes(j.id));
  /** @type {SealedResult['results']} */
  const results = [];
  for (const tool of all) for (const job of jobs) results.push({ tool: tool.id, job: job.id, reps: [], median: /** @type {any} */ (null) });
  for (let rep = 0; rep < options.reps; rep++) {
    for (const job of jobs) {
      for (const tool of rotate(all, rep)) {
        options.signal?.throwIfAborted();
        const m = await measure(runCtx.dir, `s-${tool.id}`, tool.fresh, { measure: job.measure }, warmupPass({ size: runCtx.size, quick: options.quick }), options.waitIdle, [tool.reads]);
        results.find((r) => r.tool === tool.id && r.job === job.id)?.reps.push(m);
        progress(`sealed rep ${rep + 1}/${options.reps}  ${job.id.padEnd(14)} ${tool.id.padEnd(18)} ${job.rate === 'iops' ? `${Math.round(m.iops)} IOPS` : `${m.mibps.toFixed(0)} MiB/s`}`);
      }
    }
  }
  for (const row of results) row.median = median(row.reps);
  return {
    base: { bytes: runCtx.size, files: Object.fromEntries(['base.snap', 'base-v1.snap', 'base.qcow2'].map((f) => [f, statSync(join(dir, f)).size])) },
    tools: all.map((t) => ({ id: t.id, label: t.label })),
    jobs: jobs.map((j) => ({ id: j.id, title: j.title, rate: j.rate })),
    results,
  };
}

/**
 * Issue 11's read targets: a sealed import against the same bytes as a raw base, and the chain
 * variant's 16-deep against 1-deep in IOPS and p50.
 * @param {SealedResult | { skipped: string }} sealed
 * @param {import('./run.mjs').Result['chain']} chain
 */
export function sealedTargets(sealed, chain) {
  const get = (/** @type {string} */ tool) => ('results' in sealed ? sealed.results.find((r) => r.tool === tool && r.job === 'randread-qd16')?.median : undefined);
  const depth = (/** @type {number} */ d) => (Array.isArray(chain) ? chain.find((c) => c.depth === d)?.median : undefined);
  /** @param {string} name @param {number | undefined} a @param {number | undefined} b @param {'<=' | '>='} op @param {number} bound */
  const target = (name, a, b, op, bound) => {
    const value = a === undefined || b === undefined ? null : a / b;
    return { name, want: `${op} ${bound.toFixed(2)}`, value, met: value === null ? null : op === '<=' ? value <= bound : value >= bound };
  };
  return [
    target('randread QD16 IOPS, clone of a sealed import / clone of the raw base', get('cowdisk-sealed')?.iops, get(REFERENCE)?.iops, '>=', 0.9),
    target('randread QD16 IOPS, 16-deep / 1-deep chain', depth(16)?.iops, depth(1)?.iops, '>=', 0.9),
    target('randread QD16 p50, 16-deep / 1-deep chain', depth(16)?.p50Us, depth(1)?.p50Us, '<=', 1.1),
  ];
}

/**
 * The variant's tables and issue 11's targets, as Markdown lines.
 * @param {SealedResult | { skipped: string }} sealed
 * @param {import('./run.mjs').Result['chain']} chain
 */
export function renderSealed(sealed, chain) {
  const out = ['', '## Reads through a clone of a sealed import of a compressible base', ''];
  if (!('results' in sealed)) {
    out.push(`Not measured: ${sealed.skipped}.`);
  } else {
    const mib = (/** @type {number} */ n) => `${(n / 2 ** 20).toFixed(0)} MiB`;
    const f = sealed.base.files;
    out.push(`Base: ${mib(sealed.base.bytes)} of a real tree's files; imported (v2) ${mib(f['base.snap'])}, v1 ${mib(f['base-v1.snap'])}, qcow2 -c ${mib(f['base.qcow2'])}.`);
    for (const job of sealed.jobs) {
      const rate = (/** @type {Sample} */ m) => (job.rate === 'iops' ? m.iops : m.mibps);
      const ref = sealed.results.find((r) => r.tool === REFERENCE && r.job === job.id)?.median;
      out.push('', `### ${job.title}`, '', `| tool | p50 µs | p99 µs | ${job.rate === 'iops' ? 'IOPS' : 'MiB/s'} | × raw-base clone |`, '|---|--:|--:|--:|--:|');
      for (const tool of sealed.tools) {
        const m = sealed.results.find((r) => r.tool === tool.id && r.job === job.id)?.median;
        if (!m) continue;
        out.push(`| ${tool.label} | ${m.p50Us.toFixed(1)} | ${m.p99Us.toFixed(1)} | ${Math.round(rate(m)).toLocaleString('en-US')} | ${ref ? `${(rate(m) / rate(ref)).toFixed(2)}×` : ''} |`);
      }
    }
  }
  out.push('', '## Targets for reads through sealed layers (issue 11)', '', '| target | want | measured |', '|---|---|---|');
  for (const t of sealedTargets(sealed, chain)) out.push(`| ${t.name} | ${t.want} | ${t.value === null ? 'not measured' : `${t.value.toFixed(3)}× ${t.met ? 'met' : 'MISSED'}`} |`);
  return out;
}
