/**
 * The overlay's state map: per-block present/zero masks in 4 KiB pages, each page with two slots
 * (A/B) so that a write torn by a power cut leaves the previous version. Expected page bytes are
 * built here from docs/FORMAT.md ("State map page"), independently of the encoder.
 */
import { crc32 } from 'node:zlib';
import { describe, expect, test } from 'vitest';
import { CowdiskError, ErrorCode } from '../../src/errors.js';
import { MAP_ENTRIES_PER_PAGE } from '../../src/format/constants.js';
import { type SlotState, StateMap, chooseSlot } from '../../src/format/state-map.js';
import type { FileOperation } from '../../src/io/memory-file.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { WatchedFileSystem } from '../helpers/engine-files.js';

const MAP_OFFSET = 8192;
const FILE = '/m/overlay';

/** docs/FORMAT.md: magic, crc of bytes 8..4095, page index, generation, 510 x (present, zero). */
function docPage(index: number, gen: number, entries: Record<number, [number, number]>): Buffer {
  const b = Buffer.alloc(4096);
  b.writeUInt32LE(0x504d4443, 0);
  b.writeUInt32LE(index, 8);
  b.writeUInt32LE(gen, 12);
  for (const [slot, [present, zero]] of Object.entries(entries)) {
    b.writeUInt32LE(present >>> 0, 16 + 8 * Number(slot));
    b.writeUInt32LE(zero >>> 0, 20 + 8 * Number(slot));
  }
  b.writeUInt32LE(crc32(b.subarray(8)) >>> 0, 4);
  return b;
}

async function setup(pages = 2, blocks = 2 * MAP_ENTRIES_PER_PAGE - 7, subBlocks = 16) {
  const fs = new MemoryFileSystem();
  const file = await fs.create(FILE);
  await file.truncate(MAP_OFFSET + pages * 8192);
  await file.sync();
  await fs.syncDir('/m');
  const map = () => new StateMap(file, MAP_OFFSET, pages, blocks, subBlocks);
  return { fs, file, map };
}

function slotBytes(fs: MemoryFileSystem, index: number, slot: number): Buffer {
  const at = MAP_OFFSET + index * 8192 + slot * 4096;
  return fs.get(FILE).subarray(at, at + 4096);
}

async function setBlock(map: StateMap, block: number, present: number, zero: number): Promise<void> {
  const page = await map.page(block);
  page.set(block, present, zero);
}

describe('choosing a slot', () => {
  const masks = new Uint32Array(2 * MAP_ENTRIES_PER_PAGE);
  const valid = (gen: number): SlotState => ({ kind: 'valid', gen, masks });
  const empty: SlotState = { kind: 'empty' };
  const invalid: SlotState = { kind: 'invalid', why: 'checksum mismatch' };

  test('of two valid slots, the higher generation wins, whichever slot holds it', () => {
    expect(chooseSlot([valid(3), valid(4)])).toEqual(valid(4));
    expect(chooseSlot([valid(6), valid(5)])).toEqual(valid(6));
  });

  test('generations are u32 and wrap: 0 is newer than 0xffffffff (the two copies always hold consecutive ones)', () => {
    expect(chooseSlot([valid(0), valid(0xffffffff)])).toEqual(valid(0));
    expect(chooseSlot([valid(0xfffffffe), valid(0xffffffff)])).toEqual(valid(0xffffffff));
  });

  test('a valid slot beats an empty or a damaged one', () => {
    expect(chooseSlot([invalid, valid(1)])).toEqual(valid(1));
    expect(chooseSlot([valid(2), empty])).toEqual(valid(2));
  });

  test('no valid slot but an empty one means a page never (completely) written: every block absent', () => {
    expect(chooseSlot([empty, empty])).toEqual(empty);
    expect(chooseSlot([invalid, empty])).toEqual(empty);
  });

  test('two damaged slots leave nothing to believe', () => {
    expect(chooseSlot([invalid, invalid])).toBeUndefined();
  });
});

