/**
 * Reading a set of blocks through a device the way every lifecycle verb does: in ascending order,
 * consecutive blocks together, in chunks of whole blocks of at most 4 MiB. The bytes past the end
 * of the disk (the tail of a last, partial block) read as zeros, because sealed blocks are whole.
 */
import type { BlockDevice } from '../device.js';
import type { BlockSet } from './block-set.js';

const CHUNK_BYTES = 4 * 1024 * 1024;

/** Called with (bytes done, bytes total) of the blocks visited. */
export type Progress = (done: number, total: number) => void;

/**
 * Calls `visit(first, data)` for each chunk: `data` holds blocks first, first + 1, ... as
 * `device` reads them. `data` is reused by the next chunk: copy what must outlive the call.
 */
export async function forEachChunk(device: BlockDevice, set: BlockSet, visit: (first: number, data: Buffer) => Promise<void>, onProgress?: Progress): Promise<void> {
  const bs = device.blockSize;
  const perChunk = Math.max(1, Math.floor(CHUNK_BYTES / bs));
  const buf = Buffer.alloc(perChunk * bs);
  const total = onProgress ? set.size * bs : 0;
  let done = 0;
  for (const [first, end] of set.runs(perChunk)) {
    const data = buf.subarray(0, (end - first) * bs);
    const from = first * bs;
    const inside = Math.max(0, Math.min(data.length, device.size - from));
    await device.read(data.subarray(0, inside), from);
    data.fill(0, inside);
    await visit(first, data);
    done += data.length;
    onProgress?.(done, total);
  }
}

const ZEROS = new Map<number, Buffer>();

/** Whether `data` is all zero bytes. */
export function isZero(data: Buffer): boolean {
  let zeros = ZEROS.get(data.length);
  if (!zeros) {
    zeros = Buffer.alloc(data.length);
    if (ZEROS.size < 8) ZEROS.set(data.length, zeros);
  }
  return data.equals(zeros);
}
