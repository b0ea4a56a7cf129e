/**
 * Hostile version 2 layers: the index lies (table entries whose offsets, lengths, kinds or frame
 * codes are impossible, directory entries that point anywhere, a header whose regions do not
 * fit), with every SHA-256 and CRC recomputed so the lie reaches the parser; frames rewritten so
 * they decode to fewer or more than 4 KiB; a directory or a table page whose SHA-256 fails.
 * Opened alone and as a parent, read whole and mapped, each must give a typed CowdiskError (or,
 * where the lie is only in the data, bytes that `check` then names by block), never another
 * exception, a hang, a read outside the file or an allocation the header asked for.
 */
import { describe, expect, test } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { checkImage } from '../../src/ops/check.js';
import { openImage } from '../../src/image/open.js';
import { cloneImage } from '../../src/ops/create.js';
import { type BlockContent, pattern, writeSnapshotLayer } from '../helpers/engine-chain.js';
import { resealSnapshot, snapshotRegions, v2Geometry } from '../helpers/engine-damage.js';
import { exercise, expectTyped } from '../helpers/engine-hostile.js';

const BS = 16384;
const SIZE = 8 * BS - 300;
const LAYER = '/v/base.snap';
const CLONE = '/v/clone.cow';

/** Frames of each kind in one block: lz4 text, random (raw), zeros, lz4 sparse. */
function mixedBlock(seed: number): Buffer {
  const text = Buffer.from(`frame ${seed} text `.repeat(400)).subarray(0, 4096);
  return Buffer.concat([text, pattern(3 * seed, 4096), Buffer.alloc(4096), pattern(3 * seed + 2, 4096)]);
}

/** A layer of framed blocks (1, 4, 7), a raw block (0), zero (2) and absent blocks, and a clone of it. */
async function fixture(): Promise<{ fs: MemoryFileSystem; entry: (block: number) => number; whole: Buffer }> {
  const fs = new MemoryFileSystem();
  const blocks = new Map<number, BlockContent>([
    [0, pattern(3, BS)],
    [1, mixedBlock(1)],
    [2, null],
    [4, mixedBlock(4)],
    [7, mixedBlock(7).subarray(0, SIZE - 7 * BS)],
  ]);
  await writeSnapshotLayer(fs, LAYER, { size: SIZE, blockSize: BS, parent: { kind: 'none' }, blocks, version: 2 });
  await cloneImage(LAYER, CLONE, { fs });
  const whole = fs.get(LAYER);
  const table = snapshotRegions(whole).tables[0][0];
  return { fs, whole, entry: (block) => table + 16 + block * v2Geometry(whole).entry };
}

/** Changes the layer, reseals every checksum, and expects a typed error both ways. */
async function expectRefused(change: (b: Buffer, f: Awaited<ReturnType<typeof fixture>>) => void, codes: string[], what: string): Promise<void> {
  const f = await fixture();
  const bytes = Buffer.from(f.whole);
  change(bytes, f);
  resealSnapshot(bytes);
  f.fs.put(LAYER, bytes);
  for (const top of [LAYER, CLONE]) {
    const { error, watched } = await exercise(f.fs, top);
    expectTyped(error, codes, LAYER, `${what} (opened from ${top})`);
    // Nothing the header or an entry claims is read or allocated beyond the file itself.
    expect(Math.max(...watched.reads.map((r) => r.length)), what).toBeLessThanOrEqual(bytes.length);
  }
}

describe('table entries that lie', () => {
  const u64 = (at: number, v: number | bigint) => (b: Buffer) => b.writeBigUInt64LE(BigInt(v), at);
  const cases: Array<[string, (b: Buffer, f: Awaited<ReturnType<typeof fixture>>) => void]> = [
    ['a framed block stored inside the header', (b, f) => u64(f.entry(1), 100)(b)],
    ['a framed block stored over the directory', (b, f) => u64(f.entry(1), 4096)(b)],
    ['a framed block stored in the table region', (b, f) => u64(f.entry(1), b.readBigUInt64LE(104))(b)],
    ['a raw block far past the end of the file', (b, f) => u64(f.entry(0), 2n ** 50n)(b)],
    ['a stored length the frame codes do not add up to', (b, f) => b.writeUInt32LE(b.readUInt32LE(f.entry(1) + 8) + 1, f.entry(1) + 8)],
    ['a raw block shorter than a block', (b, f) => b.writeUInt32LE(BS - 1, f.entry(0) + 8)],
    ['a raw block with frame codes', (b, f) => b.writeUInt16LE(4096, f.entry(0) + 48)],
    ['a frame code above 4096', (b, f) => b.writeUInt16LE(5000, f.entry(4) + 48 + 2)],
    ['a frame code of 65535, its length made to agree', (b, f) => {
      const e = f.entry(4);
      b.writeUInt32LE(b.readUInt32LE(e + 8) - b.readUInt16LE(e + 48) + 65535, e + 8);
      b.writeUInt16LE(65535, e + 48);
    }],
    ['a zero block with frame codes', (b, f) => b.writeUInt16LE(12, f.entry(2) + 48 + 4)],
    ['an absent block with an offset', (b, f) => u64(f.entry(3), 8192)(b)],
    ['an unknown kind', (b, f) => (b[f.entry(4) + 12] = 7)],
    ['a block past the end of the disk', (b, f) => (b[f.entry(9) + 12] = 1)],
  ];
  for (const [what, change] of cases) test(`${what} is CORRUPT`, () => expectRefused(change, [ErrorCode.CORRUPT], what));
});

