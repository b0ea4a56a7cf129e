/**
 * The overlay's write path and state changes, observed from outside: the parent is wrapped in a
 * BlockDevice that counts reads (so "never reads the parent" is a count, not a belief), file
 * operations are counted through MemoryFileSystem.inject, and the state map and header are decoded
 * from the file's bytes.
 */
import { describe, expect, test } from 'vitest';
import { CowdiskError, ErrorCode } from '../../src/errors.js';
import { MAP_ENTRIES_PER_PAGE } from '../../src/format/constants.js';
import { decodeOverlayHeader } from '../../src/format/header.js';
import { OverlayFile } from '../../src/format/overlay.js';
import type { FileOperation } from '../../src/io/memory-file.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import type { BlockDevice, Extent } from '../../src/image/device.js';
import { PassThroughDevice } from '../../src/image/pass-through.js';
import { openChain, openImage } from '../../src/image/open.js';
import { SealedChain } from '../../src/image/sealed-chain.js';
import { OverlayDevice } from '../../src/image/overlay-device.js';
import { type Chain, buildChain, pattern } from '../helpers/engine-chain.js';
import { WatchedFileSystem } from '../helpers/engine-files.js';

/** A parent that counts the reads asked of it. */
class CountingDevice extends PassThroughDevice {
  reads = 0;
  override read(buf: Buffer, offset: number): Promise<void> {
    this.reads++;
    return super.read(buf, offset);
  }
}

const BS = 65536;
const SBS = 4096;
const BLOCKS = 8;

interface Setup {
  fs: MemoryFileSystem;
  chain: Chain;
  dev: OverlayDevice;
  parent: CountingDevice | null;
}

/** An overlay over a snapshot whose every block holds data (depth 2), or over nothing (depth 1). */
async function setup(options: { subBlocks?: number; depth?: number } = {}): Promise<Setup> {
  for (let seed = 1; ; seed++) {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/c', { depth: options.depth ?? 2, base: 'snapshot', size: BLOCKS * BS, blockSize: BS, subBlocks: options.subBlocks, seed });
    // A parent with data in every block, so that a missed or misplaced copy-up shows.
    if (options.depth === 1 || noZeroBlocks(chain.content)) return { fs, chain, ...(await openDevice(fs, chain.overlay)) };
  }
}

function noZeroBlocks(content: Buffer): boolean {
  for (let b = 0; b < BLOCKS; b++) if (content.subarray(b * BS, (b + 1) * BS).every((x) => x === 0)) return false;
  return true;
}

async function openDevice(fs: MemoryFileSystem | WatchedFileSystem, file: string) {
  const overlay = await OverlayFile.open(fs, file);
  const { parent: ref, size, blockSize } = overlay.header;
  const below = ref.kind === 'none' ? null : new SealedChain(await openChain(fs, ref, overlay.path, blockSize), size, blockSize);
  const parent = below && new CountingDevice(below);
  return { dev: new OverlayDevice(overlay, parent, false), parent };
}

async function readAll(dev: BlockDevice, offset = 0, length = dev.size): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  await dev.read(buf, offset);
  return buf;
}

/** The masks of block `block` as stored on disk (the newest valid map page slot). */
function storedMasks(fs: MemoryFileSystem, chain: Chain, block: number): [number, number] {
  const bytes = fs.get(chain.overlay);
  let best: [number, number, number] = [0, 0, -1];
  for (const slot of [0, 1]) {
    const at = 8192 + Math.floor(block / MAP_ENTRIES_PER_PAGE) * 8192 + slot * 4096;
    if (bytes.readUInt32LE(at) !== 0x504d4443) continue;
    const gen = bytes.readUInt32LE(at + 12);
    const e = at + 16 + 8 * (block % MAP_ENTRIES_PER_PAGE);
    if (gen > best[2]) best = [bytes.readUInt32LE(e), bytes.readUInt32LE(e + 4), gen];
  }
  return [best[0], best[1]];
}

function countOps(fs: MemoryFileSystem, path: string): FileOperation[] {
  const ops: FileOperation[] = [];
  fs.inject = (op) => {
    if (op.path === path) ops.push(op);
    return undefined;
  };
  return ops;
}

