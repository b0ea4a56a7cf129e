/**
 * The sealed snapshot layer, format version 2: what SnapshotV2Writer writes is what FORMAT.md
 * says (read back by an independent reader, test/helpers/format-doc.ts) and what SnapshotV2File
 * reads, at every block size and across every frame edge, a partial last block included; the
 * layer digest is version 1's function of the content; a 4 KiB read reads and decodes one frame;
 * both frame codecs (the addon's and the portable one) write files the other reads. (The range
 * access contract is tested for both versions in range-access.test.ts.)
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { BlockKind, FRAME_SIZE } from '../../src/format/constants.js';
import { type FrameCodec, nativeCodec, portableCodec } from '../../src/format/frames.js';
import { SnapshotV2File } from '../../src/format/snapshot-v2-reader.js';
import { SnapshotV2Writer } from '../../src/format/snapshot-v2-writer.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { ErrorCode } from '../../src/errors.js';
import { WatchedFileSystem } from '../helpers/engine-files.js';
import { type DocBlock, docLayerDigest, docReadV2 } from '../helpers/format-doc.js';

const FILE = '/s/layer.snap';
const KiB = 1024;

function native(): FrameCodec {
  const codec = nativeCodec();
  if (!codec) throw new Error('the native addon is not built (or has no sealFrames): run `npm run build:native`');
  return codec;
}

/** Frames of every kind: text (lz4 pays), random (raw), zeros, and a few bytes in zeros. */
function frame(kind: 'text' | 'random' | 'zero' | 'sparse', seed: number): Buffer {
  if (kind === 'random') return randomBytes(FRAME_SIZE);
  if (kind === 'zero') return Buffer.alloc(FRAME_SIZE);
  if (kind === 'sparse') {
    const out = Buffer.alloc(FRAME_SIZE);
    out[seed % FRAME_SIZE] = 1 + (seed % 255);
    return out;
  }
  return Buffer.from(`frame ${seed}, compressible text; `.repeat(300)).subarray(0, FRAME_SIZE);
}

const KINDS = ['text', 'random', 'zero', 'sparse'] as const;

/**
 * A layer of six blocks: 0 random (stored raw), 1 frames of every kind in turn, 2 a zero entry,
 * 3 absent, 4 data that is all zeros (stored, not a zero entry: what a version 1 layer may hold),
 * 5 the partial last block (frames in turn, cut 100 bytes before its end).
 */
function sample(blockSize: number): { size: number; blocks: Map<number, DocBlock> } {
  const frames = blockSize / FRAME_SIZE;
  const mixed = (seed: number) => Buffer.concat(Array.from({ length: frames }, (_, f) => frame(KINDS[(f + seed) % 4], seed * 100 + f)));
  const size = 6 * blockSize - 100;
  const last = mixed(5);
  last.fill(0, blockSize - 100);
  return {
    size,
    blocks: new Map<number, DocBlock>([
      [0, randomBytes(blockSize)],
      [1, mixed(1)],
      [2, null],
      [4, Buffer.alloc(blockSize)],
      [5, last],
    ]),
  };
}

async function write(fs: MemoryFileSystem, blockSize: number, codec: FrameCodec, spec = sample(blockSize)) {
  const writer = await SnapshotV2Writer.create(fs, FILE, { size: spec.size, blockSize, parent: { kind: 'none' }, codec });
  for (const [block, data] of [...spec.blocks].sort((a, b) => a[0] - b[0])) await writer.add(block, data);
  const header = await writer.finish();
  return { ...spec, header };
}

function model(size: number, blockSize: number, blocks: Map<number, DocBlock>): Buffer {
  const disk = Buffer.alloc(size);
  for (const [block, data] of blocks) data?.copy(disk, block * blockSize, 0, Math.min(blockSize, size - block * blockSize));
  return disk;
}

