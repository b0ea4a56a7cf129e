/**
 * The sealed snapshot layer, format version 1 (readable forever; written only by tests since
 * version 2): what SnapshotWriter writes, SnapshotFile reads back; lz4 is used only
 * where it saves; zero blocks store nothing; the layer digest is FORMAT.md's formula over content
 * only; and every table entry and compressed block is checked before it is trusted (a hostile lz4
 * size prefix is refused before the decompressor sees it, which is observed by counting calls to
 * lz4-napi's uncompressSync through a mock that forwards to the real one).
 */
import * as lz4Real from 'lz4-napi';
import { beforeEach, describe, expect, test, vi } from 'vitest';
import { CowdiskError, ErrorCode } from '../../src/errors.js';
import { BlockKind, TABLE_ENTRIES_PER_PAGE } from '../../src/format/constants.js';
import { SnapshotFile } from '../../src/format/snapshot-reader.js';
import { SnapshotWriter } from '../../src/format/snapshot-writer.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { importRaw } from '../../src/ops/import.js';
import { type BlockContent, pattern, putFile, writeSnapshotLayer } from '../helpers/engine-chain.js';
import { resealSnapshot, snapshotRegions } from '../helpers/engine-damage.js';
import { WatchedFileSystem } from '../helpers/engine-files.js';
import { docLayerDigest } from '../helpers/format-doc.js';

const lz4 = vi.hoisted(() => ({ compress: true, uncompressCalls: 0 }));

vi.mock('lz4-napi', async (importOriginal) => {
  const real = await importOriginal<typeof import('lz4-napi')>();
  return {
    ...real,
    // With compression "off", lz4 never pays, so every block is stored raw.
    compress: async (data: Buffer) => (lz4.compress ? real.compress(data) : Buffer.alloc(data.length + 16)),
    compressSync: (data: Buffer) => (lz4.compress ? real.compressSync(data) : Buffer.alloc(data.length + 16)),
    uncompressSync: (data: Buffer) => {
      lz4.uncompressCalls++;
      return real.uncompressSync(data);
    },
  };
});

beforeEach(() => {
  lz4.compress = true;
  lz4.uncompressCalls = 0;
});

const BS = 16384;
const SIZE = 7 * BS - 100;
const FILE = '/s/layer.snap';

/** Blocks of every kind: random (raw), patterned (lz4), zero, sparse, absent (3), a partial last block. */
function sampleBlocks(): Map<number, BlockContent> {
  return new Map<number, BlockContent>([
    [0, pattern(3, BS)],
    [1, pattern(4, BS)],
    [2, null],
    [4, pattern(5, BS)],
    [5, pattern(6, BS)],
    [6, pattern(9, SIZE - 6 * BS)],
  ]);
}

async function written(blocks = sampleBlocks(), fs = new MemoryFileSystem()) {
  const ref = await writeSnapshotLayer(fs, FILE, { size: SIZE, blockSize: BS, parent: { kind: 'none' }, blocks, version: 1 });
  return { fs, ref, blocks };
}

function padded(data: Buffer): Buffer {
  const out = Buffer.alloc(BS);
  data.copy(out);
  return out;
}

async function reopen(fs: MemoryFileSystem | WatchedFileSystem = new MemoryFileSystem()) {
  return SnapshotFile.open(fs, FILE);
}

