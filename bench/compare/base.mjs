// @ts-check
/**
 * The shared base: a raw file of random bytes, made once per run and read-only for every tool.
 *
 * Random so that nothing can compress it, skip it as zeros or deduplicate it. The bytes are an
 * AES-128-CTR keystream under a random key: node:crypto makes it at about 1 GiB/s here, where
 * /dev/urandom manages about 150 MiB/s. It is synced before the first job so that its
 * write-back does not run under a measurement; afterwards it sits in the page cache (1 GiB, on a
 * machine with far more memory), as the peers' published numbers assume.
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, statSync, writeSync } from 'node:fs';

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
