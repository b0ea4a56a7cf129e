/**
 * The synchronous read path (BlockDevice.readNow, used by the NBD server for reads the page cache
 * can answer): whenever it says yes, its bytes are read's bytes; it says no, rather than guess,
 * where the answer would need a promise (a map page or a resolution not yet in memory), a digest
 * (a snapshot layer's stored blocks), or a test that watches every read (an injected fault).
 */
import { expect, test } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import type { BlockDevice } from '../../src/image/device.js';
import { openImage } from '../../src/image/open.js';
import { buildChain, pattern, Random, writeSnapshotLayer } from '../helpers/engine-chain.js';

const BS = 65536;
const BLOCKS = 16;
const SIZE = BLOCKS * BS;

/** Writes, zeroes and trims a mix of whole blocks, sub-blocks and odd ranges, on the device and on `model`. */
async function scribble(dev: BlockDevice, model: Buffer, seed: number): Promise<void> {
  const rng = new Random(seed);
  for (let i = 0; i < 40; i++) {
    const offset = rng.below(SIZE / 512) * 512;
    const length = Math.min(SIZE - offset, 512 * (1 + rng.below(3 * BS / 512)));
    const what = rng.below(5);
    if (what === 0) {
      await dev.zero(offset, length);
      model.fill(0, offset, offset + length);
    } else if (what === 1) {
      await dev.trim(offset, length);
      model.fill(0, offset, offset + length);
    } else {
      const data = pattern(rng.below(1 << 30), length);
      await dev.write(data, offset);
      data.copy(model, offset);
    }
  }
}

function ranges(seed: number, count: number): Array<[number, number]> {
  const rng = new Random(seed);
  return Array.from({ length: count }, () => {
    const offset = rng.below(SIZE / 512) * 512;
    return [offset, Math.min(SIZE - offset, 512 * (1 + rng.below(2 * BS / 512)))];
  });
}

test('over a raw base: after a read, readNow answers the same range at once with the same bytes, and is never wrong before', async () => {
  const fs = new MemoryFileSystem();
  const chain = await buildChain(fs, '/c', { depth: 2, base: 'raw', size: SIZE, blockSize: BS, seed: 11 });
  const image = await openImage(chain.overlay, { fs });
  const dev = image.device;
  const model = Buffer.from(chain.content);
  // Nothing is in memory yet: the base's blocks have not been resolved.
  expect(dev.readNow!(Buffer.alloc(4096), 5 * BS)).toBe(false);
  await scribble(dev, model, 5);
  let before = 0;
  for (const [offset, length] of ranges(9, 300)) {
    const now = Buffer.alloc(length, 0xee);
    if (dev.readNow!(now, offset)) {
      before++;
      expect(now.equals(model.subarray(offset, offset + length))).toBe(true);
    }
    const read = Buffer.alloc(length, 0xdd);
    await dev.read(read, offset);
    expect(read.equals(model.subarray(offset, offset + length))).toBe(true);
    const again = Buffer.alloc(length, 0xcc);
    expect(dev.readNow!(again, offset)).toBe(true);
    expect(again.equals(read)).toBe(true);
  }
  // Once the pages are in memory most ranges are answered at once (a count, so that a readNow
  // that always said no would fail here and not only in a benchmark).
  expect(before).toBeGreaterThan(200);
  await image.close();
  expect(dev.readNow!(Buffer.alloc(4096), 0)).toBe(false);
});

test('over version 2 snapshot layers: after a read, every range is answered at once, frames decoded, with read\'s bytes', async () => {
  const fs = new MemoryFileSystem();
  const chain = await buildChain(fs, '/c', { depth: 4, base: 'snapshot', size: SIZE, blockSize: BS, seed: 15, version: 2 });
  const image = await openImage(chain.overlay, { fs });
  const dev = image.device;
  const model = Buffer.from(chain.content);
  expect(dev.readNow!(Buffer.alloc(4096), 0)).toBe(false);
  await scribble(dev, model, 6);
  for (const [offset, length] of ranges(10, 200)) {
    const read = Buffer.alloc(length, 0xdd);
    await dev.read(read, offset);
    expect(read.equals(model.subarray(offset, offset + length))).toBe(true);
    const now = Buffer.alloc(length, 0xcc);
    expect(dev.readNow!(now, offset)).toBe(true);
    expect(now.equals(read)).toBe(true);
  }
  await image.close();
});

