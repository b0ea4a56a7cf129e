import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import type { FileSystem } from '../../src/io/file.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { cloneImage } from '../../src/ops/create.js';
import { importRaw } from '../../src/ops/import.js';
import { openImage } from '../../src/image/open.js';
import { rebaseOverlay } from '../../src/ops/rebase.js';
import { snapshotOverlay } from '../../src/ops/snapshot.js';
import { Random, buildChain, pattern, putFile } from '../helpers/engine-chain.js';
import { DiskModel } from '../helpers/model.js';
import { chainPaths, expectChecks, expectSameDisk, readDisk, scribbleFile } from './helpers.js';

const KiB = 1024;

/** A chain overlay -> layer1 -> base, and a sibling layer on the same base with other changes. */
async function siblings(fs: FileSystem, seed: number, blockSize: number) {
  const chain = await buildChain(fs, '/c', { depth: 3, base: 'snapshot', size: 30 * blockSize + 700, blockSize, seed });
  await cloneImage(chain.sealed[1], '/c/other.cow', { fs });
  const other = new DiskModel(await readDisk(fs, '/c/other.cow'));
  await scribbleFile(fs, '/c/other.cow', other, new Random(seed + 100), 20);
  const { layer } = await snapshotOverlay('/c/other.cow', '/c/sibling.snap', { fs });
  return { chain, sibling: layer };
}

describe('rebase', () => {
  it('onto a sibling layer keeps the disk, copying into the overlay only what differs where it holds nothing', async () => {
    for (let seed = 1; seed <= 4; seed++) {
      const fs = new MemoryFileSystem();
      const { chain, sibling } = await siblings(fs, seed, seed % 2 ? 4 * KiB : 64 * KiB);
      const model = new DiskModel(chain.content);
      await scribbleFile(fs, chain.overlay, model, new Random(seed), 15);

      const result = await rebaseOverlay(chain.overlay, sibling, { fs });

      expect(result.comparedWholeDisk).toBe(false);
      expect(result.copiedBytes).toBeGreaterThan(0);
      expect(await chainPaths(fs, chain.overlay)).toEqual([chain.overlay, sibling, chain.sealed[1]]);
      expectSameDisk(await readDisk(fs, chain.overlay), model.bytes);
      await expectChecks(fs, chain.overlay);
    }
  });

  it('onto a layer further down drops the layers between, keeping the disk', async () => {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/c', { depth: 4, base: 'raw', size: 50 * 16 * KiB, blockSize: 16 * KiB, seed: 21 });
    const model = new DiskModel(chain.content);
    await scribbleFile(fs, chain.overlay, model, new Random(2), 10);
    const result = await rebaseOverlay(chain.overlay, chain.sealed[2], { fs });
    expect(result.oldParent).toBe(chain.sealed[0]);
    expect(await chainPaths(fs, chain.overlay)).toEqual([chain.overlay, chain.sealed[2]]);
    expectSameDisk(await readDisk(fs, chain.overlay), model.bytes);
    await expectChecks(fs, chain.overlay);
  });

  it('onto an unrelated base compares the whole disk and still keeps it', async () => {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/c', { depth: 2, base: 'snapshot', size: 20 * 4 * KiB, blockSize: 4 * KiB, seed: 4 });
    const model = new DiskModel(chain.content);
    await scribbleFile(fs, chain.overlay, model, new Random(1), 10);
    await putFile(fs, '/u/other.raw', pattern(12, 20 * 4 * KiB));
    await importRaw('/u/other.raw', '/u/other.snap', { blockSize: 4 * KiB, fs });
    const result = await rebaseOverlay(chain.overlay, '/u/other.snap', { fs });
    expect(result.comparedWholeDisk).toBe(true);
    expect(await chainPaths(fs, chain.overlay)).toEqual([chain.overlay, '/u/other.snap']);
    expectSameDisk(await readDisk(fs, chain.overlay), model.bytes);
    await expectChecks(fs, chain.overlay);
  });

  it('--unsafe re-points an overlay whose parent moved, reading nothing of the old chain', async () => {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/c', { depth: 3, base: 'snapshot', size: 16 * 4 * KiB, blockSize: 4 * KiB, seed: 6 });
    const model = new DiskModel(chain.content);
    await scribbleFile(fs, chain.overlay, model, new Random(3), 8);
    // Move the parent and its base together (a sealed layer names its parent relatively).
    for (const file of chain.sealed) await fs.rename(file, path.join('/moved', path.basename(file)));
    await expect(openImage(chain.overlay, { fs })).rejects.toMatchObject({ code: ErrorCode.PARENT_MISSING });
    const result = await rebaseOverlay(chain.overlay, '/moved/layer1.snap', { fs, unsafe: true });
    expect(result).toMatchObject({ oldParent: chain.sealed[0], newParent: '/moved/layer1.snap', copiedBytes: 0 });
    expectSameDisk(await readDisk(fs, chain.overlay), model.bytes);
    await expectChecks(fs, chain.overlay);
  });

  it('refuses a writable overlay, a disk of another size or block size, and a locked overlay, changing nothing', async () => {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/c', { depth: 2, base: 'snapshot', size: 16 * 4 * KiB, blockSize: 4 * KiB, seed: 8 });
    await cloneImage(chain.sealed[0], '/c/other.cow', { fs });
    await putFile(fs, '/c/small.raw', pattern(1, 8 * 4 * KiB));
    await putFile(fs, '/c/same.raw', pattern(1, 16 * 4 * KiB));
    await importRaw('/c/same.raw', '/c/big-blocks.snap', { blockSize: 16 * KiB, fs });
    const before = fs.get(chain.overlay);
    await expect(rebaseOverlay(chain.overlay, '/c/other.cow', { fs })).rejects.toMatchObject({ code: ErrorCode.NOT_SEALED });
    await expect(rebaseOverlay(chain.overlay, '/c/small.raw', { fs })).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    await expect(rebaseOverlay(chain.overlay, '/c/big-blocks.snap', { fs, unsafe: true })).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    const served = (await openImage(chain.overlay, { fs })).device;
    await expect(rebaseOverlay(chain.overlay, '/c/same.raw', { fs })).rejects.toMatchObject({ code: ErrorCode.LOCKED });
    await expect(rebaseOverlay(chain.overlay, '/c/same.raw', { fs, unsafe: true })).rejects.toMatchObject({ code: ErrorCode.LOCKED });
    await served.close();
    expect(fs.get(chain.overlay).equals(before)).toBe(true);
  });
});
