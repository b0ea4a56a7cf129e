/**
 * Hostile files: truncated at many lengths, bytes flipped in every structure (both overlay header
 * slots, state-map pages, the snapshot header, directory, table pages, compressed and raw blocks),
 * wrong magic or version, parents that changed kind. Each must give a typed CowdiskError with a
 * stable code and a message naming the file, never another exception, a hang, or a read outside
 * the file: every file is read through WatchedFileSystem, which records reads past a file's end,
 * and which also shows that nothing is left open when opening fails.
 */
import { describe, expect, test } from 'vitest';
import { CowdiskError, ErrorCode } from '../../src/errors.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { checkImage } from '../../src/ops/check.js';
import { openImage } from '../../src/image/open.js';
import { type Chain, type LayerVersion, buildChain, pattern, writeSnapshotLayer } from '../helpers/engine-chain.js';
import { resealOverlay, resealSnapshot, snapshotRegions, v2Geometry } from '../helpers/engine-damage.js';
import { cutPoints, damaged, exercise, expectTyped } from '../helpers/engine-hostile.js';

const BS = 4096;
const SIZE = 24 * BS;

/** An overlay over a snapshot over a snapshot base (of format `version`); the overlay holds data and zero blocks. */
async function fixture(version: LayerVersion = 2): Promise<{ fs: MemoryFileSystem; chain: Chain }> {
  const fs = new MemoryFileSystem();
  const chain = await buildChain(fs, '/h', { depth: 3, base: 'snapshot', size: SIZE, blockSize: BS, subBlocks: 1, seed: 21, version });
  const image = (await openImage(chain.overlay, { fs })).device;
  await image.write(pattern(1, 5 * BS + 100), 3 * BS);
  await image.zero(10 * BS, 2 * BS);
  await image.close();
  return { fs, chain };
}

describe('truncated files', () => {
  test('an overlay cut at any length is TRUNCATED, naming it', async () => {
    const { fs, chain } = await fixture();
    const whole = fs.get(chain.overlay);
    for (const length of cutPoints(whole.length, [4096, 8192, 16384])) {
      fs.put(chain.overlay, whole.subarray(0, length));
      const { error } = await exercise(fs, chain.overlay);
      expectTyped(error, [ErrorCode.TRUNCATED], chain.overlay, `overlay cut to ${length} bytes`);
    }
  });

  for (const version of [1, 2] as const) {
    test(`a version ${version} snapshot layer cut at any length is TRUNCATED, opened itself or as a parent`, async () => {
      const { fs, chain } = await fixture(version);
      for (const layer of chain.sealed) {
        const whole = fs.get(layer);
        const r = snapshotRegions(whole);
        expect(r.version).toBe(version);
        for (const length of cutPoints(whole.length, [4096, r.directory[0], r.directory[1], ...r.tables.map((t) => t[0]), ...r.blocks.map((b) => b[0])])) {
          fs.put(layer, whole.subarray(0, length));
          expectTyped((await exercise(fs, layer)).error, [ErrorCode.TRUNCATED], layer, `layer cut to ${length} bytes`);
          expectTyped((await exercise(fs, chain.overlay)).error, [ErrorCode.TRUNCATED], layer, `parent cut to ${length} bytes`);
        }
        fs.put(layer, whole);
      }
    });
  }

  test('a snapshot parent cut below the size of a magic is no longer a snapshot: PARENT_CHANGED', async () => {
    const { fs, chain } = await fixture();
    damaged(fs, chain.sealed[0], (b) => b.subarray(0, 5));
    expectTyped((await exercise(fs, chain.overlay)).error, [ErrorCode.PARENT_CHANGED], chain.sealed[0], 'parent cut to 5 bytes');
  });
});

