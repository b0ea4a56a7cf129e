import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { OverlayFile } from '../../src/format/overlay.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { RealFileSystem } from '../../src/io/real-file.js';
import { openImage } from '../../src/image/open.js';
import { gcImage } from '../../src/ops/gc.js';
import { buildChain, pattern } from '../helpers/engine-chain.js';
import { expectChecks, expectSameDisk, readDisk } from './helpers.js';

const KiB = 1024;

describe('gc', () => {
  for (const where of ['memory', 'a real sparse file'] as const) {
    it(`in ${where}: releases stored zeros and data the map does not reference, and the disk reads the same`, async () => {
      const dir = where === 'memory' ? '/g' : await fsp.mkdtemp(path.join(os.tmpdir(), 'cowdisk-gc-'));
      const fs = where === 'memory' ? new MemoryFileSystem() : new RealFileSystem();
      try {
        const chain = await buildChain(fs, dir, { depth: 2, base: 'snapshot', size: 32 * 64 * KiB, blockSize: 64 * KiB, seed: 5 });
        const image = (await openImage(chain.overlay, { fs })).device;
        await image.write(pattern(1, 64 * KiB), 0); // kept: data
        await image.write(Buffer.alloc(128 * KiB), 4 * 64 * KiB); // two blocks of stored zeros
        await image.write(Buffer.alloc(8 * KiB), 10 * 64 * KiB + 16 * KiB); // two stored zero sub-blocks
        await image.close();
        const expected = await readDisk(fs, chain.overlay);
        // An orphan: bytes in the data region of a block the map leaves absent (a crash between
        // the data write and the map flush leaves exactly this).
        const overlay = await OverlayFile.open(fs, chain.overlay);
        await overlay.writeData(pattern(2, 64 * KiB), 20 * 64 * KiB);
        await overlay.file.sync();
        await overlay.close();

        const result = await gcImage(chain.overlay, { fs });

        expect(result.supported).toBe(true);
        expect(result.zerosReleased).toBe(128 * KiB + 8 * KiB);
        // Memory counts a page of zeros as unallocated; a real file system counts stored zeros.
        const stored = where === 'memory' ? 0 : 128 * KiB + 8 * KiB;
        expect(result.before - result.after).toBeGreaterThanOrEqual(64 * KiB + stored);
        expect(result.after).toBeGreaterThanOrEqual(64 * KiB);
        expectSameDisk(await readDisk(fs, chain.overlay), expected);
        await expectChecks(fs, chain.overlay);
        const again = await gcImage(chain.overlay, { fs });
        expect(again.zerosReleased).toBe(0);
        expect(again.after).toBe(result.after);
      } finally {
        if (where !== 'memory') await fsp.rm(dir, { recursive: true, force: true });
      }
    });
  }

  it('refuses sealed layers (never modified) and an overlay in use', async () => {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/g', { depth: 2, base: 'snapshot', size: 64 * KiB, blockSize: 4 * KiB, seed: 2 });
    await expect(gcImage(chain.sealed[0], { fs })).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    const served = (await openImage(chain.overlay, { fs })).device;
    await expect(gcImage(chain.overlay, { fs })).rejects.toMatchObject({ code: ErrorCode.LOCKED });
    await served.close();
  });
});