describe('directory entries and headers that lie', () => {
  const dirEntry = 4096;
  const cases: Array<[string, (b: Buffer) => void, string[]]> = [
    ['a table page in the data region', (b) => b.writeBigUInt64LE(BigInt(4096 * 2), dirEntry), [ErrorCode.CORRUPT]],
    ['a table page running past the end of the file', (b) => b.writeBigUInt64LE(BigInt(b.length - 100), dirEntry), [ErrorCode.CORRUPT]],
    ['a page holding more blocks than the directory says', (b) => b.writeUInt32LE(b.readUInt32LE(dirEntry + 12) - 1, dirEntry + 12), [ErrorCode.CORRUPT]],
    ['a stored page said to hold no block', (b) => b.writeUInt32LE(0, dirEntry + 12), [ErrorCode.CORRUPT]],
    ['no page stored, yet a page digest', (b) => b.writeBigUInt64LE(0n, dirEntry), [ErrorCode.CORRUPT]],
    ['a table region before the data region', (b) => b.writeBigUInt64LE(4096n, 104), [ErrorCode.CORRUPT]],
    ['a table region past the end of the file', (b) => b.writeBigUInt64LE(BigInt(b.length + 1), 104), [ErrorCode.CORRUPT]],
    ['a file length longer than the file', (b) => b.writeBigUInt64LE(BigInt(b.length + 4096), 112), [ErrorCode.CORRUPT, ErrorCode.TRUNCATED]],
    ['a file length shorter than the file', (b) => b.writeBigUInt64LE(BigInt(b.length - 1), 112), [ErrorCode.CORRUPT]],
    ['a directory offset other than 4096', (b) => b.writeBigUInt64LE(8192n, 32), [ErrorCode.CORRUPT]],
    [
      'a disk of 2^31 blocks of 2 MiB (a directory of 96 MiB) in a small file',
      (b) => {
        b.writeBigUInt64LE(2n ** 52n, 16);
        b.writeUInt32LE(2 ** 21, 24);
        b.writeUInt32LE(2 ** 21, 28);
      },
      [ErrorCode.CORRUPT],
    ],
    ['frames of 8 KiB', (b) => b.writeUInt32LE(8192, 40), [ErrorCode.BAD_VERSION]],
  ];
  for (const [what, change, codes] of cases) test(`${what} is refused (${codes.join(' or ')})`, () => expectRefused(change, codes, what));
});

describe('checksums of the index', () => {
  test('a directory whose SHA-256 fails is CORRUPT at open, saying so', async () => {
    const f = await fixture();
    const bytes = Buffer.from(f.whole);
    bytes[4096 + 13] ^= 1;
    f.fs.put(LAYER, bytes);
    const { error } = await exercise(f.fs, CLONE);
    expectTyped(error, [ErrorCode.CORRUPT], LAYER, 'directory');
    expect((error as Error).message).toMatch(/directory.*SHA-256/);
  });

  test('a table page whose SHA-256 fails is CORRUPT on first use, naming its first block; check says so too', async () => {
    const f = await fixture();
    const [start, end] = snapshotRegions(f.whole).tables[0];
    for (let at = start; at < end; at += 9001) {
      const bytes = Buffer.from(f.whole);
      bytes[at] ^= 0x10;
      f.fs.put(LAYER, bytes);
      const { error } = await exercise(f.fs, CLONE);
      expectTyped(error, [ErrorCode.CORRUPT], LAYER, `table byte ${at - start}`);
      expect(error).toMatchObject({ block: 0 });
      const report = await checkImage(CLONE, { fs: f.fs });
      expect(report.problems).toContainEqual(expect.objectContaining({ code: ErrorCode.CORRUPT, path: LAYER, block: 0 }));
    }
  });
});