describe('overlay headers', () => {
  const offsets = [0, 7, 8, 12, 16, 24, 28, 32, 40, 44, 48, 56, 64, 80, 88, 100, 128, 132, 136, 144, 160, 256, 300, 2000, 4092, 4095];

  test('a byte flipped anywhere in one header slot leaves the overlay readable from the other', async () => {
    const { fs, chain } = await fixture();
    const whole = fs.get(chain.overlay);
    for (const slot of [0, 1]) {
      for (const at of offsets) {
        fs.put(chain.overlay, whole);
        damaged(fs, chain.overlay, (b) => void (b[slot * 4096 + at] ^= 0x5a));
        const { error } = await exercise(fs, chain.overlay);
        expect(error, `slot ${slot} byte ${at}`).toBeUndefined();
      }
    }
  });

  test('a byte flipped in both slots is a typed error naming the overlay (CORRUPT, or BAD_VERSION for the version)', async () => {
    const { fs, chain } = await fixture();
    const whole = fs.get(chain.overlay);
    for (const at of offsets.filter((o) => o >= 8)) {
      fs.put(chain.overlay, whole);
      damaged(fs, chain.overlay, (b) => {
        b[at] ^= 0x5a;
        b[4096 + at] ^= 0x5a;
      });
      const { error } = await exercise(fs, chain.overlay);
      expectTyped(error, at === 8 || at === 12 ? [ErrorCode.BAD_VERSION] : [ErrorCode.CORRUPT], chain.overlay, `both slots, byte ${at}`);
    }
  });

  test('a newer format version in both slots (checksums intact) is BAD_VERSION, saying to use a newer cowdisk', async () => {
    const { fs, chain } = await fixture();
    damaged(fs, chain.overlay, (b) => {
      b.writeUInt32LE(2, 8);
      b.writeUInt32LE(2, 4096 + 8);
      resealOverlay(b);
    });
    const { error } = await exercise(fs, chain.overlay);
    expectTyped(error, [ErrorCode.BAD_VERSION], chain.overlay, 'version 2');
    expect((error as Error).message).toMatch(/newer cowdisk/);
  });

  test('an overlay whose first slot is wiped and whose second is damaged is CORRUPT, never a raw disk; --format raw opens it as one', async () => {
    const { fs, chain } = await fixture();
    damaged(fs, chain.overlay, (b) => {
      b.fill(0, 0, 4096);
      b[4096 + 40] ^= 0x10;
    });
    const { error } = await exercise(fs, chain.overlay);
    expectTyped(error, [ErrorCode.CORRUPT], chain.overlay, 'slot 0 wiped, slot 1 damaged');
    expect((error as Error).message).toMatch(/not a raw disk/);
    expect((error as Error).message).toMatch(/--format raw/);
    expect((await checkImage(chain.overlay, { fs })).problems.map((p) => p.code)).toEqual([ErrorCode.CORRUPT]);
    const image = await openImage(chain.overlay, { fs, format: 'raw' });
    expect([image.kind, image.device.capabilities.writable]).toEqual(['raw', false]);
    await image.close();
  });

  test('an overlay whose magic is gone from both slots still shows its first state-map page: CORRUPT, not raw', async () => {
    const { fs, chain } = await fixture();
    damaged(fs, chain.overlay, (b) => {
      b[0] ^= 1;
      b[4096] ^= 1;
    });
    const { error } = await exercise(fs, chain.overlay);
    expectTyped(error, [ErrorCode.CORRUPT], chain.overlay, 'both magics gone');
    expect((error as Error).message).toMatch(/state-map page/);
  });

  test('a raw disk with no cowdisk structure where an overlay keeps them opens as raw, as before', async () => {
    const fs = new MemoryFileSystem();
    const bytes = pattern(3, 8 * BS);
    bytes.write('COWDISKO', 3 * BS); // the magic, but not where a header slot is
    fs.put('/h/plain.raw', bytes);
    const image = await openImage('/h/plain.raw', { fs });
    expect(image.kind).toBe('raw');
    await image.close();
  });
});