describe('decoding a slot', () => {
  test("FORMAT.md's bytes decode to their masks", async () => {
    const { map } = await setup();
    const state = map().decodeSlot(docPage(1, 9, { 0: [0xffff, 0], 3: [0x00f0, 0x0f00] }), 1);
    expect(state.kind).toBe('valid');
    if (state.kind !== 'valid') return;
    expect(state.gen).toBe(9);
    expect([state.masks[0], state.masks[1], state.masks[6], state.masks[7]]).toEqual([0xffff, 0, 0x00f0, 0x0f00]);
  });

  const refused: Array<[string, () => Buffer]> = [
    ['a bad magic', () => docPage(0, 1, {}).fill(1, 0, 1)],
    ['a checksum mismatch', () => docPage(0, 1, { 2: [1, 0] }).fill(3, 16, 17)],
    ["another page's index", () => docPage(1, 1, {})],
    ['a sub-block both present and zero', () => docPage(0, 1, { 5: [0b11, 0b10] })],
    ['a bit at or above the sub-block count', () => docPage(0, 1, { 5: [1 << 16, 0] })],
    ['an entry for a block past the end of the disk', () => docPage(1, 1, { [MAP_ENTRIES_PER_PAGE - 1]: [1, 0] })],
  ];
  for (const [what, bytes] of refused) {
    test(`a slot with ${what} is invalid`, async () => {
      const { map } = await setup();
      const index = what.includes('past the end') ? 1 : 0;
      expect(map().decodeSlot(bytes(), index).kind).toBe('invalid');
    });
  }

  test('a slot of zero bytes is empty', async () => {
    const { map } = await setup();
    expect(map().decodeSlot(Buffer.alloc(4096), 0)).toEqual({ kind: 'empty' });
  });
});