test('over version 1 layers: raw blocks and the blocks decompressed a moment ago are answered at once, others go through read', async () => {
  const fs = new MemoryFileSystem();
  const chain = await buildChain(fs, '/c', { depth: 3, base: 'snapshot', size: SIZE, blockSize: BS, seed: 12, version: 1 });
  const image = await openImage(chain.overlay, { fs });
  for (const [offset, length] of ranges(11, 100)) {
    const read = Buffer.alloc(length);
    await image.device.read(read, offset);
    expect(read.equals(chain.content.subarray(offset, offset + length))).toBe(true);
    const now = Buffer.alloc(length, 0xcc);
    expect(image.device.readNow!(now, offset)).toBe(true); // random data: stored raw, or just decompressed
    expect(now.equals(read)).toBe(true);
  }
  await image.close();
  // Compressible blocks, more than version 1 keeps decompressed (32).
  const small = 16384;
  const blocks = new Map<number, Buffer>();
  for (let b = 0; b < 40; b++) blocks.set(b, Buffer.from(`block ${b} `.repeat(small / 8)).subarray(0, small));
  await writeSnapshotLayer(fs, '/v1/text.snap', { size: 40 * small, blockSize: small, parent: { kind: 'none' }, blocks, version: 1 });
  const layer = await openImage('/v1/text.snap', { fs });
  await layer.device.read(Buffer.alloc(40 * small), 0);
  const part = Buffer.alloc(4096);
  expect(layer.device.readNow!(part, 39 * small + 4096)).toBe(true);
  expect(part.equals(blocks.get(39)!.subarray(4096, 8192))).toBe(true);
  expect(layer.device.readNow!(part, 0)).toBe(false);
  await layer.device.read(part, 0);
  expect(layer.device.readNow!(part.fill(0), 0)).toBe(true);
  expect(part.equals(blocks.get(0)!.subarray(0, 4096))).toBe(true);
  await layer.close();
});

test('a memory file system with a fault to inject answers nothing at once, so the fault is seen', async () => {
  const fs = new MemoryFileSystem();
  const chain = await buildChain(fs, '/c', { depth: 2, base: 'raw', size: SIZE, blockSize: BS, seed: 13 });
  const image = await openImage(chain.overlay, { fs });
  const dev = image.device;
  await dev.read(Buffer.alloc(SIZE), 0);
  expect(dev.readNow!(Buffer.alloc(4096), 0)).toBe(true);
  fs.inject = (op) => (op.op === 'read' ? new Error('injected') : undefined);
  expect(dev.readNow!(Buffer.alloc(4096), 0)).toBe(false);
  await expect(dev.read(Buffer.alloc(4096), 0)).rejects.toThrow(/injected/);
  fs.inject = undefined;
  await image.close();
});

test('a range outside the disk is never answered at once (read throws OUT_OF_RANGE for it)', async () => {
  const fs = new MemoryFileSystem();
  const chain = await buildChain(fs, '/c', { depth: 2, base: 'raw', size: SIZE, blockSize: BS, seed: 14 });
  const image = await openImage(chain.overlay, { fs });
  const dev = image.device;
  await dev.read(Buffer.alloc(SIZE), 0);
  expect(dev.readNow!(Buffer.alloc(4096), SIZE - 2048)).toBe(false);
  expect(dev.readNow!(Buffer.alloc(4096), -4096)).toBe(false);
  await expect(dev.read(Buffer.alloc(4096), SIZE - 2048)).rejects.toMatchObject({ code: ErrorCode.OUT_OF_RANGE });
  await image.close();
});
