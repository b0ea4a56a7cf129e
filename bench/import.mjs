#!/usr/bin/env node
// @ts-check
/**
 * Import speed, in one run: `cowdisk import` against `qemu-img convert -O qcow2 -c` (qcow2's
 * compressed clusters, zlib) and `qemu-img convert -O qcow2` (no compression), on the same raw
 * files: a mixed one (3/4 random, 1/4 zeros) and a compressible one (a real tree's files; see
 * bench/data.mjs), and, for what cowdisk did before format version 2, its version 1 writer
 * (bench/v1-layer.mjs). Issue 11's targets: cowdisk at least 2x qemu-img -c's throughput on both
 * files, and at least 450 MiB/s on the mixed one.
 *
 * Each measurement starts with the raw file in the page cache and a fresh output, and runs until
 * the output is durable: the tool's own time, then an fsync of what it wrote (cowdisk syncs
 * before it publishes a layer; qemu-img leaves its writes in the page cache). Tools in rotating
 * order, medians of --reps. CPU is the tool's user + system time; "others" is how much of the
 * machine everything else used meanwhile (bench/compare/interference.mjs).
 *
 *   npm run build && node bench/import.mjs [--size 1G] [--reps 3] [--dir DIR] [--json]
 */
import { spawnSync } from 'node:child_process';
import { closeSync, fsyncSync, mkdtempSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { warmPageCache } from './compare/base.mjs';
import { foreignCores, sampleCpu } from './compare/interference.mjs';
import { makeCompressibleRaw, makeMixedRaw, parseSize } from './data.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const MiB = 2 ** 20;

/** @typedef {{ id: string, label: string, command: (raw: string, out: string) => string[] }} ImportTool */

/** @type {ImportTool[]} */
const TOOLS = [
  { id: 'cowdisk', label: 'cowdisk import (format v2)', command: (raw, out) => [process.execPath, join(ROOT, 'bin', 'cowdisk'), 'import', raw, out] },
  { id: 'cowdisk-v1', label: 'cowdisk v1 writer (before v2)', command: (raw, out) => [process.execPath, join(ROOT, 'bench', 'v1-layer.mjs'), raw, out] },
  { id: 'qemu-img-c', label: 'qemu-img convert -O qcow2 -c', command: (raw, out) => ['qemu-img', 'convert', '-O', 'qcow2', '-c', raw, out] },
  { id: 'qemu-img', label: 'qemu-img convert -O qcow2', command: (raw, out) => ['qemu-img', 'convert', '-O', 'qcow2', raw, out] },
];

/**
 * One import: the tool under /usr/bin/time, then the output synced.
 * @param {ImportTool} tool @param {string} raw @param {string} out
 */
function measure(tool, raw, out) {
  rmSync(out, { force: true });
  warmPageCache([raw]);
  const times = `${out}.time`;
  const [command, ...args] = tool.command(raw, out);
  const before = sampleCpu();
  const start = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%U %S %M', '-o', times, command, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${tool.label} failed: ${r.stderr || r.error}`);
  const fd = openSync(out, 'r');
  fsyncSync(fd);
  closeSync(fd);
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const [user, system, peakKiB] = readFileSync(times, 'utf8').trim().split('\n').pop()?.split(' ').map(Number) ?? [];
  const others = foreignCores(before, sampleCpu());
  const result = { seconds, mibps: statSync(raw).size / MiB / seconds, cpuSeconds: user + system, peakMiB: peakKiB / 1024, outMiB: statSync(out).size / MiB, others };
  rmSync(times, { force: true });
  rmSync(out, { force: true });
  return result;
}

async function main() {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '1G' },
      reps: { type: 'string', default: '3' },
      dir: { type: 'string', default: tmpdir() },
      json: { type: 'boolean', default: false },
    },
  });
  const size = parseSize(values.size);
  const reps = Number(values.reps);
  for (const [program, pkg] of [['qemu-img', 'qemu-utils'], ['/usr/bin/time', 'time']]) {
    if (spawnSync(program, ['--version']).error) throw new Error(`${program} not found: install the Debian package ${pkg} (npm run setup does)`);
  }
  const dir = mkdtempSync(join(values.dir ?? tmpdir(), 'cowdisk-import-'));
  const log = (/** @type {string} */ line) => process.stderr.write(`import: ${line}\n`);
  try {
    const files = { mixed: join(dir, 'mixed.raw'), compressible: join(dir, 'compressible.raw') };
    log(`making ${size / MiB} MiB raw files in ${dir}`);
    makeMixedRaw(files.mixed, size);
    makeCompressibleRaw(files.compressible, size);
    /** @type {Array<{ file: string, tool: string, reps: ReturnType<typeof measure>[] }>} */
    const rows = [];
    for (const file of Object.keys(files)) for (const tool of TOOLS) rows.push({ file, tool: tool.id, reps: [] });
    for (let rep = 0; rep < reps; rep++) {
      for (const [file, raw] of Object.entries(files)) {
        for (const tool of [...TOOLS.slice(rep % TOOLS.length), ...TOOLS.slice(0, rep % TOOLS.length)]) {
          const x = measure(tool, raw, join(dir, `out.${tool.id}`));
          rows.find((r) => r.file === file && r.tool === tool.id)?.reps.push(x);
          log(`rep ${rep + 1}/${reps}  ${file.padEnd(12)} ${tool.id.padEnd(11)} ${x.mibps.toFixed(0)} MiB/s, ${x.cpuSeconds.toFixed(2)} s CPU, others used ${x.others.toFixed(2)} cores`);
        }
      }
    }
    const result = rows.map((r) => ({ ...r, median: medianOf(r.reps) }));
    const command = ['node bench/import.mjs', ...process.argv.slice(2)].join(' ');
    if (values.json) process.stdout.write(JSON.stringify({ command, date: new Date().toISOString(), size, reps, cores: cpus().length, results: result, targets: targets(result) }, null, 2) + '\n');
    else process.stdout.write(render(result, command, size, reps));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Each figure's median over the repetitions (the middle pair's mean for an even count). */
