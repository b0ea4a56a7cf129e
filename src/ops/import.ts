/**
 * `import`: a raw file becomes a sealed snapshot layer with no parent. Blocks of zeros become zero
 * entries (no data); the rest are hashed and stored, lz4-compressed where that pays.
 */
import * as path from 'node:path';
import { DEFAULT_BLOCK_SIZE } from '../format/constants.js';
import type { SnapshotHeaderFields } from '../format/header.js';
import { RawFile } from '../format/raw.js';
import { SnapshotWriter } from '../format/snapshot.js';
import type { FileSystem } from '../io/file.js';
import { realFileSystem } from '../io/real-file.js';
import { CowdiskError, ErrorCode } from '../errors.js';
import { checkBlockSize } from './create.js';

export interface ImportOptions {
  blockSize?: number;
  fs?: FileSystem;
  /** Called as bytes are consumed: (done, total). */
  onProgress?: (done: number, total: number) => void;
}

const CHUNK = 4 * 1024 * 1024;

export async function importRaw(rawFile: string, snapshotFile: string, options: ImportOptions = {}): Promise<SnapshotHeaderFields> {
  const fs = options.fs ?? realFileSystem;
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  checkBlockSize(blockSize);
  const raw = await RawFile.open(fs, path.resolve(rawFile));
  try {
    const size = raw.size;
    if (size === 0) throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `${raw.path} is empty; there is nothing to import.`, { path: raw.path });
    const writer = await SnapshotWriter.create(fs, snapshotFile, { size, blockSize, parent: { kind: 'none' } });
    try {
      const chunk = Buffer.alloc(Math.max(CHUNK, blockSize));
      const zeros = Buffer.alloc(blockSize);
      for (let at = 0; at < size; at += chunk.length) {
        await raw.read(chunk, at);
        const blocks = Math.min(chunk.length, size - at + blockSize - 1) / blockSize;
        for (let i = 0; i < Math.floor(blocks); i++) {
          const block = chunk.subarray(i * blockSize, (i + 1) * blockSize);
          await writer.add(at / blockSize + i, block.equals(zeros) ? null : block);
        }
        options.onProgress?.(Math.min(size, at + chunk.length), size);
      }
      return await writer.finish();
    } catch (err) {
      await writer.abort();
      throw err;
    }
  } finally {
    await raw.close();
  }
}