describe('copy-on-write', () => {
  for (const subBlocks of [1, 16]) {
    test(`a whole-block write never reads the parent (${subBlocks} sub-blocks)`, async () => {
      const { dev, parent, chain } = await setup({ subBlocks });
      const data = pattern(7, 2 * BS);
      await dev.write(data, 3 * BS);
      expect(parent?.reads).toBe(0);
      const expected = Buffer.from(chain.content);
      data.copy(expected, 3 * BS);
      parent!.reads = 0;
      expect((await readAll(dev)).equals(expected)).toBe(true);
      await dev.close();
    });

    test(`a partial first write copies the rest of its block up once; later writes to it read nothing below (${subBlocks} sub-blocks)`, async () => {
      const { dev, parent, chain } = await setup({ subBlocks });
      const expected = Buffer.from(chain.content);
      const first = pattern(8, 100);
      await dev.write(first, 2 * BS + 10);
      first.copy(expected, 2 * BS + 10);
      expect(parent!.reads).toBeGreaterThan(0);
      expect(parent!.reads).toBeLessThanOrEqual(2);
      parent!.reads = 0;
      // Inside the same sub-block (the whole block when there is one): in place.
      const again = pattern(9, 50);
      await dev.write(again, 2 * BS + 2000);
      again.copy(expected, 2 * BS + 2000);
      expect(parent!.reads).toBe(0);
      const back = await readAll(dev, 2 * BS, BS);
      expect(parent!.reads).toBe(subBlocks === 1 ? 0 : 1);
      expect(back.equals(expected.subarray(2 * BS, 3 * BS))).toBe(true);
      await dev.close();
    });
  }

  test('with sub-blocks, a write covering whole sub-blocks reads nothing below, and the rest of the block still reads the parent', async () => {
    const { dev, parent, chain } = await setup({ subBlocks: 16 });
    const data = pattern(10, 3 * SBS);
    await dev.write(data, 5 * BS + 2 * SBS);
    expect(parent!.reads).toBe(0);
    const expected = Buffer.from(chain.content);
    data.copy(expected, 5 * BS + 2 * SBS);
    expect((await readAll(dev)).equals(expected)).toBe(true);
    await dev.close();
  });

  test('a rewrite of written bytes goes in place: one file write, no state change', async () => {
    const { fs, dev, chain } = await setup({ subBlocks: 16 });
    await dev.write(pattern(11, 5000), BS + 300);
    await dev.flush();
    const ops = countOps(fs, chain.overlay);
    await dev.write(pattern(12, 4000), BS + 700);
    expect(ops.map((op) => op.op)).toEqual(['write']);
    expect(dev.file.map.hasDirty()).toBe(false);
    await dev.close();
  });

  test('a write spanning blocks becomes one file write when nothing needs a fill', async () => {
    const { fs, dev, chain } = await setup({ subBlocks: 1 });
    const ops = countOps(fs, chain.overlay);
    await dev.write(pattern(13, 3 * BS), 2 * BS);
    expect(ops.filter((op) => op.op === 'write' && (op.pos ?? 0) >= dev.file.header.dataOffset).length).toBe(1);
    await dev.close();
  });
});

