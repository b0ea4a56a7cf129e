/**
 * `export`: the whole chain, as the disk reads, written to a sparse raw file. Ranges the chain
 * reports as zero or hole are left as holes, as are data blocks that happen to hold only zeros.
 */
import * as path from 'node:path';
import type { FileSystem } from '../io/file.js';
import { fileSystemOf } from '../io/real-file.js';
import type { BlockDevice } from '../image/device.js';

export interface ExportOptions {
  fs?: FileSystem;
  onProgress?: (done: number, total: number) => void;
}

/** What `export` wrote. */
export interface ExportResult {
  /** The raw file written (absolute path). */
  out: string;
  /** Its length: the disk's size. */
  size: number;
  /** Bytes written into it (data that is not zeros); the rest are holes. */
  dataBytes: number;
  /** Bytes the file occupies on disk (what `du` says). */
  bytesOnDisk: number;
}

const CHUNK = 4 * 1024 * 1024;

export async function exportRaw(device: BlockDevice, outFile: string, options: ExportOptions = {}): Promise<ExportResult> {
  const fs = fileSystemOf(options);
  const outPath = path.resolve(outFile);
  const out = await fs.create(outPath);
  let dataBytes = 0;
  try {
    await out.truncate(device.size);
    const buf = Buffer.alloc(CHUNK);
    const bs = device.blockSize;
    const zeros = Buffer.alloc(bs);
    for (let at = 0; at < device.size; at += CHUNK) {
      const length = Math.min(CHUNK, device.size - at);
      for (const extent of await device.extents(at, length)) {
        if (extent.kind !== 'data') continue;
        const view = buf.subarray(0, extent.length);
        await device.read(view, extent.offset);
        // Write block by block so that data blocks of zeros stay holes too.
        for (let o = 0; o < view.length; o += bs) {
          const piece = view.subarray(o, Math.min(view.length, o + bs));
          if (piece.length === bs ? !piece.equals(zeros) : piece.some((b) => b !== 0)) {
            await out.write(piece, extent.offset + o);
            dataBytes += piece.length;
          }
        }
      }
      options.onProgress?.(at + length, device.size);
    }
    await out.sync();
  } finally {
    await out.close();
  }
  return { out: outPath, size: device.size, dataBytes, bytesOnDisk: (await fs.stat(outPath)).allocated };
}
