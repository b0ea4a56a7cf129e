/**
 * The sealed part of a chain served as one device. Which layer serves a block is resolved once per
 * 1024-block page (a table page read per layer that has blocks there, at most once), so a read
 * costs the same at depth 1 or 16: that is asserted by counting file reads per layer.
 */
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import type { ParentRef } from '../../src/format/header.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { openImage } from '../../src/image/open.js';
import { SealedChain } from '../../src/image/sealed-chain.js';
import { type BlockContent, Random, pattern, putFile, rawRef, relativeTo, writeSnapshotLayer } from '../helpers/engine-chain.js';
import { WatchedFileSystem } from '../helpers/engine-files.js';

const BS = 4096;
const PAGE = 1024;

interface Built {
  fs: MemoryFileSystem;
  top: string;
  files: string[];
  content: Buffer;
}

/**
 * A raw base under `depth - 1` snapshot layers; each layer holds a random third of the blocks
 * (data or zero). Blocks span two table pages so resolution works per page.
 */
async function deepChain(depth: number, blocks = PAGE + 200, seed = 1): Promise<Built> {
  const fs = new MemoryFileSystem();
  const rng = new Random(seed);
  const size = blocks * BS;
  const content = pattern(seed * 7 + 3, size);
  await putFile(fs, '/d/base.raw', content);
  let below: Extract<ParentRef, { kind: 'raw' | 'snapshot' }> = await rawRef(fs, '/d/base.raw');
  const files = ['/d/base.raw'];
  for (let level = 1; level < depth; level++) {
    const file = path.join('/d', `layer${level}.snap`);
    const layer = new Map<number, BlockContent>();
    for (let b = 0; b < blocks; b++) {
      const roll = rng.below(9);
      if (roll > 2) continue;
      const data = roll === 0 ? null : pattern(rng.below(1 << 30), BS);
      layer.set(b, data);
      if (data) data.copy(content, b * BS);
      else content.fill(0, b * BS, (b + 1) * BS);
    }
    below = await writeSnapshotLayer(fs, file, { size, blockSize: BS, parent: relativeTo(file, below), blocks: layer });
    files.unshift(file);
  }
  return { fs, top: files[0], files, content };
}

async function readAll(dev: { size: number; read(b: Buffer, o: number): Promise<void> }): Promise<Buffer> {
  const buf = Buffer.alloc(dev.size);
  await dev.read(buf, 0);
  return buf;
}

describe('resolution', () => {
  test('a 16-deep chain reads as its layers laid over each other', async () => {
    const built = await deepChain(16);
    const dev = (await openImage(built.top, { fs: built.fs })).device;
    expect(dev.chain).toHaveLength(16);
    expect((await readAll(dev)).equals(built.content)).toBe(true);
    await dev.close();
  });

  test("reading through a 16-deep chain touches each layer's table page at most once per page", async () => {
    const built = await deepChain(16);
    const fs = new WatchedFileSystem(built.fs);
    const dev = (await openImage(built.top, { fs })).device;
    fs.forget();
    for (let pass = 0; pass < 3; pass++) {
      for (let b = 0; b < dev.size / BS; b += 3) await dev.read(Buffer.alloc(BS + 100), Math.min(b * BS + 50, dev.size - BS - 100));
    }
    // FORMAT.md: a version 2 table page at 4 KiB blocks, 16 + 1024 entries of 48 bytes and one frame code.
    const tableReads = fs.reads.filter((r) => r.length === 16 + 1024 * 50);
    const perPage = new Map<string, number>();
    for (const r of tableReads) perPage.set(`${r.path}@${r.pos}`, (perPage.get(`${r.path}@${r.pos}`) ?? 0) + 1);
    expect([...perPage.values()].every((n) => n === 1)).toBe(true);
    // 15 snapshot layers, two table pages each (the raw base has none).
    expect(perPage.size).toBe(15 * 2);
    await dev.close();
  });

  test('once a page is resolved, a read costs the same number of file reads at depth 2 as at depth 16', async () => {
    const costs: number[] = [];
    for (const depth of [2, 16]) {
      const built = await deepChain(depth, 64, 5);
      const fs = new WatchedFileSystem(built.fs);
      const dev = (await openImage(built.top, { fs })).device;
      await dev.read(Buffer.alloc(BS), 0);
      let reads = 0;
      for (let b = 0; b < 64; b++) {
        fs.forget();
        await dev.read(Buffer.alloc(BS), b * BS);
        reads = Math.max(reads, fs.reads.length);
      }
      costs.push(reads);
      await dev.close();
    }
    expect(costs[1]).toBe(costs[0]);
    expect(costs[0]).toBeLessThanOrEqual(1);
  });

  test('a layer with no blocks in a page costs no table page read there', async () => {
    const fs = new MemoryFileSystem();
    const size = 3 * PAGE * BS;
    await putFile(fs, '/d/base.raw', pattern(1, size));
    const base = await rawRef(fs, '/d/base.raw');
    const mid = await writeSnapshotLayer(fs, '/d/mid.snap', { size, blockSize: BS, parent: relativeTo('/d/mid.snap', base), blocks: new Map([[5, null]]) });
    await writeSnapshotLayer(fs, '/d/top.snap', { size, blockSize: BS, parent: relativeTo('/d/top.snap', mid), blocks: new Map([[2 * PAGE + 1, pattern(2, BS)]]) });
    const watched = new WatchedFileSystem(fs);
    const dev = (await openImage('/d/top.snap', { fs: watched })).device;
    watched.forget();
    await dev.read(Buffer.alloc(BS), PAGE * BS + 7 * BS);
    expect(watched.reads.map((r) => r.path)).toEqual(['/d/base.raw']);
    await dev.close();
  });

  test('blocks stored raw and adjacent in one layer are read with one call', async () => {
    const fs = new MemoryFileSystem();
    const size = 16 * BS;
    const blocks = new Map<number, BlockContent>();
    for (let b = 2; b < 10; b++) blocks.set(b, pattern(3 * b, BS));
    await writeSnapshotLayer(fs, '/d/top.snap', { size, blockSize: BS, parent: { kind: 'none' }, blocks });
    const watched = new WatchedFileSystem(fs);
    const dev = (await openImage('/d/top.snap', { fs: watched })).device;
    await dev.read(Buffer.alloc(BS), 0);
    watched.forget();
    await dev.read(Buffer.alloc(8 * BS), 2 * BS);
    expect(watched.reads).toHaveLength(1);
    await dev.close();
  });
});

