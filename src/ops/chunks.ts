/**
 * Reading a set of blocks through a device the way every lifecycle verb does: in ascending order,
 * consecutive blocks together, in chunks of whole blocks of at most 4 MiB. The bytes past the end
 * of the disk (the tail of a last, partial block) read as zeros, because sealed blocks are whole.
 */
import type { BlockDevice } from '../image/device.js';
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
  const perChunk = chunkBlocks(bs);
  const buf = Buffer.alloc(perChunk * bs);
  const total = onProgress ? set.size * bs : 0;
  let done = 0;
  for (const [first, end] of set.runs(perChunk)) {
    const data = buf.subarray(0, (end - first) * bs);
    await readWhole(device, data, first * bs, device.size);
    await visit(first, data);
    done += data.length;
    onProgress?.(done, total);
  }
}

/**
 * `forEachChunk` over two disks of the same size, for the verbs that compare them (`diff`,
 * `rebase`): `theirs` holds the same blocks as `other` reads them (zeros where `other` is null:
 * an empty disk), and `inside` says how many bytes of the chunk lie within the disk.
 */
export async function forEachChunkOfBoth(
  device: BlockDevice,
  other: BlockDevice | null,
  set: BlockSet,
  visit: (first: number, mine: Buffer, theirs: Buffer, inside: number) => Promise<void>,
  onProgress?: Progress,
): Promise<void> {
  const bs = device.blockSize;
  const buf = Buffer.alloc(chunkBlocks(bs) * bs);
  await forEachChunk(
    device,
    set,
    async (first, mine) => {
      const theirs = buf.subarray(0, mine.length);
      const inside = await readWhole(other, theirs, first * bs, device.size);
      await visit(first, mine, theirs, inside);
    },
    onProgress,
  );
}

function chunkBlocks(blockSize: number): number {
  return Math.max(1, Math.floor(CHUNK_BYTES / blockSize));
}

/**
 * Fills `data` with what `device` (null: an empty disk) reads at `from`, and zeros past `size`,
 * the end of the disk. Returns how many bytes of `data` lie within the disk.
 */
async function readWhole(device: BlockDevice | null, data: Buffer, from: number, size: number): Promise<number> {
  const inside = Math.max(0, Math.min(data.length, size - from));
  if (device) await device.read(data.subarray(0, inside), from);
  else data.fill(0, 0, inside);
  data.fill(0, inside);
  return inside;
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