describe('frames that decode to the wrong size, or lie about what they hold', () => {
  /**
   * Replaces frame `frame` of block `block` by `stream` (an lz4 block), moving the frames after it
   * so that the block stays packed and every code and length agrees, then reseals: the lie is in
   * the frame alone.
   */
  function replaceFrame(b: Buffer, entry: number, frame: number, stream: Buffer): void {
    const frames = v2Geometry(b).frames;
    const offset = Number(b.readBigUInt64LE(entry));
    const codes = Array.from({ length: frames }, (_, i) => b.readUInt16LE(entry + 48 + 2 * i));
    const pieces: Buffer[] = [];
    let at = offset;
    for (const [i, code] of codes.entries()) {
      pieces.push(i === frame ? stream : Buffer.from(b.subarray(at, at + code)));
      at += code;
    }
    if (stream.length > codes[frame]) throw new Error('the replacement must not be longer than the frame it replaces');
    b.fill(0, offset, at);
    Buffer.concat(pieces).copy(b, offset);
    b.writeUInt16LE(stream.length, entry + 48 + 2 * frame);
    b.writeUInt32LE(at - offset - codes[frame] + stream.length, entry + 8);
  }

  // lz4 sequences (FORMAT.md: lz4's block format): a token (literals << 4 | match length - 4), literals, ...
  const tenBytes = Buffer.concat([Buffer.from([0xa0]), Buffer.alloc(10, 0x41)]);
  // One literal, then a match of offset 1 and 4 + 15 + 16 * 255 + 10 = 4109 bytes, then five literals.
  const tooLong = Buffer.concat([Buffer.from([0x1f, 0x42, 0x01, 0x00]), Buffer.alloc(16, 255), Buffer.from([10, 0x50]), Buffer.alloc(5, 0x43)]);
  const garbage = Buffer.from([0x00, 0xff, 0xff, 0x00]);

  for (const [what, stream] of [
    ['ten bytes', tenBytes],
    ['more than 4 KiB', tooLong],
    ['nothing lz4 can read', garbage],
  ] as const) {
    test(`a frame that decodes to ${what} is CORRUPT on read, naming block and frame; check names the block`, async () => {
      const f = await fixture();
      const bytes = Buffer.from(f.whole);
      // The largest lz4 frame of block 4, so that any of the streams fits in its place.
      const codes = Array.from({ length: 4 }, (_, i) => bytes.readUInt16LE(f.entry(4) + 48 + 2 * i));
      const frame = codes.reduce((best, c, i) => (c < 4096 && c > codes[best] ? i : best), 0);
      replaceFrame(bytes, f.entry(4), frame, stream);
      resealSnapshot(bytes);
      f.fs.put(LAYER, bytes);
      for (const top of [LAYER, CLONE]) {
        const { error } = await exercise(f.fs, top);
        expectTyped(error, [ErrorCode.CORRUPT], LAYER, `${what} from ${top}`);
        expect(error).toMatchObject({ block: 4 });
        expect((error as Error).message).toContain(`frame ${frame} of block 4`);
      }
      const report = await checkImage(CLONE, { fs: f.fs });
      expect(report.ok).toBe(false);
      expect(report.problems).toContainEqual(expect.objectContaining({ severity: 'error', code: ErrorCode.CORRUPT, path: LAYER, block: 4 }));
      // The server's synchronous read path (readNow) declines the frame rather than hand it out,
      // while it answers a sound frame of the same block; read still names the damage.
      const image = await openImage(CLONE, { fs: f.fs });
      await image.device.read(Buffer.alloc(BS), 0); // the table page and the chain's resolution, in memory
      const good = frame === 1 ? 3 : 1; // raw frames of mixedBlock
      const sound = Buffer.alloc(4096);
      expect(image.device.readNow!(sound, 4 * BS + good * 4096)).toBe(true);
      expect(sound.equals(mixedBlock(4).subarray(good * 4096, (good + 1) * 4096))).toBe(true);
      expect(image.device.readNow!(Buffer.alloc(4096), 4 * BS + frame * 4096)).toBe(false);
      await expect(image.device.read(Buffer.alloc(4096), 4 * BS + frame * 4096)).rejects.toMatchObject({ code: ErrorCode.CORRUPT, block: 4 });
      await image.close();
    });
  }

  test('frame codes that lie coherently (an lz4 frame called raw or zero, lengths agreeing) read as some bytes; check names the block', async () => {
    for (const [what, code] of [
      ['raw', 4096],
      ['zero', 0],
    ] as const) {
      const f = await fixture();
      const bytes = Buffer.from(f.whole);
      const e = f.entry(1);
      // Frame 0 of block 1 is lz4 text; its neighbours are unchanged, so only its own bytes lie.
      const old = bytes.readUInt16LE(e + 48);
      bytes.writeUInt16LE(code, e + 48);
      bytes.writeUInt32LE(bytes.readUInt32LE(e + 8) - old + code, e + 8);
      resealSnapshot(bytes);
      f.fs.put(LAYER, bytes);
      const { error } = await exercise(f.fs, CLONE);
      if (error !== undefined) expectTyped(error, [ErrorCode.CORRUPT], LAYER, what);
      const report = await checkImage(CLONE, { fs: f.fs });
      expect(report.problems, what).toContainEqual(expect.objectContaining({ severity: 'error', path: LAYER, block: 1 }));
    }
  });
});