describe('on disk', () => {
  test("a page's first write lands as FORMAT.md's bytes, mirrored to the other slot as the next generation", async () => {
    const { fs, map } = await setup();
    const m = map();
    await setBlock(m, 2, 0x000f, 0x00f0);
    await m.persist();
    expect(slotBytes(fs, 0, 1).equals(docPage(0, 1, { 2: [0x000f, 0x00f0] }))).toBe(true);
    expect(slotBytes(fs, 0, 0).equals(docPage(0, 2, { 2: [0x000f, 0x00f0] }))).toBe(true);
  });

  test('the mirror of a first write needs no sync: lost in a crash, the first copy stands', async () => {
    const { fs, map } = await setup();
    const m = map();
    await setBlock(m, 2, 1, 0);
    await m.persist();
    fs.crash();
    const file = await fs.open(FILE);
    const again = new StateMap(file, MAP_OFFSET, 2, 2 * MAP_ENTRIES_PER_PAGE - 7, 16);
    expect(slotBytes(fs, 0, 0).every((b) => b === 0)).toBe(true);
    expect((await again.page(2)).present(2)).toBe(1);
  });

  test('after generation 0xffffffff a page is written as generation 0, to the other slot, and is the current version', async () => {
    const { fs, file, map } = await setup();
    await file.write(docPage(0, 0xfffffffe, { 3: [1, 0] }), MAP_OFFSET);
    await file.write(docPage(0, 0xffffffff, { 3: [3, 0] }), MAP_OFFSET + 4096);
    const m = map();
    await setBlock(m, 3, 7, 0);
    await m.persist();
    expect(slotBytes(fs, 0, 0).equals(docPage(0, 0, { 3: [7, 0] }))).toBe(true);
    expect((await map().page(3)).present(3)).toBe(7);
    await setBlock(m, 3, 0xf, 0);
    await m.persist();
    expect(slotBytes(fs, 0, 1).equals(docPage(0, 1, { 3: [0xf, 0] }))).toBe(true);
    expect((await map().page(3)).present(3)).toBe(0xf);
  });

  test('later versions alternate slots: each write goes to the slot not holding the durable version', async () => {
    const { fs, map } = await setup();
    const m = map();
    for (let v = 1; v <= 4; v++) {
      await setBlock(m, 0, v, 0);
      await m.persist();
    }
    // Versions: 1 -> slot 1 (+ mirror 2 -> slot 0), then 3 -> slot 1, 4 -> slot 0, 5 -> slot 1.
    expect(slotBytes(fs, 0, 1).equals(docPage(0, 5, { 0: [4, 0] }))).toBe(true);
    expect(slotBytes(fs, 0, 0).equals(docPage(0, 4, { 0: [3, 0] }))).toBe(true);
  });

  test('a torn write of the newest version falls back to the previous version in the other slot', async () => {
    const { fs, map } = await setup();
    const m = map();
    await setBlock(m, 7, 0x1, 0);
    await m.persist();
    await setBlock(m, 7, 0x3, 0);
    await m.persist();
    const newest = slotBytes(fs, 0, 1);
    expect(newest.readUInt32LE(12)).toBe(3);
    // Tear: only the first 512-byte sector of the newest version reached the disk.
    const file = await fs.open(FILE);
    await file.write(Buffer.concat([newest.subarray(0, 512), Buffer.alloc(3584, 0xee)]), MAP_OFFSET + 4096);
    const again = new StateMap(file, MAP_OFFSET, 2, 2 * MAP_ENTRIES_PER_PAGE - 7, 16);
    expect((await again.page(7)).present(7)).toBe(0x1);
  });

  test('a page with both slots damaged cannot be read: CORRUPT, naming the file and the first block of the page', async () => {
    const { file, map } = await setup();
    await file.write(Buffer.alloc(8192, 0x77), MAP_OFFSET + 8192);
    const err = await map()
      .page(MAP_ENTRIES_PER_PAGE + 3)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CowdiskError);
    expect(err).toMatchObject({ code: ErrorCode.CORRUPT, path: FILE, block: MAP_ENTRIES_PER_PAGE });
    expect((err as Error).message).toContain(FILE);
  });

  test('nothing is read until a block is touched, and then only its own page, once', async () => {
    const { fs } = await setup(4, 4 * MAP_ENTRIES_PER_PAGE);
    const watched = new WatchedFileSystem(fs);
    const file = await watched.open(FILE);
    const m = new StateMap(file, MAP_OFFSET, 4, 4 * MAP_ENTRIES_PER_PAGE, 16);
    expect(watched.reads).toEqual([]);
    await Promise.all([m.page(2 * MAP_ENTRIES_PER_PAGE + 1), m.page(2 * MAP_ENTRIES_PER_PAGE + 300)]);
    await m.page(2 * MAP_ENTRIES_PER_PAGE + 509);
    expect(watched.reads).toEqual([{ path: FILE, pos: MAP_OFFSET + 2 * 8192, length: 8192 }]);
  });

  test('a page never written reads as every block absent', async () => {
    const { map } = await setup();
    const page = await map().page(600);
    expect(page.masks.every((m) => m === 0)).toBe(true);
  });
});

