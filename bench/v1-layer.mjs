#!/usr/bin/env node
// @ts-check
/**
 * A format version 1 import, for the benchmarks that compare with what cowdisk wrote before
 * version 2 (sizes, import speed, sealed reads): the raw file's blocks through the version 1
 * writer that the tests keep (src/format/snapshot-writer.ts), zero blocks as zero entries, as
 * `cowdisk import` did then. No cowdisk command writes version 1 any more.
 *
 *   npm run build && node bench/v1-layer.mjs RAW OUT [--block-size BYTES]
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { SnapshotWriter } from '../dist/format/snapshot-writer.js';
import { realFileSystem } from '../dist/io/real-file.js';

/**
 * @param {string} raw
 * @param {string} out
 * @param {number} [blockSize]
 */
export async function importV1(raw, out, blockSize = 64 * 1024) {
  const fd = openSync(raw, 'r');
  try {
    const size = fstatSync(fd).size;
    const writer = await SnapshotWriter.create(realFileSystem, out, { size, blockSize, parent: { kind: 'none' } });
    const chunk = Buffer.alloc(Math.max(blockSize, 4 * 1024 * 1024));
    const zeros = Buffer.alloc(blockSize);
    for (let at = 0; at < size; at += chunk.length) {
      const n = readSync(fd, chunk, 0, chunk.length, at);
      chunk.fill(0, n);
      for (let i = 0; i * blockSize < n; i++) {
        const block = chunk.subarray(i * blockSize, (i + 1) * blockSize);
        await writer.add(at / blockSize + i, block.equals(zeros) ? null : block);
      }
    }
    return await writer.finish();
  } finally {
    closeSync(fd);
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [raw, out, flag, value] = process.argv.slice(2);
  if (!raw || !out) throw new Error('usage: node bench/v1-layer.mjs RAW OUT [--block-size BYTES]');
  await importV1(raw, out, flag === '--block-size' ? Number(value) : undefined);
}
