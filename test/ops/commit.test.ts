import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { cloneImage, createImage } from '../../src/ops/create.js';
import { openImage } from '../../src/image/open.js';
import { commitOverlay } from '../../src/ops/commit.js';
import { Random, buildChain } from '../helpers/engine-chain.js';
import { DiskModel } from '../helpers/model.js';
import { chainPaths, expectChecks, expectSameDisk, readDisk, scribbleFile } from './helpers.js';

const KiB = 1024;

describe('commit', () => {
  it('merges the overlay into a new layer replacing its parent; the old parent stays byte for byte, and its other clones with it', async () => {
    for (let seed = 1; seed <= 4; seed++) {
      const fs = new MemoryFileSystem();
      const chain = await buildChain(fs, '/c', { depth: 3, base: seed % 2 ? 'raw' : 'snapshot', size: 24 * 16 * KiB + 512, blockSize: 16 * KiB, seed });
      await cloneImage(chain.sealed[0], '/c/sibling.cow', { fs });
      const parentBytes = fs.get(chain.sealed[0]);
      const model = new DiskModel(chain.content);
      await scribbleFile(fs, chain.overlay, model, new Random(seed), 30);

      const result = await commitOverlay(chain.overlay, { fs });

      expectSameDisk(await readDisk(fs, chain.overlay), model.bytes);
      expect(await chainPaths(fs, chain.overlay)).toEqual([chain.overlay, result.layer, chain.sealed[1]]);
      expect(result.merged).toEqual([chain.sealed[0]]);
      expect(result.parent).toBe(chain.sealed[1]);
      expect(fs.get(chain.sealed[0]).equals(parentBytes)).toBe(true);
      expectSameDisk(await readDisk(fs, '/c/sibling.cow'), chain.content);
      for (const file of [chain.overlay, '/c/sibling.cow']) await expectChecks(fs, file);
    }
  });

  it('merges down to a named layer (by path or digest) and the chain shortens to what lies below it', async () => {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/c', { depth: 5, base: 'snapshot', size: 40 * 4 * KiB, blockSize: 4 * KiB, seed: 9 });
    const model = new DiskModel(chain.content);
    await scribbleFile(fs, chain.overlay, model, new Random(3), 25);
    const image = (await openImage(chain.overlay, { fs, readOnly: true })).device;
    const baseIdentity = image.chain[4].identity;
    await image.close();

    const first = await commitOverlay(chain.overlay, { fs, into: chain.sealed[1] });
    expect((await chainPaths(fs, chain.overlay))).toEqual([chain.overlay, first.layer, chain.sealed[2], chain.sealed[3]]);
    expect(first.merged).toEqual([chain.sealed[0], chain.sealed[1]]);
    expectSameDisk(await readDisk(fs, chain.overlay), model.bytes);

    await scribbleFile(fs, chain.overlay, model, new Random(4), 10);
    const baseDigest = baseIdentity.slice('sha256:'.length, 'sha256:'.length + 16);
    const second = await commitOverlay(chain.overlay, { fs, into: baseDigest, output: '/c/all.snap' });
    expect(second.layer).toBe('/c/all.snap');
    expect(second.parent).toBeNull();
    expect((await chainPaths(fs, chain.overlay))).toEqual([chain.overlay, '/c/all.snap']);
    expectSameDisk(await readDisk(fs, chain.overlay), model.bytes);
    expectSameDisk(await readDisk(fs, '/c/all.snap'), model.bytes);
    await expectChecks(fs, chain.overlay);
  });

  it('into a raw base makes a layer that stands alone, holding the base data too', async () => {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/c', { depth: 2, base: 'raw', size: 32 * 4 * KiB, blockSize: 4 * KiB, seed: 5 });
    const model = new DiskModel(chain.content);
    await scribbleFile(fs, chain.overlay, model, new Random(8), 15);
    const result = await commitOverlay(chain.overlay, { fs });
    expect(result.parent).toBeNull();
    expect((await chainPaths(fs, chain.overlay))).toEqual([chain.overlay, result.layer]);
    expectSameDisk(await readDisk(fs, chain.overlay), model.bytes);
    await expectChecks(fs, chain.overlay);
  });

  it('refuses an overlay with no parent, and a layer that is not beneath the overlay, changing nothing', async () => {
    const fs = new MemoryFileSystem();
    await createImage('/c/alone.cow', { size: 64 * KiB, fs });
    await expect(commitOverlay('/c/alone.cow', { fs })).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    const chain = await buildChain(fs, '/d', { depth: 3, base: 'snapshot', size: 64 * KiB, blockSize: 4 * KiB, seed: 2 });
    const before = fs.get(chain.overlay);
    for (const into of ['/c/alone.cow', chain.overlay, 'sha256:000000000000', '/nowhere.snap']) {
      await expect(commitOverlay(chain.overlay, { fs, into })).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    }
    expect(fs.get(chain.overlay).equals(before)).toBe(true);
    expect(fs.list('/d').filter((f) => f.endsWith('.snap'))).toEqual(['/d/base.snap', '/d/layer1.snap']);
  });
});
