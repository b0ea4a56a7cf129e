// @ts-check
/**
 * The peers cowdisk is measured against, each a Tool (tool.mjs): qemu-nbd on qcow2 overlays,
 * nbdkit's cow filter, nbdkit's plain file plugin (no copy-on-write: the floor) and nbdkit's
 * null plugin (no storage at all: what the protocol and fio cost by themselves).
 *
 * Servers run with their default caching (a volatile write cache over the page cache, which is
 * what the NBD protocol allows until FLUSH); fio sends no FLUSH, so every tool is measured
 * doing the same thing: answering from the page cache.
 */
import { openSync, readSync, writeSync, fsyncSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { firstLine, missingPrograms, runChecked } from './tool.mjs';

const KiB = 1024;

/** @typedef {import('./tool.mjs').Tool} Tool */
/** @typedef {import('./tool.mjs').RunContext} RunContext */

/**
 * qemu-nbd serving a qcow2 overlay whose backing file is the raw base.
 * @param {string} id
 * @param {string} label
 * @param {number} unit
 * @param {string} createOptions  qemu-img create -o
 * @returns {Tool}
 */
function qemuQcow2(id, label, unit, createOptions) {
  return {
    id,
    label,
    role: 'cow',
    unit,
    unavailable: () => missingPrograms(['qemu-img', 'qemu-nbd'], 'qemu-utils'),
    version: () => firstLine('qemu-nbd', ['--version']),
    async fresh(runCtx, dir) {
      const overlay = join(dir, 'overlay.qcow2');
      runChecked('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', runCtx.base, '-F', 'raw', '-o', createOptions, overlay]);
      return {
        command: 'qemu-nbd',
        // --persistent: the rewrite jobs connect twice; --cache and --aio spelled out are the defaults.
        args: ['--format=qcow2', '--persistent', '--cache=writeback', '--aio=threads', `--socket=${join(dir, 'nbd.sock')}`, overlay],
      };
    },
  };
}

/**
 * nbdkit with a plugin (and filters), in the foreground so its PID is the one we started.
 * @param {Omit<Tool, 'unavailable' | 'version' | 'fresh'>} tool
 * @param {(run: RunContext, dir: string) => string[]} pluginArgs
 * @returns {Tool}
 */
function nbdkit(tool, pluginArgs) {
  return {
    ...tool,
    unavailable: () => missingPrograms(['nbdkit'], 'nbdkit'),
    version: () => firstLine('nbdkit', ['--version']),
    async fresh(runCtx, dir) {
      return {
        command: 'nbdkit',
        args: ['--foreground', '--exit-with-parent', `--unix=${join(dir, 'nbd.sock')}`, ...pluginArgs(runCtx, dir)],
        // The cow filter keeps its overlay in an unlinked file under TMPDIR: keep it in the
        // job's directory, on the same file system as everyone else's overlay.
        env: { TMPDIR: dir },
      };
    },
  };
}

/** The floor's raw copy, made once per run (see docs/PERFORMANCE.md). */
const floorFile = (/** @type {RunContext} */ runCtx) => join(runCtx.dir, 'floor.raw');

/** @type {Tool[]} */
export const PEERS = [
  qemuQcow2('qemu-qcow2-64k', 'qemu-nbd qcow2 64K', 64 * KiB, 'cluster_size=64k'),
  qemuQcow2('qemu-qcow2-128k-l2', 'qemu-nbd qcow2 128K+subclusters', 128 * KiB, 'extended_l2=on,cluster_size=128k'),
  nbdkit({ id: 'nbdkit-cow', label: 'nbdkit cow filter', role: 'cow', unit: 64 * KiB }, (runCtx) => [
    '--filter=cow', 'file', runCtx.base, 'cow-block-size=64K',
  ]),
  nbdkit(
    {
      id: 'nbdkit-file',
      label: 'nbdkit file (floor)',
      role: 'floor',
      unit: 0,
      async prepare(runCtx) {
        copyWithoutSharing(runCtx.base, floorFile(runCtx));
      },
    },
    (runCtx) => ['file', floorFile(runCtx)],
  ),
  nbdkit({ id: 'nbdkit-null', label: 'nbdkit null (protocol only)', role: 'protocol', unit: 0 }, (runCtx) => [
    'null', `size=${runCtx.size}`,
  ]),
];

/**
 * A byte copy through user space: copy_file_range (and so fs.copyFile) may share extents on
 * file systems with reflinks, and then the floor's first writes would be copy-on-write too.
 * @param {string} from
 * @param {string} to
 */
function copyWithoutSharing(from, to) {
  const src = openSync(from, 'r');
  const dst = openSync(to, 'w');
  const buf = Buffer.allocUnsafe(4 * 1024 * KiB);
  try {
    for (let pos = 0; ; ) {
      const n = readSync(src, buf, 0, buf.length, pos);
      if (n === 0) break;
      writeSync(dst, buf, 0, n, pos);
      pos += n;
    }
    fsyncSync(dst);
  } finally {
    closeSync(src);
    closeSync(dst);
  }
}
