import { describe, expect, it } from 'vitest';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { cloneImage } from '../../src/ops/create.js';
import { importRaw } from '../../src/ops/import.js';
import { openImage } from '../../src/image/open.js';
import { DIFF_UNIT, type DiffRange, diffImage } from '../../src/ops/diff.js';
import { snapshotOverlay } from '../../src/ops/snapshot.js';
import { Random, buildChain, pattern, putFile } from '../helpers/engine-chain.js';
import { DiskModel } from '../helpers/model.js';
import { readDisk, scribbleFile } from './helpers.js';

const KiB = 1024;

/** The 4 KiB units in which two disks differ, as ranges (what diff must report, states aside). */
function differingUnits(a: Buffer, b: Buffer): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let at = 0; at < a.length; at += DIFF_UNIT) {
    const end = Math.min(a.length, at + DIFF_UNIT);
    if (a.subarray(at, end).equals(b.subarray(at, end))) continue;
    const last = out[out.length - 1];
    if (last && last[1] === at) last[1] = end;
    else out.push([at, end]);
  }
  return out;
}

/** Ranges joined regardless of state. */
function covered(ranges: DiffRange[]): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const r of ranges) {
    const last = out[out.length - 1];
    if (last && last[1] === r.offset) last[1] = r.offset + r.length;
    else out.push([r.offset, r.offset + r.length]);
  }
  return out;
}

