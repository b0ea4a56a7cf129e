// @ts-check
/**
 * cowdisk as a Tool (tool.mjs), driven through its own CLI exactly as a user would: `cowdisk
 * clone BASE OVERLAY` makes the fresh image of each job (the same raw base the peers read),
 * `cowdisk serve OVERLAY --socket PATH` serves it as the default export.
 *
 * The chain-depth variant needs more verbs (import, snapshot, flatten) and builds, once per run,
 * two chains that present identical bytes:
 *   - deep: base.snap (the imported base) <- 15 layers made by `cowdisk snapshot`, layer i
 *     holding every 16th block starting at block i, written through `cowdisk serve` by fio;
 *     a fresh clone on top reads through 16 layers, each serving 1/16 of the blocks;
 *   - shallow: the deep chain flattened (`cowdisk flatten`) into one sealed layer; a clone on
 *     top reads the same bytes through 1 layer of the same kind.
 * So the two differ only in depth, not in what kind of layer serves a read.
 */
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runFio } from './fio.mjs';
import { startServer } from './server.mjs';
import { runChecked } from './tool.mjs';

const KiB = 1024;
const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = join(REPO_ROOT, 'bin', 'cowdisk');
/** The block size of a clone of a raw base (cowdisk's default). */
const BLOCK_SIZE = 64 * KiB;

/** The chain depths the variant compares (layers under the overlay). */
export const CHAIN_DEPTHS = [1, 16];

/** @typedef {import('./tool.mjs').Tool} Tool */
/** @typedef {import('./tool.mjs').RunContext} RunContext */

/** @param {string[]} args */
export function cowdisk(args) {
  return runChecked(process.execPath, [BIN, ...args]);
}

/** @type {Set<string> | string | undefined} */
let commandsCache;

/**
 * The subcommands this build of cowdisk has, from `cowdisk --help`, or why it cannot say.
 * @returns {Set<string> | string}
 */
function commands() {
  if (commandsCache === undefined) {
    const r = spawnSync(process.execPath, [BIN, '--help'], { encoding: 'utf8' });
    if (r.status !== 0) {
      commandsCache = `cowdisk does not run: ${(r.stderr || r.stdout).trim()}`;
    } else {
      const listed = r.stdout.split(/^Commands:$/m)[1] ?? '';
      commandsCache = new Set([...listed.matchAll(/^ {2}([a-z][\w-]*)/gm)].map((m) => m[1]));
    }
  }
  return commandsCache;
}

/**
 * @param {string[]} needed  with the issue that brings each, for the message
 * @returns {string | null}
 */
function missingCommands(needed) {
  const have = commands();
  if (typeof have === 'string') return have;
  const missing = needed.filter((c) => !have.has(c.split(' ')[0]));
  return missing.length ? `this build of cowdisk has no ${missing.join(', ')} yet` : null;
}

/** @type {Tool} */
export const cowdiskTool = {
  id: 'cowdisk',
  label: 'cowdisk',
  role: 'cow',
  unit: BLOCK_SIZE,
  unavailable: () => missingCommands(['clone (issue 2)', 'serve (issue 3)']),
  version: () => cowdisk(['--version']).trim(),
  async fresh(runCtx, dir) {
    return cloneAndServe(runCtx.base, dir);
  },
};

/**
 * cowdisk with its adaptive polling off (`serve --poll-us 0`): after a reply the event loop goes
 * straight back to sleep, as the C servers do. Measured beside the default so that the table
 * shows what polling buys and the default is never the only figure.
 * @type {Tool}
 */
export const cowdiskNoPollTool = {
  ...cowdiskTool,
  id: 'cowdisk-nopoll',
  label: 'cowdisk --poll-us 0',
  async fresh(runCtx, dir) {
    return cloneAndServe(runCtx.base, dir, ['--poll-us', '0']);
  },
};

/** Why the chain-depth variant cannot run with this build, or null. */
export function chainUnavailable() {
  return missingCommands(['clone (issue 2)', 'serve (issue 3)', 'import (issue 2)', 'snapshot (issue 6)', 'flatten (issue 6)']);
}

/**
 * Builds the deep and the shallow chain (see the top of this file) under dir.
 * @param {RunContext} runCtx
 * @param {string} dir
 * @param {(line: string) => void} progress
 * @returns {Promise<Map<number, string>>}  for each depth, the sealed layer a fresh clone goes on
 */
export async function buildChains(runCtx, dir, progress) {
  const deepest = Math.max(...CHAIN_DEPTHS);
  const top = join(dir, 'top.cow');
  cowdisk(['import', runCtx.base, join(dir, 'base.snap')]);
  cowdisk(['clone', join(dir, 'base.snap'), top]);
  let parent = join(dir, 'base.snap');
  for (let layer = 1; layer < deepest; layer++) {
    progress(`chain: writing layer ${layer} of ${deepest - 1}`);
    const server = await startServer(serve(top, dir), join(dir, 'nbd.sock'), dir);
    try {
      await runFio(
        {
          name: `layer-${layer}`, rw: 'write', bs: BLOCK_SIZE, stride: deepest * BLOCK_SIZE, offset: layer * BLOCK_SIZE,
          iodepth: 16, ios: Math.floor(runCtx.size / (deepest * BLOCK_SIZE)), size: runCtx.size,
        },
        server.uri,
        join(dir, 'fio.json'),
      );
    } finally {
      await server.stop();
    }
    parent = join(dir, `layer-${layer}.snap`);
    cowdisk(['snapshot', top, parent]);
  }
  progress('chain: flattening it into one layer');
  cowdisk(['flatten', top, join(dir, 'flat.snap')]);
  return new Map([
    [deepest, parent],
    [1, join(dir, 'flat.snap')],
  ]);
}

/**
 * A fresh clone of parent (a raw base or a sealed layer) in dir, and the server for it.
 * @param {string} parent
 * @param {string} dir
 * @param {string[]} [serveOptions]  more `cowdisk serve` options
 */
export function cloneAndServe(parent, dir, serveOptions = []) {
  const overlay = join(dir, 'overlay.cow');
  cowdisk(['clone', parent, overlay]);
  return serve(overlay, dir, serveOptions);
}

/**
 * @param {string} image
 * @param {string} dir  the socket goes here
 * @param {string[]} [options]  more `cowdisk serve` options
 * @returns {import('./server.mjs').Launch}
 */
function serve(image, dir, options = []) {
  return { command: process.execPath, args: [BIN, 'serve', image, '--socket', join(dir, 'nbd.sock'), ...options] };
}
