#!/usr/bin/env node
// @ts-check
/**
 * What 4 KiB frames cost in size: the same raw disks imported as format version 2 (`cowdisk
 * import`) and as version 1 (bench/v1-layer.mjs, whole 64 KiB lz4 blocks), with qcow2's
 * compressed clusters (`qemu-img convert -O qcow2 -c`) beside them. Two disks: the compressible
 * base of bench/compare's sealed variant (bench/data.mjs) and an ext4 image of a real tree
 * (`mkfs.ext4 -d /usr/share`). Issue 11's target: version 2 at most 1.15x version 1 on both.
 *
 *   npm run build && node bench/sizes.mjs [--size 1G] [--tree /usr/share] [--dir DIR] [--json]
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { makeCompressibleRaw, parseSize } from './data.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const MiB = 2 ** 20;

/** @param {string} command @param {string[]} args */
function run(command, args) {
  const r = spawnSync(command, args, { encoding: 'utf8' });
  if (r.error) throw new Error(`${command} not found (${r.error.message}): npm run setup installs the Debian packages the benchmarks use`);
  if (r.status !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

/** Bytes of the tree's files, as du counts them. @param {string} tree */
function treeBytes(tree) {
  return Number(run('du', ['-sb', tree]).split('\t')[0]);
}

/** @param {string} raw @param {string} dir */
function sizes(raw, dir) {
  const out = { v2: join(dir, 'v2.snap'), v1: join(dir, 'v1.snap'), qcow2: join(dir, 'c.qcow2') };
  run(process.execPath, [join(ROOT, 'bin', 'cowdisk'), 'import', raw, out.v2]);
  run(process.execPath, [join(ROOT, 'bench', 'v1-layer.mjs'), raw, out.v1]);
  run('qemu-img', ['convert', '-O', 'qcow2', '-c', raw, out.qcow2]);
  const size = (/** @type {string} */ f) => statSync(f).size;
  const result = { raw: size(raw), allocated: statSync(raw).blocks * 512, v1: size(out.v1), v2: size(out.v2), qcow2c: size(out.qcow2), ratio: size(out.v2) / size(out.v1) };
  for (const f of Object.values(out)) rmSync(f, { force: true });
  return result;
}

async function main() {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '1G' },
      tree: { type: 'string', default: '/usr/share' },
      dir: { type: 'string', default: tmpdir() },
      json: { type: 'boolean', default: false },
    },
  });
  const size = parseSize(values.size);
  const tree = values.tree ?? '/usr/share';
  const dir = mkdtempSync(join(values.dir ?? tmpdir(), 'cowdisk-sizes-'));
  const log = (/** @type {string} */ line) => process.stderr.write(`sizes: ${line}\n`);
  try {
    const base = join(dir, 'compressible.raw');
    log(`making the ${size / MiB} MiB compressible base`);
    makeCompressibleRaw(base, size, tree);
    const compressible = sizes(base, dir);
    rmSync(base);
    const ext4 = join(dir, 'tree.ext4');
    // Room for the files, their metadata and some free space, as an image of a tree would have.
    const imageBytes = Math.ceil((treeBytes(tree) * 1.4) / MiB) * MiB + 64 * MiB;
    log(`making an ext4 image of ${tree} (${imageBytes / MiB} MiB)`);
    writeFileSync(ext4, '');
    truncateSync(ext4, imageBytes);
    run('mkfs.ext4', ['-q', '-F', '-d', tree, ext4]);
    const fs = sizes(ext4, dir);
    const rows = [
      { disk: `compressible base (${size / MiB} MiB of ${tree}'s files)`, ...compressible },
      { disk: `ext4 image of ${tree} (mkfs.ext4 -d)`, ...fs },
    ];
    const command = ['node bench/sizes.mjs', ...process.argv.slice(2)].join(' ');
    if (values.json) {
      process.stdout.write(JSON.stringify({ command, date: new Date().toISOString(), rows, target: '<= 1.15' }, null, 2) + '\n');
      return;
    }
    const mib = (/** @type {number} */ n) => (n / MiB).toFixed(1);
    const out = [`# bench/sizes, ${new Date().toISOString().slice(0, 10)}`, '', `Command: \`${command}\`.`, ''];
    out.push('| disk | raw MiB (allocated) | v1 MiB | v2 MiB | qcow2 -c MiB | v2 / v1 (want <= 1.15) |', '|---|--:|--:|--:|--:|--:|');
    for (const r of rows) out.push(`| ${r.disk} | ${mib(r.raw)} (${mib(r.allocated)}) | ${mib(r.v1)} | ${mib(r.v2)} | ${mib(r.qcow2c)} | ${r.ratio.toFixed(3)} ${r.ratio <= 1.15 ? 'met' : 'MISSED'} |`);
    process.stdout.write(out.join('\n') + '\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`sizes: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
