/**
 * createImage and cloneImage: an empty overlay, or a thin clone of a sealed layer or raw base,
 * costing a header and a sparse file whatever the disk size; arguments refused with the reason.
 */
import * as fsp from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { OverlayFile } from '../../src/format/overlay.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { RealFileSystem } from '../../src/io/real-file.js';
import { cloneImage, createImage } from '../../src/ops/create.js';
import { openImage } from '../../src/image/open.js';
import { buildChain, pattern, putFile } from '../helpers/engine-chain.js';

describe('create', () => {
  test('an empty overlay of the given geometry reads as zeros and is all hole', async () => {
    const fs = new MemoryFileSystem();
    await createImage('/i/a.overlay', { size: 100_000, blockSize: 8192, subBlocks: 2, fs });
    const opened = await openImage('/i/a.overlay', { fs });
    const image = opened.device;
    expect([opened.kind, image.size, image.blockSize]).toEqual(['overlay', 100_000, 8192]);
    const back = Buffer.alloc(100_000, 1);
    await image.read(back, 0);
    expect(back.every((b) => b === 0)).toBe(true);
    expect(await image.extents(0, 100_000)).toEqual([{ offset: 0, length: 100_000, kind: 'hole', layer: -1 }]);
    expect(image.chain).toHaveLength(1);
    await image.close();
  });

  test('the defaults are 64 KiB blocks with 4 KiB sub-blocks', async () => {
    const fs = new MemoryFileSystem();
    await createImage('/i/a.overlay', { size: 1 << 20, fs });
    const { header } = await OverlayFile.open(fs, '/i/a.overlay', { readOnly: true });
    expect([header.blockSize, header.subBlocks, header.parent.kind]).toEqual([65536, 16, 'none']);
  });

  const refused: Array<[string, Parameters<typeof createImage>[1]]> = [
    ['a block size that is not a power of two', { size: 1 << 20, blockSize: 12288 }],
    ['a block size below 4 KiB', { size: 1 << 20, blockSize: 2048 }],
    ['a block size above 2 MiB', { size: 1 << 30, blockSize: 4 << 20 }],
    ['sub-blocks smaller than 4 KiB', { size: 1 << 20, blockSize: 65536, subBlocks: 32 }],
    ['sub-blocks that are not a power of two', { size: 1 << 20, blockSize: 65536, subBlocks: 3 }],
    ['a size of zero', { size: 0 }],
    ['a fractional size', { size: 1.5 }],
    ['more than 2^31 blocks (1 PiB in 4 KiB blocks)', { size: 2 ** 50, blockSize: 4096 }],
  ];
  for (const [what, options] of refused) {
    test(`${what} is INVALID_ARGUMENT, and no file is made`, async () => {
      const fs = new MemoryFileSystem();
      await expect(createImage('/i/a.overlay', { ...options, fs })).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
      expect(fs.list('/i')).toEqual([]);
    });
  }

  test('an existing file is never replaced: EXISTS', async () => {
    const fs = new MemoryFileSystem();
    await putFile(fs, '/i/a.overlay', Buffer.from('precious'));
    await expect(createImage('/i/a.overlay', { size: 1 << 20, fs })).rejects.toMatchObject({ code: ErrorCode.EXISTS, path: '/i/a.overlay' });
    expect(fs.get('/i/a.overlay').toString()).toBe('precious');
  });
});

describe('clone', () => {
  test('a clone of a snapshot reads as the snapshot and takes its block size', async () => {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/i', { depth: 3, base: 'snapshot', size: 20 * 8192 + 1, blockSize: 8192, seed: 2 });
    await cloneImage(chain.sealed[0], '/i/second.overlay', { fs });
    const image = (await openImage('/i/second.overlay', { fs })).device;
    expect(image.blockSize).toBe(8192);
    const back = Buffer.alloc(image.size);
    await image.read(back, 0);
    expect(back.equals(chain.content)).toBe(true);
    await image.close();
  });

  test('a block size other than the snapshot parent’s is INVALID_ARGUMENT', async () => {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/i', { depth: 3, base: 'snapshot', size: 8 * 8192, blockSize: 8192, seed: 2 });
    await expect(cloneImage(chain.sealed[0], '/i/x.overlay', { fs, blockSize: 65536 })).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
  });

  test('a clone of a raw base reads as the raw file, with the block size asked for', async () => {
    const fs = new MemoryFileSystem();
    const raw = pattern(5, 300_001);
    await putFile(fs, '/i/base.raw', raw);
    await cloneImage('/i/base.raw', '/i/a.overlay', { fs, blockSize: 16384 });
    const image = (await openImage('/i/a.overlay', { fs })).device;
    expect([image.size, image.blockSize]).toEqual([raw.length, 16384]);
    const back = Buffer.alloc(raw.length);
    await image.read(back, 0);
    expect(back.equals(raw)).toBe(true);
    await image.close();
  });

  test('cloning an empty raw file is INVALID_ARGUMENT; a missing parent is NOT_FOUND', async () => {
    const fs = new MemoryFileSystem();
    await putFile(fs, '/i/empty.raw', Buffer.alloc(0));
    await expect(cloneImage('/i/empty.raw', '/i/a.overlay', { fs })).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    await expect(cloneImage('/i/none.raw', '/i/a.overlay', { fs })).rejects.toMatchObject({ code: ErrorCode.NOT_FOUND });
    expect(await fs.exists('/i/a.overlay')).toBe(false);
  });

  test('a raw base of more than 2^31 blocks at the block size asked for is INVALID_ARGUMENT, and no overlay is made', async () => {
    const dir = fsp.mkdtempSync(path.join(tmpdir(), 'cowdisk-clone-'));
    try {
      const base = path.join(dir, 'base.raw');
      fsp.writeFileSync(base, '');
      fsp.truncateSync(base, 2 ** 31 * 4096 + 1);
      const overlay = path.join(dir, 'clone.overlay');
      await expect(cloneImage(base, overlay, { fs: new RealFileSystem(), blockSize: 4096 })).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
      expect(fsp.readdirSync(dir)).toEqual(['base.raw']);
    } finally {
      fsp.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a clone of a 100 GiB sparse raw base uses under 64 KiB of disk', async () => {
    const dir = fsp.mkdtempSync(path.join(tmpdir(), 'cowdisk-clone-'));
    try {
      const base = path.join(dir, 'base.raw');
      fsp.writeFileSync(base, '');
      fsp.truncateSync(base, 100 * 2 ** 30);
      const overlay = path.join(dir, 'clone.overlay');
      await cloneImage(base, overlay, { fs: new RealFileSystem() });
      expect(fsp.statSync(overlay).blocks * 512).toBeLessThan(64 * 1024);
      const image = (await openImage(overlay)).device;
      expect(image.size).toBe(100 * 2 ** 30);
      await image.close();
    } finally {
      fsp.rmSync(dir, { recursive: true, force: true });
    }
  });
});