describe('round trip', () => {
  test('every block reads back as written; blocks never added are absent', async () => {
    const { fs, blocks } = await written();
    const snap = await reopen(fs);
    const page = await snap.page(0);
    expect(page).not.toBeNull();
    if (!page) return;
    for (let b = 0; b < 7; b++) {
      const data = blocks.get(b);
      if (data === undefined) {
        expect(page.kinds[b]).toBe(BlockKind.ABSENT);
        continue;
      }
      const back = await snap.readBlock(b);
      expect(back.equals(data ? padded(data) : Buffer.alloc(BS)), `block ${b}`).toBe(true);
    }
    await snap.close();
  });

  test('lz4 is kept exactly where it saves at least 1/16 of the block', async () => {
    const { fs, blocks } = await written();
    const snap = await reopen(fs);
    const page = await snap.page(0);
    if (!page) throw new Error('no table page');
    const kinds = new Set<number>();
    for (const [b, data] of blocks) {
      if (!data) continue;
      const pays = lz4Real.compressSync(padded(data)).length <= BS * (15 / 16);
      expect(page.kinds[b], `block ${b}`).toBe(pays ? BlockKind.LZ4 : BlockKind.RAW);
      expect(page.lengths[b]).toBe(pays ? lz4Real.compressSync(padded(data)).length : BS);
      kinds.add(page.kinds[b]);
    }
    // The sample really has both.
    expect(kinds).toEqual(new Set([BlockKind.LZ4, BlockKind.RAW]));
  });

  test('zero blocks store nothing; raw blocks start on 4 KiB; the header counts what is stored', async () => {
    const { fs, blocks } = await written();
    const snap = await reopen(fs);
    const page = await snap.page(0);
    if (!page) throw new Error('no table page');
    expect([page.kinds[2], page.offsets[2], page.lengths[2]]).toEqual([BlockKind.ZERO, 0, 0]);
    let bytes = 0;
    for (const [b, data] of blocks) {
      if (!data) continue;
      bytes += page.lengths[b];
      if (page.kinds[b] === BlockKind.RAW) expect(page.offsets[b] % 4096).toBe(0);
    }
    expect(snap.header.storedBlocks).toBe(5);
    expect(snap.header.dataBytes).toBe(bytes);
    expect(snap.heldBlocks()).toBe(6);
  });

  test('a layer of absent blocks only has no table page at all', async () => {
    const { fs } = await written(new Map());
    const snap = await reopen(fs);
    expect(snap.pageKind(0)).toBe('absent');
    expect(await snap.page(0)).toBeNull();
    expect(await snap.kinds(0, 7)).toBeNull();
    expect(snap.header.storedBlocks).toBe(0);
  });

  test('opening reads the header and the directory only', async () => {
    const { fs } = await written();
    const watched = new WatchedFileSystem(fs);
    const snap = await reopen(watched);
    expect(watched.reads.map((r) => [r.pos, r.length])).toEqual([
      [0, 4096],
      [snap.header.dirOffset, 16],
    ]);
  });

  test('a table page is read once, however many of its blocks are used', async () => {
    const blocks = new Map<number, BlockContent>([
      [0, pattern(1, BS)],
      [TABLE_ENTRIES_PER_PAGE + 1, pattern(2, BS)],
      [TABLE_ENTRIES_PER_PAGE + 5, null],
    ]);
    const fs = new MemoryFileSystem();
    await writeSnapshotLayer(fs, FILE, { size: 3 * TABLE_ENTRIES_PER_PAGE * BS, blockSize: BS, parent: { kind: 'none' }, blocks, version: 1 });
    const watched = new WatchedFileSystem(fs);
    const snap = await reopen(watched);
    watched.forget();
    await Promise.all([snap.page(1), snap.page(1)]);
    await snap.page(1);
    expect(snap.pageKind(2)).toBe('absent');
    await snap.page(2);
    expect(watched.reads.length).toBe(1);
    expect(watched.reads[0].length).toBe(16 + 1024 * 48);
  });
});

describe('layer digest', () => {
  test("is FORMAT.md's formula over the layer's blocks", async () => {
    const { fs, blocks } = await written();
    const snap = await reopen(fs);
    expect(snap.header.layerDigest.equals(docLayerDigest(SIZE, BS, blocks))).toBe(true);
    expect(snap.digest).toBe(`sha256:${docLayerDigest(SIZE, BS, blocks).toString('hex')}`);
  });

  test('importing the same raw file twice gives the same digest', async () => {
    const fs = new MemoryFileSystem();
    const raw = Buffer.concat([pattern(11, 3 * BS), Buffer.alloc(BS), pattern(13, BS + 5)]);
    await putFile(fs, '/s/disk.raw', raw);
    const a = await importRaw('/s/disk.raw', '/s/a.snap', { blockSize: BS, fs });
    const b = await importRaw('/s/disk.raw', '/s/b.snap', { blockSize: BS, fs });
    expect(a.digest).toBe(b.digest);
  });

  test('does not depend on compression or on where blocks sit in the file', async () => {
    const first = await written();
    const compressed = await reopen(first.fs);
    lz4.compress = false;
    const second = await written();
    const plain = await reopen(second.fs);
    // The files differ (every block raw and placed differently), the identity does not.
    expect(plain.header.dataBytes).toBe(5 * BS);
    expect(compressed.header.dataBytes).toBeLessThan(5 * BS);
    expect(first.fs.get(FILE).equals(second.fs.get(FILE))).toBe(false);
    expect(plain.header.layerDigest.equals(compressed.header.layerDigest)).toBe(true);
  });

  test('changes when one byte of content changes, when a zero block becomes absent, and with the geometry', async () => {
    const base = docLayerDigest(SIZE, BS, sampleBlocks());
    const oneByte = sampleBlocks();
    (oneByte.get(4) as Buffer)[100] ^= 1;
    const fewer = sampleBlocks();
    fewer.delete(2);
    const { fs } = await written(oneByte);
    expect((await reopen(fs)).header.layerDigest.equals(base)).toBe(false);
    const { fs: fs2 } = await written(fewer);
    expect((await reopen(fs2)).header.layerDigest.equals(base)).toBe(false);
    expect(docLayerDigest(SIZE + 1, BS, sampleBlocks()).equals(base)).toBe(false);
  });
});