describe('round trips', () => {
  for (const blockSize of [4 * KiB, 8 * KiB, 64 * KiB, 2048 * KiB]) {
    test(`${blockSize / KiB} KiB blocks: FORMAT.md's reader and SnapshotV2File read what was written, across every frame edge`, async () => {
      const fs = new MemoryFileSystem();
      const { size, blocks, header } = await write(fs, blockSize, native());
      const expected = model(size, blockSize, blocks);
      const doc = docReadV2(fs.get(FILE));
      expect(doc.disk.equals(expected)).toBe(true);
      expect(header.layerDigest.equals(docLayerDigest(size, blockSize, blocks))).toBe(true);
      const snap = await SnapshotV2File.open(fs, FILE);
      const whole = Buffer.alloc(size);
      await snap.read(whole, 0);
      expect(whole.equals(expected)).toBe(true);
      // Around every frame edge of the blocks the layer stores: one byte, a straddle, a whole frame, a piece.
      for (const block of [0, 1, 4, 5]) {
        for (let edge = block * blockSize; edge <= (block + 1) * blockSize && edge < size; edge += FRAME_SIZE) {
          for (const [from, length] of [[edge - 1, 2], [edge - 100, FRAME_SIZE + 200], [edge, FRAME_SIZE], [edge + 17, 1000], [edge + 1, FRAME_SIZE - 1]]) {
            const start = Math.max(block * blockSize, from);
            const end = Math.min(size, (block + 1) * blockSize, start + length);
            if (end <= start) continue;
            const got = Buffer.alloc(end - start);
            await snap.read(got, start);
            expect(got.equals(expected.subarray(start, end)), `${blockSize}: [${start}, ${end})`).toBe(true);
          }
        }
      }
      await snap.close();
    });
  }

  test('blocks become zero entries, raw blocks, or framed blocks whose codes say each frame: zero, raw or lz4', async () => {
    const fs = new MemoryFileSystem();
    const bs = 64 * KiB;
    await write(fs, bs, native());
    const { entries, tableOffset } = docReadV2(fs.get(FILE));
    expect(entries.get(0)).toMatchObject({ kind: BlockKind.RAW, length: bs });
    expect((entries.get(0)?.offset ?? 1) % 4096).toBe(0);
    expect(entries.get(2)).toMatchObject({ kind: BlockKind.ZERO, length: 0 });
    expect(entries.has(3)).toBe(false);
    // All zeros, but stored: every frame a zero frame, nothing in the file.
    expect(entries.get(4)).toMatchObject({ kind: BlockKind.LZ4, length: 0, codes: new Array(16).fill(0) });
    const mixed = entries.get(1);
    expect(mixed?.kind).toBe(BlockKind.LZ4);
    for (const [f, code] of (mixed?.codes ?? []).entries()) {
      const kind = KINDS[(f + 1) % 4];
      if (kind === 'zero') expect(code, `frame ${f}`).toBe(0);
      else if (kind === 'random') expect(code, `frame ${f}`).toBe(4096);
      else expect(code, `frame ${f} (${kind})`).toBeGreaterThan(0);
      if (kind !== 'zero' && kind !== 'random') expect(code).toBeLessThanOrEqual(3840);
    }
    for (const e of entries.values()) if (e.kind >= 2) expect(e.offset + e.length).toBeLessThanOrEqual(tableOffset);
  });

  test('the portable codec and the addon write files the other reads, with the same digest', async () => {
    const bs = 16 * KiB;
    const spec = sample(bs);
    const expected = model(spec.size, bs, spec.blocks);
    const digests = [];
    for (const [writer, reader] of [
      [portableCodec, native()],
      [native(), portableCodec],
    ]) {
      const fs = new MemoryFileSystem();
      const { header } = await write(fs, bs, writer, spec);
      digests.push(header.layerDigest.toString('hex'));
      const snap = await SnapshotV2File.open(fs, FILE, reader);
      const back = Buffer.alloc(spec.size);
      await snap.read(back, 0);
      expect(back.equals(expected), `${writer.name} -> ${reader.name}`).toBe(true);
      expect(docReadV2(fs.get(FILE)).disk.equals(expected)).toBe(true);
    }
    expect(digests[0]).toBe(digests[1]);
  });
});