describe('extents and writes', () => {
  test('extents name the layer serving each block: data, zero (a whiteout) or a hole', async () => {
    const fs = new MemoryFileSystem();
    const size = 6 * BS;
    const bottom = await writeSnapshotLayer(fs, '/d/bottom.snap', {
      size,
      blockSize: BS,
      parent: { kind: 'none' },
      blocks: new Map([
        [0, pattern(1, BS)],
        [1, pattern(2, BS)],
      ]),
    });
    await writeSnapshotLayer(fs, '/d/top.snap', {
      size,
      blockSize: BS,
      parent: relativeTo('/d/top.snap', bottom),
      blocks: new Map<number, BlockContent>([
        [1, null],
        [3, pattern(3, BS)],
      ]),
    });
    const dev = (await openImage('/d/top.snap', { fs })).device;
    expect(await dev.extents(0, size)).toEqual([
      { offset: 0, length: BS, kind: 'data', layer: 1 },
      { offset: BS, length: BS, kind: 'zero', layer: 0 },
      { offset: 2 * BS, length: BS, kind: 'hole', layer: -1 },
      { offset: 3 * BS, length: BS, kind: 'data', layer: 0 },
      { offset: 4 * BS, length: 2 * BS, kind: 'hole', layer: -1 },
    ]);
    expect(dev.chain.map((l) => [l.kind, l.path])).toEqual([
      ['snapshot', '/d/top.snap'],
      ['snapshot', '/d/bottom.snap'],
    ]);
    await dev.close();
  });

  test('a sealed chain refuses write, zero and trim as READ_ONLY and says it cannot flush', async () => {
    const built = await deepChain(3, 8);
    const dev = (await openImage(built.top, { fs: built.fs })).device;
    expect(dev).toBeInstanceOf(SealedChain);
    expect(dev.capabilities.writable).toBe(false);
    await expect(dev.write(Buffer.alloc(1), 0)).rejects.toMatchObject({ code: ErrorCode.READ_ONLY });
    await expect(dev.zero(0, 1)).rejects.toMatchObject({ code: ErrorCode.READ_ONLY });
    await expect(dev.trim(0, 1)).rejects.toMatchObject({ code: ErrorCode.READ_ONLY });
    await dev.close();
  });

  test('a read or extents reaching past the end of the disk is OUT_OF_RANGE, not zeros', async () => {
    const built = await deepChain(3, 8);
    const dev = (await openImage(built.top, { fs: built.fs })).device;
    for (const offset of [dev.size - 1, dev.size, 2 ** 30]) {
      await expect(dev.read(Buffer.alloc(2), offset), `read at ${offset}`).rejects.toMatchObject({ code: ErrorCode.OUT_OF_RANGE });
      await expect(dev.extents(offset, 2), `extents at ${offset}`).rejects.toMatchObject({ code: ErrorCode.OUT_OF_RANGE });
    }
    await dev.close();
  });
});
