// @ts-check
/**
 * The shared base: a raw file of random bytes, made once per run and read-only for every tool.
 *
 * Random so that nothing can compress it, skip it as zeros or deduplicate it. The bytes are an
 * AES-128-CTR keystream under a random key: node:crypto makes it at about 1 GiB/s here, where
 * /dev/urandom manages about 150 MiB/s. It is synced before the first job so that its
 * write-back does not run under a measurement.
 *
 * Every tool should read it from the page cache, but memory is not simply there for the keeping:
 * this machine runs DAMON proactive reclaim (kdamond, action pageout), which drops file pages
 * nobody touched for a few seconds, and a run measured here once read the floor's copy at
 * 129 MiB/s from disk in one repetition and 1 GiB/s in the next. So the shared files are read
 * through once right before each measured pass (0.2 s per GiB when they are still cached).
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readSync, statSync, writeSync } from 'node:fs';

const CHUNK = 4 * 1024 * 1024;

/**
 * @param {string} path
 * @param {number} size  a multiple of 4 KiB
 */
export function makeRandomBase(path, size) {
  const cipher = createCipheriv('aes-128-ctr', randomBytes(16), randomBytes(16));
  const zeros = Buffer.alloc(CHUNK);
  const fd = openSync(path, 'wx');
  try {
    for (let pos = 0; pos < size; pos += CHUNK) {
      const n = Math.min(CHUNK, size - pos);
      writeSync(fd, cipher.update(zeros.subarray(0, n)), 0, n, pos);
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * What would show that someone wrote to the base: a tool must never do so.
 * @param {string} path
 */
export function baseIdentity(path) {
  const st = statSync(path);
  return `${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
}

/**
 * Reads the files through, so that they are in the page cache and recently used.
 * @param {string[]} paths
 */
export function warmPageCache(paths) {
  const buf = Buffer.allocUnsafe(CHUNK);
  for (const path of paths) {
    const fd = openSync(path, 'r');
    try {
      for (let pos = 0, n; (n = readSync(fd, buf, 0, CHUNK, pos)) > 0; pos += n);
    } finally {
      closeSync(fd);
    }
  }
}
