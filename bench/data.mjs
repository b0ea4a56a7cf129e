// @ts-check
/**
 * The raw disks the import, size and sealed-read benchmarks start from, made the same way in each:
 *
 * - mixed: three quarters random, one quarter zeros, in every 4 MiB (bench/engine.mjs's import
 *   case): what lz4 cannot shrink and what a layer records as zero blocks. Random bytes are an
 *   AES-128-CTR keystream under a random key (about 1 GiB/s here; /dev/urandom does 150 MiB/s).
 * - compressible: the regular files of a real tree (/usr/share), in sorted path order, each
 *   starting on a 4 KiB boundary as a file system would put them, repeated with a changing salt
 *   in each pass's first bytes until the disk is full, so that no pass is a byte copy of the one
 *   before. Real text, binaries, images and compressed files in the proportions a system has:
 *   what an image of a root file system compresses like, made without mkfs or root.
 *
 * Both are written and synced; bench/compare/base.mjs's warmPageCache reads them through before
 * a measurement.
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, readdirSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';

const MiB = 1024 * 1024;
const CHUNK = 4 * MiB;

/**
 * A --size option: a number of MiB or GiB ("256M", "1G"), a multiple of 4 MiB.
 * @param {string | undefined} text
 */
export function parseSize(text) {
  const m = /^(\d+)([MG])$/i.exec(text ?? '');
  const size = m ? Number(m[1]) * (m[2].toUpperCase() === 'G' ? 1024 : 1) * MiB : NaN;
  if (!(size > 0) || size % (4 * MiB) !== 0) throw new Error(`--size ${text}: expected a multiple of 4M, in M or G, like 1G`);
  return size;
}

/**
 * @param {string} path
 * @param {number} size  a multiple of 4 MiB
 */
export function makeMixedRaw(path, size) {
  const cipher = createCipheriv('aes-128-ctr', randomBytes(16), randomBytes(16));
  const zeros = Buffer.alloc(CHUNK);
  const fd = openSync(path, 'wx');
  try {
    for (let pos = 0; pos < size; pos += CHUNK) {
      const chunk = Buffer.alloc(Math.min(CHUNK, size - pos));
      cipher.update(zeros.subarray(0, (chunk.length * 3) / 4)).copy(chunk);
      writeSync(fd, chunk, 0, chunk.length, pos);
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * The regular files under `root`, sorted by path (symbolic links and other kinds left out).
 * @param {string} root
 */
function filesUnder(root) {
  /** @type {string[]} */
  const out = [];
  const walk = (/** @type {string} */ dir) => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1));
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.isDirectory()) walk(join(dir, e.name));
      else if (e.isFile()) out.push(join(dir, e.name));
    }
  };
  walk(root);
  return out;
}

/**
 * @param {string} path
 * @param {number} size  bytes
 * @param {string} [root]  the tree whose files fill the disk
 */
export function makeCompressibleRaw(path, size, root = '/usr/share') {
  const files = filesUnder(root).filter((f) => {
    try {
      return statSync(f).size > 0;
    } catch {
      return false;
    }
  });
  if (files.length === 0) throw new Error(`${root} has no readable files to make a compressible disk of`);
  const fd = openSync(path, 'wx');
  try {
    let pos = 0;
    for (let pass = 0; pos < size; pass++) {
      for (const file of files) {
        if (pos >= size) break;
        let data;
        try {
          data = readFileSync(file);
        } catch {
          continue;
        }
        // A file's first bytes differ from pass to pass (a pass is never a copy of the one before).
        if (pass > 0 && data.length >= 4) data.writeUInt32LE((data.readUInt32LE(0) ^ pass) >>> 0, 0);
        writeSync(fd, data, 0, Math.min(data.length, size - pos), pos);
        pos = Math.min(size, Math.ceil((pos + data.length) / 4096) * 4096);
      }
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