describe('state map pages', () => {
  test('one damaged copy of a map page: the other is used; both damaged: reading its blocks is CORRUPT, naming file and block', async () => {
    const { fs, chain } = await fixture();
    const whole = fs.get(chain.overlay);
    for (const at of [0, 4, 8, 12, 16, 16 + 8 * 3, 16 + 8 * 10 + 4, 4095]) {
      fs.put(chain.overlay, whole);
      damaged(fs, chain.overlay, (b) => void (b[8192 + at] ^= 0x81));
      expect((await exercise(fs, chain.overlay)).error, `one copy, byte ${at}`).toBeUndefined();
      damaged(fs, chain.overlay, (b) => void (b[8192 + 4096 + at] ^= 0x81));
      const { error } = await exercise(fs, chain.overlay);
      expectTyped(error, [ErrorCode.CORRUPT], chain.overlay, `both copies, byte ${at}`);
      expect((error as CowdiskError).block).toBe(0);
    }
  });

  test('a torn first write of a map page (one copy never written, the other damaged) reads as absent; check --repair rewrites it, after which check finds nothing', async () => {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/h', { depth: 2, base: 'snapshot', size: SIZE, blockSize: BS, subBlocks: 1, seed: 22 });
    // The fresh clone has never written its map; a first write torn by a crash leaves part of a page in one slot.
    damaged(fs, chain.overlay, (b) => void b.writeUInt32LE(0x504d4443, 8192 + 4096));
    expect((await exercise(fs, chain.overlay)).error).toBeUndefined();
    const before = await checkImage(chain.overlay, { fs });
    expect(before.problems).toEqual([expect.objectContaining({ severity: 'warning', code: ErrorCode.CORRUPT, block: 0 })]);
    const repair = await checkImage(chain.overlay, { fs, repair: true });
    expect(repair.repaired.join(' ')).toContain('state map page 0');
    expect((await checkImage(chain.overlay, { fs })).problems).toEqual([]);
    const image = (await openImage(chain.overlay, { fs, readOnly: true })).device;
    const back = Buffer.alloc(SIZE);
    await image.read(back, 0);
    await image.close();
    expect(back.equals(chain.content)).toBe(true);
  });

  test('a map page with impossible masks in both copies (checksums intact) is CORRUPT, and check names it', async () => {
    const { fs, chain } = await fixture();
    damaged(fs, chain.overlay, (b) => {
      for (const slot of [0, 4096]) b.writeUInt32LE(1, 8192 + slot + 16 + 8 * 3 + 4);
      resealOverlay(b);
    });
    expectTyped((await exercise(fs, chain.overlay)).error, [ErrorCode.CORRUPT], chain.overlay, 'present and zero');
    const report = await checkImage(chain.overlay, { fs });
    expect(report.ok).toBe(false);
    expect(report.problems).toContainEqual(expect.objectContaining({ severity: 'error', code: ErrorCode.CORRUPT, path: chain.overlay, block: 0 }));
  });
});

