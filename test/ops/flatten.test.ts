import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { openImage } from '../../src/image/open.js';
import { flattenImage } from '../../src/ops/flatten.js';
import { Random, buildChain, pattern, putFile } from '../helpers/engine-chain.js';
import { DiskModel } from '../helpers/model.js';
import { expectChecks, expectSameDisk, readDisk, scribbleFile } from './helpers.js';

const KiB = 1024;

describe('flatten', () => {
  for (const overlay of [false, true]) {
    it(`makes one ${overlay ? 'writable overlay' : 'sealed layer'} with no parent that reads as the chain does, at any depth`, async () => {
      for (let depth = 1; depth <= 5; depth++) {
        const fs = new MemoryFileSystem();
        const chain = await buildChain(fs, '/c', { depth, base: depth % 2 ? 'raw' : 'snapshot', size: 25 * 8 * KiB + 100, blockSize: 8 * KiB, seed: depth });
        const model = new DiskModel(chain.content);
        await scribbleFile(fs, chain.overlay, model, new Random(depth), 20);
        const before = fs.get(chain.overlay);

        const result = await flattenImage(chain.overlay, '/out/flat', { fs, overlay });

        expect(result).toMatchObject({ kind: overlay ? 'overlay' : 'snapshot', depth });
        const flat = await openImage('/out/flat', { fs, readOnly: true });
        expect(flat.device.chain.map((l) => l.path)).toEqual(['/out/flat']);
        expect(flat.kind).toBe(overlay ? 'overlay' : 'snapshot');
        await flat.close();
        expectSameDisk(await readDisk(fs, '/out/flat'), model.bytes);
        expect(fs.get(chain.overlay).equals(before)).toBe(true);
        await expectChecks(fs, '/out/flat');
      }
    });
  }

  it('flattens a raw image, leaving zero blocks out', async () => {
    const fs = new MemoryFileSystem();
    const raw = Buffer.alloc(64 * KiB);
    pattern(4, 4 * KiB).copy(raw, 20 * KiB);
    await putFile(fs, '/r/disk.raw', raw);
    const result = await flattenImage('/r/disk.raw', '/r/disk.snap', { fs, rawBlockSize: 4 * KiB });
    expect(result.blocks).toBe(1);
    expectSameDisk(await readDisk(fs, '/r/disk.snap'), raw);
  });

  it('refuses an overlay open for writing elsewhere, and an output that exists', async () => {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/c', { depth: 2, base: 'snapshot', size: 64 * KiB, blockSize: 4 * KiB, seed: 1 });
    const served = (await openImage(chain.overlay, { fs })).device;
    await expect(flattenImage(chain.overlay, '/c/flat.snap', { fs })).rejects.toMatchObject({ code: ErrorCode.LOCKED });
    await served.close();
    expect(await fs.exists('/c/flat.snap')).toBe(false);
    await expect(flattenImage(chain.overlay, chain.sealed[0], { fs })).rejects.toMatchObject({ code: ErrorCode.EXISTS });
  });
});
