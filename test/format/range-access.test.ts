/**
 * The second half of the SealedFile contract (format/sealed-file.ts), which a registry-backed
 * cache reads through, for every format version: where the directory, the table pages and each
 * stored block lie, and a check of each piece that passes it intact and fails it (CORRUPT,
 * naming the block) with one byte flipped or cut.
 */
import { describe, expect, test } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import type { SealedFile } from '../../src/format/sealed-file.js';
import { SnapshotFile } from '../../src/format/snapshot-reader.js';
import { SnapshotV2File } from '../../src/format/snapshot-v2-reader.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { type BlockContent, pattern, writeSnapshotLayer } from '../helpers/engine-chain.js';

const BS = 16384;
const SIZE = 7 * BS - 100;
const FILE = '/s/layer.snap';

/** Blocks of every kind: random (raw), patterned (compressed), zero, sparse, absent (3), a partial last block. */
const BLOCKS = new Map<number, BlockContent>([
  [0, pattern(3, BS)],
  [1, pattern(4, BS)],
  [2, null],
  [4, pattern(5, BS)],
  [5, pattern(6, BS)],
  [6, pattern(9, SIZE - 6 * BS)],
]);

const VERSIONS = [
  { version: 1, open: SnapshotFile.open, directory: (bytes: Buffer) => ({ offset: Number(bytes.readBigUInt64LE(32)), length: 16 }) },
  { version: 2, open: SnapshotV2File.open, directory: () => ({ offset: 4096, length: 48 }) },
] as const;

for (const { version, open, directory } of VERSIONS) {
  describe(`range access, format version ${version}`, () => {
    async function layer(): Promise<{ snap: SealedFile; bytes: Buffer }> {
      const fs = new MemoryFileSystem();
      await writeSnapshotLayer(fs, FILE, { size: SIZE, blockSize: BS, parent: { kind: 'none' }, blocks: BLOCKS, version });
      return { snap: await open(fs, FILE), bytes: Buffer.from(fs.get(FILE)) };
    }

    test('directoryRange, tableRanges and storedRange say where the pieces lie; checkTable and checkStored pass them, intact', async () => {
      const { snap, bytes } = await layer();
      expect(snap.version).toBe(version);
      expect(snap.directoryRange()).toEqual(directory(bytes));
      const tables = snap.tableRanges(0, snap.blocks);
      expect(tables.map((t) => t.index)).toEqual([0]);
      const [table] = tables;
      snap.checkTable(0, bytes.subarray(table.offset, table.offset + table.length));
      for (const [b, data] of BLOCKS) {
        const range = await snap.storedRange(b);
        if (!data) {
          expect(range, `zero block ${b}`).toBeNull();
          continue;
        }
        expect(range, `block ${b}`).not.toBeNull();
        await snap.checkStored(b, bytes.subarray(range!.offset, range!.offset + range!.length));
      }
      expect(await snap.storedRange(3)).toBeNull();
      await snap.close();
    });

    test('a flipped byte in a table page or a stored block, or one cut off, fails its check as CORRUPT, naming the block', async () => {
      const { snap, bytes } = await layer();
      const [table] = snap.tableRanges(0, snap.blocks);
      const page = Buffer.from(bytes.subarray(table.offset, table.offset + table.length));
      page[100] ^= 1;
      expect(() => snap.checkTable(0, page)).toThrow(expect.objectContaining({ code: ErrorCode.CORRUPT, block: 0 }));
      expect(() => snap.checkTable(0, page.subarray(1))).toThrow(expect.objectContaining({ code: ErrorCode.CORRUPT }));
      for (const [b, data] of BLOCKS) {
        if (!data) continue;
        const range = (await snap.storedRange(b))!;
        const stored = Buffer.from(bytes.subarray(range.offset, range.offset + range.length));
        await expect(snap.checkStored(b, stored.subarray(1)), `block ${b} cut`).rejects.toMatchObject({ code: ErrorCode.CORRUPT, block: b });
        stored[stored.length >> 1] ^= 0x40;
        await expect(snap.checkStored(b, stored), `block ${b}`).rejects.toMatchObject({ code: ErrorCode.CORRUPT, block: b, path: FILE });
      }
      await snap.close();
    });
  });
}