for (const version of [1, 2] as const) describe(`snapshot layers, format version ${version}`, () => {
  for (const role of ['itself', 'as a parent'] as const) {
    const target = (chain: Chain) => (role === 'itself' ? chain.sealed[0] : chain.overlay);

    test(`opened ${role}: a flipped header byte is CORRUPT (BAD_VERSION for the version), naming the layer`, async () => {
      const { fs, chain } = await fixture(version);
      const layer = chain.sealed[0];
      const whole = fs.get(layer);
      const v2Fields = version === 2 ? [100, 104, 112, 2304, 2335] : [];
      for (const at of [8, 12, 16, 24, 28, 32, 40, 44, 48, 80, 96, 128, 136, 160, 256, ...v2Fields, 4092]) {
        fs.put(layer, whole);
        damaged(fs, layer, (b) => void (b[at] ^= 0x24));
        const { error } = await exercise(fs, target(chain));
        expectTyped(error, at === 8 || at === 12 ? [ErrorCode.BAD_VERSION] : [ErrorCode.CORRUPT], layer, `header byte ${at}`);
      }
    });

    test(`opened ${role}: a flipped directory byte is CORRUPT, naming the layer`, async () => {
      const { fs, chain } = await fixture(version);
      const layer = chain.sealed[0];
      damaged(fs, layer, (b) => void (b[snapshotRegions(b).directory[0] + 9] ^= 0x10));
      expectTyped((await exercise(fs, target(chain))).error, [ErrorCode.CORRUPT], layer, 'directory');
    });

    test(`opened ${role}: a flipped table page byte is CORRUPT on first use, naming the layer`, async () => {
      const { fs, chain } = await fixture(version);
      const layer = chain.sealed[0];
      const whole = fs.get(layer);
      const [start, end] = snapshotRegions(whole).tables[0];
      for (let at = start; at < end; at += 4099) {
        fs.put(layer, whole);
        damaged(fs, layer, (b) => void (b[at] ^= 0x42));
        expectTyped((await exercise(fs, target(chain))).error, [ErrorCode.CORRUPT], layer, `table byte ${at - start}`);
      }
    });
  }

  test('a layer whose magic is gone is not a snapshot any more: as a parent, PARENT_CHANGED', async () => {
    const { fs, chain } = await fixture(version);
    damaged(fs, chain.sealed[0], (b) => void (b[3] ^= 0x20));
    expectTyped((await exercise(fs, chain.overlay)).error, [ErrorCode.PARENT_CHANGED], chain.sealed[0], 'magic');
  });

  test('a flipped byte in a stored block reads as some bytes or is CORRUPT; check names that block', async () => {
    const { fs, chain } = await fixture(version);
    const layer = chain.sealed[0];
    const whole = fs.get(layer);
    const blocks = snapshotRegions(whole).blocks;
    expect(new Set(blocks.map((b) => b[3]))).toEqual(new Set([2, 3]));
    for (const [start, end, block, kind] of blocks) {
      for (const at of [start + 2, start + 5, Math.floor((start + end) / 2), end - 1]) {
        fs.put(layer, whole);
        damaged(fs, layer, (b) => void (b[at] ^= 0x3c));
        const { error } = await exercise(fs, chain.overlay);
        if (error !== undefined) expectTyped(error, [ErrorCode.CORRUPT], layer, `block ${block} (kind ${kind}) byte ${at - start}`);
        const report = await checkImage(chain.overlay, { fs });
        expect(report.ok, `check of block ${block} byte ${at - start}`).toBe(false);
        expect(report.problems.some((p) => p.severity === 'error' && p.path === layer && p.block === block)).toBe(true);
      }
    }
  });

  test('a parent replaced by a layer of another block size is PARENT_CHANGED, naming it', async () => {
    const { fs, chain } = await fixture(version);
    const size = SIZE;
    await fs.unlink(chain.sealed[0]);
    await writeSnapshotLayer(fs, chain.sealed[0], { size, blockSize: 2 * BS, parent: { kind: 'none' }, blocks: new Map() });
    expectTyped((await exercise(fs, chain.overlay)).error, [ErrorCode.PARENT_CHANGED], chain.sealed[0], 'block size');
  });

  test('damage that keeps every checksum valid (table entries rewritten and resealed) is still CORRUPT, never a read outside the file', async () => {
    const { fs, chain } = await fixture(version);
    const layer = chain.sealed[0];
    const whole = fs.get(layer);
    const table = snapshotRegions(whole).tables[0][0];
    const entry = version === 2 ? v2Geometry(whole).entry : 48;
    for (let slot = 0; slot < 24; slot++) {
      for (const [field, value] of [
        [0, 2n ** 40n],
        [0, BigInt(whole.length - 10)],
        [8, 0xffffffffn],
        [12, 7n],
      ] as const) {
        fs.put(layer, whole);
        damaged(fs, layer, (b) => {
          const e = table + 16 + slot * entry;
          if (field === 0) b.writeBigUInt64LE(value, e);
          else if (field === 8) b.writeUInt32LE(Number(value), e + 8);
          else b[e + 12] = Number(value);
          resealSnapshot(b);
        });
        const { error } = await exercise(fs, chain.overlay);
        if (error !== undefined) expectTyped(error, [ErrorCode.CORRUPT], layer, `entry ${slot} field ${field}`);
      }
    }
  });
});