describe('compressed blocks are checked before they are trusted', () => {
  async function lz4Block() {
    const { fs } = await written();
    const bytes = fs.get(FILE);
    const [offset, end, block] = snapshotRegions(bytes).blocks.find(([, , , kind]) => kind === BlockKind.LZ4) ?? [0, 0, 0];
    return { fs, bytes, offset, end, block };
  }

  async function readBlock(fs: MemoryFileSystem, block: number): Promise<unknown> {
    const snap = await reopen(fs);
    return snap.readBlock(block).catch((e: unknown) => e);
  }

  test('an intact compressed block goes through the decompressor (the call counter sees it)', async () => {
    const { fs, block } = await lz4Block();
    lz4.uncompressCalls = 0;
    expect(await readBlock(fs, block)).toBeInstanceOf(Buffer);
    expect(lz4.uncompressCalls).toBe(1);
  });

  test('a size prefix other than the block size is CORRUPT, refused before decompressing', async () => {
    for (const prefix of [0xfffffff0, BS + 1, BS - 1, 0]) {
      const { fs, bytes, offset, block } = await lz4Block();
      bytes.writeUInt32LE(prefix, offset);
      fs.put(FILE, bytes);
      lz4.uncompressCalls = 0;
      const err = await readBlock(fs, block);
      expect(err).toBeInstanceOf(CowdiskError);
      expect(err).toMatchObject({ code: ErrorCode.CORRUPT, block, path: FILE });
      expect(lz4.uncompressCalls, `prefix ${prefix}`).toBe(0);
    }
  });

  test('a damaged compressed body is CORRUPT or reads as some bytes, never an exception of another kind', async () => {
    for (let at = 4; at < 64; at += 3) {
      const { fs, bytes, offset, end, block } = await lz4Block();
      if (offset + at >= end) break;
      bytes[offset + at] ^= 0xff;
      fs.put(FILE, bytes);
      const result = await readBlock(fs, block);
      if (result instanceof Error) expect(result).toMatchObject({ code: ErrorCode.CORRUPT, block });
      else expect((result as Buffer).length).toBe(BS);
    }
  });
});