describe('diff', () => {
  it('reports what was written and what was zeroed, and not what still reads as the parent', async () => {
    const fs = new MemoryFileSystem();
    const base = Buffer.alloc(16 * 64 * KiB);
    pattern(3, 8 * 64 * KiB).copy(base); // blocks 0-7 hold data, 8-15 zeros
    await putFile(fs, '/d/base.raw', base);
    await importRaw('/d/base.raw', '/d/base.snap', { fs });
    await cloneImage('/d/base.snap', '/d/vm.cow', { fs });
    const image = (await openImage('/d/vm.cow', { fs })).device;
    await image.write(pattern(4, 8 * KiB), 64 * KiB + 4 * KiB); // new data in block 1
    await image.write(base.subarray(2 * 64 * KiB, 3 * 64 * KiB), 2 * 64 * KiB); // block 2 rewritten as it was
    await image.zero(4 * 64 * KiB, 64 * KiB); // block 4 zeroed over data
    await image.zero(9 * 64 * KiB, 64 * KiB); // block 9 zeroed over zeros: no change
    await image.write(pattern(5, 100), 12 * 64 * KiB + 10); // a few bytes in block 12
    await image.close();

    const result = await diffImage('/d/vm.cow', { fs });

    expect(result.against).toBe('/d/base.snap');
    expect(result.ranges).toEqual([
      { offset: 64 * KiB + 4 * KiB, length: 8 * KiB, state: 'written' },
      { offset: 4 * 64 * KiB, length: 64 * KiB, state: 'zeroed' },
      { offset: 12 * 64 * KiB, length: 4 * KiB, state: 'written' },
    ]);
    expect(result).toMatchObject({ writtenBytes: 12 * KiB, zeroedBytes: 64 * KiB, comparedWholeDisk: false });
  });

  it('covers exactly the 4 KiB units that read differently from the parent, at any depth', async () => {
    for (let seed = 1; seed <= 6; seed++) {
      const fs = new MemoryFileSystem();
      const blockSize = seed % 2 ? 4 * KiB : 64 * KiB;
      const chain = await buildChain(fs, '/c', { depth: 1 + (seed % 4), base: seed % 3 ? 'snapshot' : 'raw', size: 20 * blockSize + 3000, blockSize, seed });
      const model = new DiskModel(chain.content);
      await scribbleFile(fs, chain.overlay, model, new Random(seed), 25);
      const result = await diffImage(chain.overlay, { fs });
      expect(covered(result.ranges)).toEqual(differingUnits(model.bytes, chain.content));
      for (const r of result.ranges.filter((x) => x.state === 'zeroed')) {
        expect(model.bytes.subarray(r.offset, r.offset + r.length).every((b) => b === 0)).toBe(true);
      }
    }
  });

  it('against a layer further down, or an unrelated image, covers what differs from that one', async () => {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/c', { depth: 4, base: 'snapshot', size: 30 * 4 * KiB, blockSize: 4 * KiB, seed: 12 });
    const model = new DiskModel(chain.content);
    await scribbleFile(fs, chain.overlay, model, new Random(2), 20);
    const lower = await readDisk(fs, chain.sealed[2]);
    const vsBase = await diffImage(chain.overlay, { fs, against: chain.sealed[2] });
    expect(vsBase.comparedWholeDisk).toBe(false);
    expect(covered(vsBase.ranges)).toEqual(differingUnits(model.bytes, lower));

    const other = pattern(77, 30 * 4 * KiB);
    await putFile(fs, '/u/other.raw', other);
    const vsOther = await diffImage(chain.overlay, { fs, against: '/u/other.raw' });
    expect(vsOther.comparedWholeDisk).toBe(true);
    expect(covered(vsOther.ranges)).toEqual(differingUnits(model.bytes, other));
  });

  it('against a clone of the same raw base in another block size, sees what either side wrote', async () => {
    const fs = new MemoryFileSystem();
    const base = pattern(21, 64 * 64 * KiB);
    await putFile(fs, '/r/base.raw', base);
    await cloneImage('/r/base.raw', '/r/big.cow', { fs, blockSize: 64 * KiB });
    await cloneImage('/r/base.raw', '/r/small.cow', { fs, blockSize: 4 * KiB });
    const small = (await openImage('/r/small.cow', { fs })).device;
    await small.write(Buffer.alloc(4 * KiB, 0xcd), 100 * 4 * KiB); // 4 KiB block 100: inside 64 KiB block 6
    await small.close();
    const big = (await openImage('/r/big.cow', { fs })).device;
    await big.write(Buffer.alloc(4 * KiB, 0xef), 3 * 64 * KiB); // 64 KiB block 3: 4 KiB block 48
    await big.close();

    const expected = differingUnits(await readDisk(fs, '/r/big.cow'), await readDisk(fs, '/r/small.cow'));
    expect(expected).toEqual([
      [3 * 64 * KiB, 3 * 64 * KiB + 4 * KiB],
      [100 * 4 * KiB, 101 * 4 * KiB],
    ]);
    for (const [image, against] of [
      ['/r/big.cow', '/r/small.cow'],
      ['/r/small.cow', '/r/big.cow'],
    ]) {
      const result = await diffImage(image, { fs, against });
      expect(result.comparedWholeDisk).toBe(false);
      expect(covered(result.ranges)).toEqual(expected);
    }
  });

  it('of a sealed layer shows what it changed over its own parent', async () => {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/c', { depth: 2, base: 'snapshot', size: 16 * 4 * KiB, blockSize: 4 * KiB, seed: 3 });
    const model = new DiskModel(chain.content);
    await scribbleFile(fs, chain.overlay, model, new Random(9), 10);
    const { layer } = await snapshotOverlay(chain.overlay, '/c/s.snap', { fs });
    const result = await diffImage(layer, { fs });
    expect(result.against).toBe(chain.sealed[0]);
    expect(covered(result.ranges)).toEqual(differingUnits(model.bytes, chain.content));
  });

  it('runs while the overlay is open for writing, and sees what was flushed', async () => {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/c', { depth: 2, base: 'snapshot', size: 16 * 4 * KiB, blockSize: 4 * KiB, seed: 4 });
    const served = (await openImage(chain.overlay, { fs })).device;
    await served.write(Buffer.alloc(4 * KiB, 0xab), 8 * KiB);
    await served.flush();
    const result = await diffImage(chain.overlay, { fs });
    await served.close();
    expect(result.ranges).toEqual([{ offset: 8 * KiB, length: 4 * KiB, state: 'written' }]);
  });
});