describe('frame codecs', () => {
  // lz4 block streams (token: literals << 4 | match length - 4): ten literals; a match of 4109 bytes; garbage.
  const hostile = [
    Buffer.concat([Buffer.from([0xa0]), Buffer.alloc(10, 0x41)]),
    Buffer.concat([Buffer.from([0x1f, 0x42, 0x01, 0x00]), Buffer.alloc(16, 255), Buffer.from([10, 0x50]), Buffer.alloc(5, 0x43)]),
    Buffer.from([0x00, 0xff, 0xff, 0x00]),
    Buffer.alloc(0),
  ];

  for (const codec of [portableCodec, native()]) {
    test(`${codec.name}: a frame decodes only to exactly 4 KiB; shorter, longer and broken streams are refused`, async () => {
      const text = frame('text', 9);
      const sealed = await codec.seal(Buffer.concat([text, frame('random', 1)]), 1, 2 * FRAME_SIZE);
      expect([sealed.codes[1], sealed.lengths[0]]).toEqual([4096, sealed.codes[0] + 4096]);
      const dst = Buffer.alloc(FRAME_SIZE, 0xee);
      expect(codec.decode(sealed.packed.subarray(0, sealed.codes[0]), dst)).toBe(true);
      expect(dst.equals(text)).toBe(true);
      for (const [i, stream] of hostile.entries()) expect(codec.decode(stream, Buffer.alloc(FRAME_SIZE)), `stream ${i}`).toBe(false);
    });
  }
});

describe('reading', () => {
  /** Counts decode calls by wrapping a codec. */
  function counted(codec: FrameCodec) {
    const calls = { decode: 0 };
    const wrapped: FrameCodec = { ...codec, seal: codec.seal.bind(codec), decode: (src, dst) => (calls.decode++, codec.decode(src, dst)) };
    return { calls, codec: wrapped };
  }

  test('opening reads the header and the directory, right after it, and nothing else', async () => {
    const fs = new MemoryFileSystem();
    await write(fs, 64 * KiB, native());
    const watched = new WatchedFileSystem(fs);
    const snap = await SnapshotV2File.open(watched, FILE);
    expect(watched.reads.map((r) => [r.pos, r.length])).toEqual([
      [0, 4096],
      [4096, 48],
    ]);
    expect(snap.directoryRange()).toEqual({ offset: 4096, length: 48 });
  });

  test('a 4 KiB read of an lz4 frame reads that frame alone and decodes it once; of a raw frame, one pread and no decode', async () => {
    const fs = new MemoryFileSystem();
    const bs = 64 * KiB;
    await write(fs, bs, native());
    const watched = new WatchedFileSystem(fs);
    const { calls, codec } = counted(native());
    const snap = await SnapshotV2File.open(watched, FILE, codec);
    await snap.page(0);
    const { entries } = docReadV2(fs.get(FILE));
    const codes = entries.get(1)?.codes ?? [];
    const lz4 = codes.findIndex((c) => c > 0 && c < 4096);
    const raw = codes.indexOf(4096);
    for (const [f, decodes] of [
      [lz4, 1],
      [raw, 0],
    ]) {
      watched.forget();
      calls.decode = 0;
      await snap.read(Buffer.alloc(FRAME_SIZE), bs + f * FRAME_SIZE);
      const start = (entries.get(1)?.offset ?? 0) + codes.slice(0, f).reduce((a, b) => a + b, 0);
      expect(watched.reads.map((r) => [r.pos, r.length]), `frame ${f}`).toEqual([[start, codes[f]]]);
      expect(calls.decode).toBe(decodes);
    }
  });

  test('a framed block read whole is one pread of its stored bytes', async () => {
    const fs = new MemoryFileSystem();
    const bs = 64 * KiB;
    await write(fs, bs, native());
    const watched = new WatchedFileSystem(fs);
    const snap = await SnapshotV2File.open(watched, FILE);
    await snap.page(0);
    watched.forget();
    await snap.readBlock(1);
    const entry = docReadV2(fs.get(FILE)).entries.get(1);
    expect(watched.reads.map((r) => [r.pos, r.length])).toEqual([[entry?.offset, entry?.length]]);
  });
});