describe('zero and trim', () => {
  for (const op of ['zero', 'trim'] as const) {
    test(`${op} of whole blocks sets the zero state, hides the parent and reads nothing below`, async () => {
      const { fs, dev, parent, chain } = await setup({ subBlocks: 16 });
      await dev[op](2 * BS, 2 * BS);
      await dev.flush();
      expect(storedMasks(fs, chain, 2)).toEqual([0, 0xffff]);
      expect(storedMasks(fs, chain, 3)).toEqual([0, 0xffff]);
      parent!.reads = 0;
      expect((await readAll(dev, 2 * BS, 2 * BS)).every((b) => b === 0)).toBe(true);
      expect(parent!.reads).toBe(0);
      expect(await dev.extents(2 * BS, 2 * BS)).toEqual([{ offset: 2 * BS, length: 2 * BS, kind: 'zero', layer: 0 }]);
      await dev.close();
    });
  }

  test('zeroing a block that holds data frees its space in the overlay file', async () => {
    const { fs, dev, chain } = await setup({ subBlocks: 16 });
    await dev.write(pattern(14, 2 * BS), 4 * BS);
    await dev.flush();
    const before = (await fs.stat(chain.overlay)).allocated;
    await dev.zero(4 * BS, 2 * BS);
    expect(before - (await fs.stat(chain.overlay)).allocated).toBe(2 * BS);
    await dev.close();
  });

  test('a zero that is not sub-block aligned writes zeros at its edges and leaves the bytes around it', async () => {
    const { dev, chain } = await setup({ subBlocks: 16 });
    await dev.zero(BS + 1000, 3 * SBS + 17);
    const expected = Buffer.from(chain.content);
    expected.fill(0, BS + 1000, BS + 1000 + 3 * SBS + 17);
    expect((await readAll(dev)).equals(expected)).toBe(true);
    await dev.close();
  });

  test('with no parent, zero and trim leave blocks absent: nothing is recorded, they read as a hole', async () => {
    const { fs, dev, chain } = await setup({ depth: 1 });
    await dev.write(pattern(15, BS), 6 * BS);
    await dev.trim(6 * BS, BS);
    await dev.zero(0, BS);
    await dev.flush();
    expect(storedMasks(fs, chain, 6)).toEqual([0, 0]);
    expect(storedMasks(fs, chain, 0)).toEqual([0, 0]);
    expect(await dev.extents(0, dev.size)).toEqual([{ offset: 0, length: dev.size, kind: 'hole', layer: -1 }]);
    expect((await readAll(dev)).every((b) => b === 0)).toBe(true);
    await dev.close();
  });

  test('zero with noHole stores zeros as data', async () => {
    const { dev } = await setup({ subBlocks: 16 });
    await dev.zero(BS, BS, { noHole: true });
    expect(await dev.extents(BS, BS)).toEqual([{ offset: BS, length: BS, kind: 'data', layer: 0 }]);
    expect((await readAll(dev, BS, BS)).every((b) => b === 0)).toBe(true);
    await dev.close();
  });

  test('zero with noHole and fastZero is refused as UNSUPPORTED (it could only be done slowly)', async () => {
    const { dev } = await setup();
    await expect(dev.zero(0, BS, { noHole: true, fastZero: true })).rejects.toMatchObject({ code: ErrorCode.UNSUPPORTED });
    await dev.close();
  });

  test('a zero inside one 2 MiB sub-block longer than 1 MiB zeroes all of it', async () => {
    const fs = new MemoryFileSystem();
    const big = 2 * 1024 * 1024;
    const chain = await buildChain(fs, '/c', { depth: 2, base: 'raw', size: 3 * big, blockSize: big, subBlocks: 1, seed: 4 });
    const dev = (await openImage(chain.overlay, { fs })).device;
    const base = Buffer.alloc(3 * big, 0x5a);
    await dev.write(base, 0);
    await dev.zero(big + 100, 1536 * 1024);
    base.fill(0, big + 100, big + 100 + 1536 * 1024);
    expect((await readAll(dev)).equals(base)).toBe(true);
    await dev.close();
  });
});

describe('durability marks', () => {
  function headerOnDisk(fs: MemoryFileSystem, chain: Chain) {
    const bytes = fs.get(chain.overlay);
    const slots = [0, 4096].map((at) => decodeOverlayHeader(bytes.subarray(at, at + 4096), chain.overlay));
    return slots[0].generation > slots[1].generation ? slots[0] : slots[1];
  }

  test('the dirty flag is set on disk by the first write and cleared by close', async () => {
    const { fs, dev, chain } = await setup();
    expect(headerOnDisk(fs, chain).dirty).toBe(false);
    await dev.read(Buffer.alloc(100), 0);
    expect(headerOnDisk(fs, chain).dirty).toBe(false);
    await dev.write(Buffer.from('x'), 5);
    expect(headerOnDisk(fs, chain).dirty).toBe(true);
    await dev.close();
    expect(headerOnDisk(fs, chain).dirty).toBe(false);
  });

  test('a trim alone also sets the dirty flag', async () => {
    const { fs, dev, chain } = await setup();
    await dev.trim(0, BS);
    expect(headerOnDisk(fs, chain).dirty).toBe(true);
    await dev.close();
  });

  test('a read-only open never writes, not even the dirty flag', async () => {
    const { fs, dev, chain } = await setup();
    await dev.close();
    const before = fs.get(chain.overlay);
    const ro = (await openImage(chain.overlay, { fs, readOnly: true })).device;
    await readAll(ro);
    await expect(ro.write(Buffer.from('x'), 0)).rejects.toMatchObject({ code: ErrorCode.READ_ONLY });
    await expect(ro.trim(0, BS)).rejects.toMatchObject({ code: ErrorCode.READ_ONLY });
    await ro.flush();
    await ro.close();
    expect(fs.get(chain.overlay).equals(before)).toBe(true);
  });

  for (const [name, act] of [
    ['write', (d: BlockDevice) => d.write(Buffer.alloc(BS, 0x42), 3 * BS, { fua: true })],
    ['zero', (d: BlockDevice) => d.zero(3 * BS, BS, { fua: true })],
    ['trim', (d: BlockDevice) => d.trim(3 * BS, BS, { fua: true })],
  ] as const) {
    test(`a FUA ${name} is durable when answered: a crash right after keeps it`, async () => {
      const { fs, dev, chain } = await setup();
      await act(dev);
      fs.crash();
      const again = (await openImage(chain.overlay, { fs })).device;
      const back = await readAll(again, 3 * BS, BS);
      expect(back.every((b) => b === (name === 'write' ? 0x42 : 0))).toBe(true);
      await again.close();
    });
  }

  test('without a flush, a crash loses the write but the image still reads as before it', async () => {
    const { fs, dev, chain } = await setup();
    await dev.write(Buffer.alloc(BS, 0x42), 3 * BS);
    fs.crash();
    const again = (await openImage(chain.overlay, { fs })).device;
    expect((await readAll(again)).equals(chain.content)).toBe(true);
    await again.close();
  });

  test('a flush makes every answered write durable', async () => {
    const { fs, dev, chain } = await setup({ subBlocks: 16 });
    const expected = Buffer.from(chain.content);
    for (let i = 0; i < 6; i++) {
      const data = pattern(20 + i, 3000 + i * 5000);
      const at = i * 40000 + 123;
      await dev.write(data, at);
      data.copy(expected, at);
    }
    await dev.flush();
    fs.crash();
    const again = (await openImage(chain.overlay, { fs })).device;
    expect((await readAll(again)).equals(expected)).toBe(true);
    await again.close();
  });
});