describe('table entries are bounds-checked', () => {
  /** Changes block `block`'s table entry (of page 0), reseals every checksum, reads the block. */
  async function withEntry(block: number, change: (bytes: Buffer, entry: number, dirOffset: number) => void) {
    const { fs } = await written();
    const bytes = fs.get(FILE);
    const regions = snapshotRegions(bytes);
    const entry = regions.tables[0][0] + 16 + block * 48;
    change(bytes, entry, regions.directory[0]);
    resealSnapshot(bytes);
    fs.put(FILE, bytes);
    const snap = await reopen(fs);
    return Promise.resolve(snap.page(0)).catch((e: unknown) => e);
  }

  const cases: Array<[string, number, (b: Buffer, e: number, dir: number) => void]> = [
    ['an absent block with an offset', 3, (b, e) => b.writeBigUInt64LE(4096n, e)],
    ['a zero block with a length', 2, (b, e) => b.writeUInt32LE(10, e + 8)],
    ['a raw block whose length is not the block size', 0, (b, e) => b.writeUInt32LE(BS - 1, e + 8)],
    ['an lz4 block of 4 bytes (a prefix and nothing)', 1, (b, e) => b.writeUInt32LE(4, e + 8)],
    ['an lz4 block as long as the block', 1, (b, e) => b.writeUInt32LE(BS, e + 8)],
    ['data inside the header', 0, (b, e) => b.writeBigUInt64LE(0n, e)],
    ['data running into the directory', 0, (b, e, dir) => b.writeBigUInt64LE(BigInt(dir - BS + 1), e)],
    ['data far past the end of the file', 1, (b, e) => b.writeBigUInt64LE(2n ** 52n, e)],
    ['an unknown kind', 4, (b, e) => (b[e + 12] = 9)],
    ['a block past the end of the disk', 7, (b, e) => (b[e + 12] = BlockKind.ZERO)],
  ];
  for (const [what, block, change] of cases) {
    test(`${what} is CORRUPT, naming the block`, async () => {
      const err = await withEntry(block, change);
      expect(err).toBeInstanceOf(CowdiskError);
      expect(err).toMatchObject({ code: ErrorCode.CORRUPT, block, path: FILE });
      expect((err as Error).message).toContain(`block ${block}`);
    });
  }

  test('a table page that fails its checksum is CORRUPT at first use, naming the first block of the page', async () => {
    const { fs } = await written();
    const bytes = fs.get(FILE);
    bytes[snapshotRegions(bytes).tables[0][0] + 100] ^= 1;
    fs.put(FILE, bytes);
    const snap = await reopen(fs);
    await expect(Promise.resolve(snap.page(0))).rejects.toMatchObject({ code: ErrorCode.CORRUPT, block: 0, path: FILE });
  });

  test('a damaged directory is CORRUPT at open', async () => {
    const { fs } = await written();
    const bytes = fs.get(FILE);
    bytes[snapshotRegions(bytes).directory[0] + 3] ^= 1;
    fs.put(FILE, bytes);
    await expect(reopen(fs)).rejects.toMatchObject({ code: ErrorCode.CORRUPT, path: FILE });
  });

  test('a directory entry pointing past the end of the file is CORRUPT at first use, with no read outside the file', async () => {
    const { fs } = await written();
    const bytes = fs.get(FILE);
    bytes.writeBigUInt64LE(BigInt(bytes.length - 100), snapshotRegions(bytes).directory[0]);
    resealSnapshot(bytes);
    fs.put(FILE, bytes);
    const watched = new WatchedFileSystem(fs);
    const snap = await reopen(watched);
    await expect(Promise.resolve(snap.page(0))).rejects.toMatchObject({ code: ErrorCode.CORRUPT, block: 0 });
    expect(watched.outside).toEqual([]);
  });
});

describe('writing', () => {
  test('blocks must be added once each, in order, and be exactly one block long', async () => {
    const fs = new MemoryFileSystem();
    const writer = await SnapshotWriter.create(fs, FILE, { size: SIZE, blockSize: BS, parent: { kind: 'none' } });
    await writer.add(2, null);
    await expect(writer.add(2, null)).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    await expect(writer.add(1, null)).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    await expect(writer.add(7, null)).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    await expect(writer.add(3, Buffer.alloc(BS - 1))).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    await writer.abort();
  });

  test('nothing appears at the final path before finish; a crash before it leaves no layer', async () => {
    const fs = new MemoryFileSystem();
    const writer = await SnapshotWriter.create(fs, FILE, { size: SIZE, blockSize: BS, parent: { kind: 'none' } });
    await writer.add(0, pattern(1, BS));
    expect(await fs.exists(FILE)).toBe(false);
    fs.crash({ keep: 'random', random: () => 0.9 });
    expect(fs.list('/s')).toEqual([]);
  });

  test('a finished layer survives a crash whole', async () => {
    const { fs, blocks } = await written();
    fs.crash();
    const snap = await reopen(fs);
    expect(snap.header.layerDigest.equals(docLayerDigest(SIZE, BS, blocks))).toBe(true);
    expect(fs.list('/s')).toEqual([FILE]);
  });

  test('a layer of more than 2^31 blocks is INVALID_ARGUMENT before any file is made', async () => {
    const fs = new MemoryFileSystem();
    await expect(SnapshotWriter.create(fs, FILE, { size: 2 ** 31 * BS + 1, blockSize: BS, parent: { kind: 'none' } })).rejects.toMatchObject({
      code: ErrorCode.INVALID_ARGUMENT,
      path: FILE,
    });
    expect(fs.list('/s')).toEqual([]);
  });

  test('abort removes the temporary file; an existing layer is never replaced', async () => {
    const fs = new MemoryFileSystem();
    const writer = await SnapshotWriter.create(fs, FILE, { size: SIZE, blockSize: BS, parent: { kind: 'none' } });
    await writer.abort();
    expect(fs.list('/s')).toEqual([]);
    await written(new Map(), fs);
    await expect(SnapshotWriter.create(fs, FILE, { size: SIZE, blockSize: BS, parent: { kind: 'none' } })).rejects.toMatchObject({
      code: ErrorCode.EXISTS,
      path: FILE,
    });
  });
});