describe('writing', () => {
  test('the side file of table pages is gone after finish and after abort; a crash before finish leaves nothing', async () => {
    const fs = new MemoryFileSystem();
    await write(fs, 4 * KiB, native());
    expect(fs.list('/s')).toEqual([FILE]);
    const writer = await SnapshotV2Writer.create(fs, '/s/other.snap', { size: 3 * 1024 * 4 * KiB, blockSize: 4 * KiB, parent: { kind: 'none' } });
    for (let b = 0; b < 2048; b += 3) await writer.add(b, frame('text', b));
    await writer.abort();
    expect(fs.list('/s')).toEqual([FILE]);
    const crashing = await SnapshotV2Writer.create(fs, '/s/third.snap', { size: 3 * 1024 * 4 * KiB, blockSize: 4 * KiB, parent: { kind: 'none' } });
    for (let b = 0; b < 2048; b += 3) await crashing.add(b, frame('random', b));
    fs.crash({ keep: 'random', random: () => 0.9 });
    expect(fs.list('/s')).toEqual([FILE]);
  });

  test('many table pages come out behind the data, in page order, whatever held them meanwhile', async () => {
    const fs = new MemoryFileSystem();
    const bs = 4 * KiB;
    const blocks = new Map<number, DocBlock>();
    for (let b = 0; b < 5 * 1024; b += 7) blocks.set(b, b % 2 ? frame('text', b) : frame('random', b));
    for (let b = 3 * 1024; b < 4 * 1024; b++) blocks.set(b, null);
    const size = 5 * 1024 * bs;
    const { header } = await write(fs, bs, native(), { size, blocks });
    const doc = docReadV2(fs.get(FILE));
    expect(doc.disk.equals(model(size, bs, blocks))).toBe(true);
    expect(header.layerDigest.equals(docLayerDigest(size, bs, blocks))).toBe(true);
    // Page 3 is all zeros: its directory entry says so and no page is stored.
    const bytes = fs.get(FILE);
    expect(bytes.readBigUInt64LE(4096 + 3 * 48)).toBe(0n);
    expect(bytes.readUInt32LE(4096 + 3 * 48 + 12)).toBe(1024);
    expect(bytes.length).toBe(header.tableOffset + 4 * (16 + 1024 * 50));
  });

  test('the data is synced while the writing goes on; a sync that fails fails the layer, leaving nothing', async () => {
    const fs = new MemoryFileSystem();
    const bs = 64 * KiB;
    const syncs: number[] = [];
    let written = 0;
    fs.inject = (op) => {
      if (op.op === 'write' && op.path.endsWith('.partial-' + process.pid)) written++;
      if (op.op === 'sync' && op.path === `${FILE}.partial-${process.pid}`) {
        syncs.push(written);
        return syncs.length === 1 ? new Error('injected ENOSPC') : undefined;
      }
      return undefined;
    };
    const writer = await SnapshotV2Writer.create(fs, FILE, { size: 2048 * bs, blockSize: bs, parent: { kind: 'none' }, codec: native() });
    const block = randomBytes(bs);
    let failure: unknown;
    try {
      for (let b = 0; b < 2048; b++) await writer.add(b, block);
      await writer.finish();
    } catch (err) {
      failure = err;
      await writer.abort();
    }
    // 128 MiB of data: the first sync starts in the middle of it (before the last write), and fails.
    expect(syncs[0]).toBeLessThan(written);
    expect(failure).toMatchObject({ code: ErrorCode.IO });
    expect(String((failure as Error).message)).toContain('injected ENOSPC');
    expect(fs.list('/s')).toEqual([]);
  });

  test('replace publishes over an existing layer; without it an existing layer is never replaced', async () => {
    const fs = new MemoryFileSystem();
    await write(fs, 4 * KiB, native());
    await expect(SnapshotV2Writer.create(fs, FILE, { size: 4096, blockSize: 4096, parent: { kind: 'none' } })).rejects.toMatchObject({ code: ErrorCode.EXISTS });
    const writer = await SnapshotV2Writer.create(fs, FILE, { size: 4096, blockSize: 4096, parent: { kind: 'none' }, replace: true });
    await writer.add(0, frame('text', 1));
    await writer.finish();
    expect(docReadV2(fs.get(FILE)).disk.equals(frame('text', 1))).toBe(true);
  });
});