describe('reads', () => {
  test('a run of blocks in the same state is read with one call, from the overlay or from the parent', async () => {
    const { fs, chain, dev: first } = await setup({ subBlocks: 16 });
    await first.write(pattern(30, 3 * BS), BS);
    await first.close();
    const watched = new WatchedFileSystem(fs);
    const { dev, parent } = await openDevice(watched, chain.overlay);
    await readAll(dev, BS, 3 * BS);
    expect(watched.readsOf(chain.overlay, dev.file.header.dataOffset)).toHaveLength(1);
    expect(parent!.reads).toBe(0);
    await readAll(dev, 4 * BS, 4 * BS);
    expect(parent!.reads).toBe(1);
    await dev.close();
  });

  test('extents tell which layer serves each range', async () => {
    const { dev } = await setup({ subBlocks: 16 });
    await dev.write(Buffer.alloc(BS, 1), 0);
    await dev.zero(BS, BS);
    const extents = await dev.extents(0, 3 * BS);
    expect(extents.slice(0, 2)).toEqual([
      { offset: 0, length: BS, kind: 'data', layer: 0 },
      { offset: BS, length: BS, kind: 'zero', layer: 0 },
    ]);
    expect(extents[2]).toMatchObject({ offset: 2 * BS, kind: 'data', layer: 1 });
    expect(dev.chain.map((l) => l.kind)).toEqual(['overlay', 'snapshot']);
    await dev.close();
  });

  test('a request reaching past the end of the disk is OUT_OF_RANGE and changes nothing, whichever map page it would land in', async () => {
    const { fs, chain, dev } = await setup();
    await dev.flush();
    const before = Buffer.from(fs.get(chain.overlay));
    const size = BLOCKS * BS;
    // Block 510 * 9 would have its map page (index 9) inside the data region, over block 0.
    for (const offset of [size - 1, size, 510 * 9 * BS]) {
      const requests: Array<[string, () => Promise<unknown>]> = [
        ['read', () => dev.read(Buffer.alloc(2), offset)],
        ['write', () => dev.write(Buffer.alloc(2, 5), offset)],
        ['zero', () => dev.zero(offset, SBS)],
        ['trim', () => dev.trim(offset, SBS)],
        ['extents', () => dev.extents(offset, 2)],
      ];
      for (const [what, request] of requests) {
        await expect(request(), `${what} at ${offset}`).rejects.toMatchObject({ code: ErrorCode.OUT_OF_RANGE });
      }
    }
    await dev.close();
    expect(fs.get(chain.overlay).equals(before)).toBe(true);
  });

  test('a closed device refuses requests with CLOSED', async () => {
    const { dev } = await setup();
    await dev.close();
    const err = await dev.read(Buffer.alloc(1), 0).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CowdiskError);
    expect(err).toMatchObject({ code: ErrorCode.CLOSED });
    await dev.close();
  });
});