describe('persist (the flush sequence)', () => {
  test('the data is synced before any map page is written, and the pages are synced after', async () => {
    const { fs, map } = await setup();
    const m = map();
    await setBlock(m, 1, 1, 0);
    await setBlock(m, MAP_ENTRIES_PER_PAGE + 1, 2, 0);
    const ops: FileOperation[] = [];
    fs.inject = (op) => {
      ops.push(op);
      return undefined;
    };
    await m.persist();
    const kinds = ops.map((op) => (op.op === 'write' ? `write ${op.pos}` : op.op));
    expect(kinds.slice(0, 4)).toEqual(['sync', `write ${MAP_OFFSET + 4096}`, `write ${MAP_OFFSET + 8192 + 4096}`, 'sync']);
    // Then the mirrors, unsynced.
    expect(kinds.slice(4)).toEqual([`write ${MAP_OFFSET}`, `write ${MAP_OFFSET + 8192}`]);
  });

  test('a page changed while a persist runs stays dirty for the next one', async () => {
    const { fs, map } = await setup();
    const m = map();
    await setBlock(m, 1, 1, 0);
    fs.yieldEvery = true;
    const running = m.persist();
    await new Promise((resolve) => setImmediate(resolve));
    await setBlock(m, 2, 4, 0);
    await running;
    expect(m.hasDirty()).toBe(true);
    await m.persist();
    expect(m.hasDirty()).toBe(false);
    const file = await fs.open(FILE);
    const again = new StateMap(file, MAP_OFFSET, 2, 2 * MAP_ENTRIES_PER_PAGE - 7, 16);
    expect((await again.page(2)).present(2)).toBe(4);
  });

  test('a failed persist keeps the pages dirty, and the next one writes them', async () => {
    const { fs, map } = await setup();
    const m = map();
    await setBlock(m, 1, 1, 0);
    let fail = true;
    fs.inject = (op) => (fail && op.op === 'sync' ? Object.assign(new Error('disk gone'), { code: 'EIO' }) : undefined);
    await expect(m.persist()).rejects.toMatchObject({ code: ErrorCode.IO });
    expect(m.hasDirty()).toBe(true);
    fail = false;
    await m.persist();
    fs.crash();
    const file = await fs.open(FILE);
    const again = new StateMap(file, MAP_OFFSET, 2, 2 * MAP_ENTRIES_PER_PAGE - 7, 16);
    expect((await again.page(1)).present(1)).toBe(1);
  });

  test('with nothing dirty, persist writes no page', async () => {
    const { fs, map } = await setup();
    const m = map();
    let writes = 0;
    fs.inject = (op) => {
      if (op.op === 'write') writes++;
      return undefined;
    };
    await m.persist();
    expect(writes).toBe(0);
  });
});

describe('visiting the whole map', () => {
  test('visits every page in order, null for pages never written, and keeps none it read', async () => {
    const pages = 40;
    const { file, map } = await setup(pages, pages * MAP_ENTRIES_PER_PAGE);
    const writer = map();
    await setBlock(writer, 3 * MAP_ENTRIES_PER_PAGE + 5, 0b1, 0);
    await setBlock(writer, 30 * MAP_ENTRIES_PER_PAGE, 0, 0b10);
    await writer.persist();
    await file.sync();
    const reader = map();
    const seen: Array<[number, number | null]> = [];
    await reader.visit((page, first) => {
      const index = first / MAP_ENTRIES_PER_PAGE;
      seen.push([index, page ? page.present(first + 5) | page.zero(first) : null]);
    });
    expect(seen.map(([i]) => i)).toEqual([...Array(pages).keys()]);
    expect(seen.filter(([, v]) => v !== null)).toEqual([
      [3, 1],
      [30, 2],
    ]);
    expect(reader.loaded(3 * MAP_ENTRIES_PER_PAGE)).toBeUndefined();
  });

  test('reads only the pages that were written, and sees changes not yet flushed', async () => {
    const pages = 2000;
    const memory = new MemoryFileSystem();
    const created = await memory.create(FILE);
    await created.truncate(MAP_OFFSET + pages * 8192);
    const writer = new StateMap(created, MAP_OFFSET, pages, pages * MAP_ENTRIES_PER_PAGE, 16);
    await setBlock(writer, 7 * MAP_ENTRIES_PER_PAGE, 0b1, 0);
    await writer.persist();
    await created.close();
    const watched = new WatchedFileSystem(memory);
    const handle = await watched.open(FILE);
    const map = new StateMap(handle, MAP_OFFSET, pages, pages * MAP_ENTRIES_PER_PAGE, 16);
    await setBlock(map, 1500 * MAP_ENTRIES_PER_PAGE, 0b11, 0);
    watched.reads.length = 0;
    const found: number[] = [];
    await map.visit((page, first) => {
      if (page && (page.present(first) | page.zero(first)) !== 0) found.push(first / MAP_ENTRIES_PER_PAGE);
    });
    expect(found).toEqual([7, 1500]);
    expect(watched.reads.length).toBeLessThanOrEqual(2);
  });
});