/** @param {ReturnType<typeof measure>[]} reps */
function medianOf(reps) {
  /** @param {(x: ReturnType<typeof measure>) => number} get */
  const mid = (get) => {
    const v = reps.map(get).sort((a, b) => a - b);
    const h = Math.floor(v.length / 2);
    return v.length % 2 ? v[h] : (v[h - 1] + v[h]) / 2;
  };
  return { seconds: mid((x) => x.seconds), mibps: mid((x) => x.mibps), cpuSeconds: mid((x) => x.cpuSeconds), peakMiB: mid((x) => x.peakMiB), outMiB: mid((x) => x.outMiB), others: mid((x) => x.others) };
}

/** @param {Array<{ file: string, tool: string, median: ReturnType<typeof medianOf> }>} result */
function targets(result) {
  const get = (/** @type {string} */ file, /** @type {string} */ tool) => result.find((r) => r.file === file && r.tool === tool)?.median.mibps ?? NaN;
  return [
    ...['mixed', 'compressible'].map((file) => ({ name: `${file}: cowdisk / qemu-img -c throughput`, want: '>= 2', value: get(file, 'cowdisk') / get(file, 'qemu-img-c') })),
    { name: 'mixed: cowdisk MiB/s', want: '>= 450', value: get('mixed', 'cowdisk') },
  ].map((t) => ({ ...t, met: t.value >= Number(t.want.slice(3)) }));
}

/**
 * @param {Array<{ file: string, tool: string, median: ReturnType<typeof medianOf> }>} result
 * @param {string} command @param {number} size @param {number} reps
 */
function render(result, command, size, reps) {
  const out = [`# bench/import, ${new Date().toISOString().slice(0, 10)}`, '', `Command: \`${command}\`: ${size / MiB} MiB raw files, medians of ${reps}, ${cpus().length} cores (${cpus()[0]?.model}).`, ''];
  out.push('| raw file | tool | MiB/s | s | CPU s | peak RSS MiB | output MiB | others used (cores) |', '|---|---|--:|--:|--:|--:|--:|--:|');
  for (const r of result) {
    const x = r.median;
    const label = TOOLS.find((t) => t.id === r.tool)?.label;
    out.push(`| ${r.file} | ${label} | ${x.mibps.toFixed(0)} | ${x.seconds.toFixed(2)} | ${x.cpuSeconds.toFixed(2)} | ${x.peakMiB.toFixed(0)} | ${x.outMiB.toFixed(0)} | ${x.others.toFixed(2)} |`);
  }
  out.push('', '| target (issue 11) | want | measured |', '|---|---|---|');
  for (const t of targets(result)) out.push(`| ${t.name} | ${t.want} | ${t.value.toFixed(2)} ${t.met ? 'met' : 'MISSED'} |`);
  return out.join('\n') + '\n';
}

main().catch((err) => {
  process.stderr.write(`import: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
