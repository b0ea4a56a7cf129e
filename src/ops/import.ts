/**
 * `import`: a raw file becomes a sealed snapshot layer with no parent. Blocks of zeros become zero
 * entries (no data); the rest are hashed and stored, lz4-compressed where that pays.
 */
import * as path from 'node:path';
import { DEFAULT_BLOCK_SIZE } from '../format/constants.js';
import { RawFile } from '../format/raw.js';
import { SnapshotV2Writer } from '../format/snapshot-v2-writer.js';
import type { FileSystem } from '../io/file.js';
import { fileSystemOf } from '../io/real-file.js';
import { CowdiskError, ErrorCode } from '../errors.js';
import { checkBlockSize } from './create.js';

export interface ImportOptions {
  blockSize?: number;
  fs?: FileSystem;
  /** Called as bytes are consumed: (done, total). */
  onProgress?: (done: number, total: number) => void;
}

/** What `import` made. */
export interface ImportResult {
  /** The raw file read and the layer written (absolute paths). */
  raw: string;
  snapshot: string;
  /** The layer's identity, sha256:... */
  digest: string;
  size: number;
  blockSize: number;
  /** Blocks stored with data, and blocks recorded as zeros. */
  storedBlocks: number;
  zeroBlocks: number;
  /** Bytes of block data stored, after compression. */
  dataBytes: number;
}

const CHUNK = 4 * 1024 * 1024;

export async function importRaw(rawFile: string, snapshotFile: string, options: ImportOptions = {}): Promise<ImportResult> {
  const fs = fileSystemOf(options);
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  checkBlockSize(blockSize);
  const raw = await RawFile.open(fs, path.resolve(rawFile));
  try {
    const size = raw.size;
    if (size === 0) throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `${raw.path} is empty; there is nothing to import.`, { path: raw.path });
    const writer = await SnapshotV2Writer.create(fs, snapshotFile, { size, blockSize, parent: { kind: 'none' } });
    try {
      const chunk = Buffer.alloc(Math.max(CHUNK, blockSize));
      const zeros = Buffer.alloc(blockSize);
      let zeroBlocks = 0;
      for (let at = 0; at < size; at += chunk.length) {
        await raw.read(chunk, at);
        const blocks = Math.min(chunk.length, size - at + blockSize - 1) / blockSize;
        for (let i = 0; i < Math.floor(blocks); i++) {
          const block = chunk.subarray(i * blockSize, (i + 1) * blockSize);
          const zero = block.equals(zeros);
          if (zero) zeroBlocks++;
          await writer.add(at / blockSize + i, zero ? null : block);
        }
        options.onProgress?.(Math.min(size, at + chunk.length), size);
      }
      const header = await writer.finish();
      return {
        raw: raw.path,
        snapshot: writer.finalPath,
        digest: `sha256:${header.layerDigest.toString('hex')}`,
        size,
        blockSize,
        storedBlocks: header.storedBlocks,
        zeroBlocks,
        dataBytes: header.dataBytes,
      };
    } catch (err) {
      await writer.abort();
      throw err;
    }
  } finally {
    await raw.close();
  }
}
