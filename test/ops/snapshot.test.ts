import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { BlockKind } from '../../src/format/constants.js';
import { SnapshotV2File } from '../../src/format/snapshot-v2-reader.js';
import type { BlockFile, FileSystem } from '../../src/io/file.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { RealFileSystem } from '../../src/io/real-file.js';
import { cloneImage, createImage } from '../../src/ops/create.js';
import { allLayers, openImage } from '../../src/image/open.js';
import { heldBlocks } from '../../src/ops/layers.js';
import { snapshotOverlay } from '../../src/ops/snapshot.js';
import { Random, buildChain, pattern } from '../helpers/engine-chain.js';
import { DiskModel } from '../helpers/model.js';
import { chainPaths, expectChecks, expectSameDisk, readDisk, scribbleFile } from './helpers.js';

const KiB = 1024;

async function overlayHolds(fs: FileSystem, file: string): Promise<number> {
  const image = await openImage(file, { fs, readOnly: true });
  try {
    const { size, blockSize } = image.device;
    return (await heldBlocks([allLayers(image)[0]], Math.ceil(size / blockSize), blockSize)).size;
  } finally {
    await image.close();
  }
}

describe('snapshot', () => {
  for (const depth of [1, 2, 3, 4]) {
    it(`keeps the disk as it reads and grows a ${depth}-layer chain by one, the overlay left empty`, async () => {
      for (let seed = 1; seed <= 4; seed++) {
        const fs = new MemoryFileSystem();
        const blockSize = [4 * KiB, 16 * KiB, 64 * KiB][seed % 3];
        const size = blockSize * 37 + (seed % 2) * 1000;
        const chain = await buildChain(fs, '/c', { depth, base: seed % 2 ? 'raw' : 'snapshot', size, blockSize, seed });
        const model = new DiskModel(chain.content);
        await scribbleFile(fs, chain.overlay, model, new Random(seed), 30);
        const before = await chainPaths(fs, chain.overlay);

        const result = await snapshotOverlay(chain.overlay, undefined, { fs });

        expectSameDisk(await readDisk(fs, chain.overlay), model.bytes);
        expectSameDisk(await readDisk(fs, result.layer), model.bytes);
        expect(await chainPaths(fs, chain.overlay)).toEqual([before[0], result.layer, ...before.slice(1)]);
        expect(result.parent).toBe(before[1] ?? null);
        expect(await overlayHolds(fs, chain.overlay)).toBe(0);
        await expectChecks(fs, chain.overlay);
      }
    });
  }

  it('seals a partly written block whole, completed from the parent, and a zeroed block as a zero block', async () => {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/c', { depth: 2, base: 'snapshot', size: 8 * 64 * KiB, blockSize: 64 * KiB, seed: 7 });
    const model = new DiskModel(chain.content);
    const image = (await openImage(chain.overlay, { fs })).device;
    const small = pattern(3, 4 * KiB);
    await image.write(small, 64 * KiB + 8 * KiB);
    model.write(small, 64 * KiB + 8 * KiB);
    await image.zero(3 * 64 * KiB, 64 * KiB);
    model.zero(3 * 64 * KiB, 64 * KiB);
    await image.close();

    const result = await snapshotOverlay(chain.overlay, '/c/sealed.snap', { fs });

    const snap = await SnapshotV2File.open(fs, result.layer);
    const page = await snap.page(0);
    await snap.close();
    expect(page?.kinds[1]).not.toBe(BlockKind.ABSENT);
    expect(page?.kinds[1]).not.toBe(BlockKind.ZERO);
    expect(page?.kinds[3]).toBe(BlockKind.ZERO);
    expect([0, 2, 4, 5, 6, 7].map((b) => page?.kinds[b])).toEqual([0, 0, 0, 0, 0, 0].map(() => BlockKind.ABSENT));
    expect(result.blocks).toBe(2);
    expectSameDisk(await readDisk(fs, result.layer), model.bytes);
  });

  it('names layers after the overlay, numbered, and a second snapshot stacks on the first', async () => {
    const fs = new MemoryFileSystem();
    await createImage('/d/vm1.cow', { size: 1024 * KiB, blockSize: 64 * KiB, fs });
    const model = new DiskModel(Buffer.alloc(1024 * KiB));
    await scribbleFile(fs, '/d/vm1.cow', model, new Random(1), 10);
    const first = await snapshotOverlay('/d/vm1.cow', undefined, { fs });
    await scribbleFile(fs, '/d/vm1.cow', model, new Random(2), 10);
    const second = await snapshotOverlay('/d/vm1.cow', undefined, { fs });
    expect([first.layer, second.layer]).toEqual(['/d/vm1.1.snap', '/d/vm1.2.snap']);
    expect(first.parent).toBeNull();
    expect(second.parent).toBe('/d/vm1.1.snap');
    expect(await chainPaths(fs, '/d/vm1.cow')).toEqual(['/d/vm1.cow', '/d/vm1.2.snap', '/d/vm1.1.snap']);
    expectSameDisk(await readDisk(fs, '/d/vm1.cow'), model.bytes);
    await expectChecks(fs, '/d/vm1.cow');
  });

  it('gives a layer that clones see: two clones of it read the sealed disk and diverge independently', async () => {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/c', { depth: 3, base: 'raw', size: 20 * 16 * KiB, blockSize: 16 * KiB, seed: 11 });
    const model = new DiskModel(chain.content);
    await scribbleFile(fs, chain.overlay, model, new Random(5), 20);
    const { layer } = await snapshotOverlay(chain.overlay, '/c/golden.snap', { fs });
    await cloneImage(layer, '/c/a.cow', { fs });
    await cloneImage(layer, '/c/b.cow', { fs });
    const a = new DiskModel(model.bytes);
    await scribbleFile(fs, '/c/a.cow', a, new Random(6), 10);
    expectSameDisk(await readDisk(fs, '/c/a.cow'), a.bytes);
    expectSameDisk(await readDisk(fs, '/c/b.cow'), model.bytes);
    expectSameDisk(await readDisk(fs, chain.overlay), model.bytes);
    for (const file of ['/c/a.cow', '/c/b.cow', chain.overlay]) await expectChecks(fs, file);
  });

  it('refuses an overlay another writer has open (LOCKED), and anything that is not an overlay', async () => {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/c', { depth: 2, base: 'snapshot', size: 256 * KiB, blockSize: 64 * KiB, seed: 3 });
    const served = (await openImage(chain.overlay, { fs })).device;
    await expect(snapshotOverlay(chain.overlay, undefined, { fs })).rejects.toMatchObject({ code: ErrorCode.LOCKED });
    await served.close();
    await expect(snapshotOverlay(chain.sealed[0], undefined, { fs })).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    expect(fs.list('/c').filter((f) => f.endsWith('.snap'))).toEqual(['/c/base.snap']);
  });

  it('keeps the overlay file\'s permission bits: a private (0600) disk stays private after the switch', async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'cowdisk-snap-'));
    try {
      const fs = new RealFileSystem();
      for (const mode of [0o600, 0o640]) {
        const overlay = path.join(dir, `private-${mode.toString(8)}.cow`);
        await createImage(overlay, { size: 1024 * KiB, blockSize: 64 * KiB, fs });
        await fsp.chmod(overlay, mode);
        const image = (await openImage(overlay, { fs })).device;
        await image.write(pattern(mode, 64 * KiB), 0);
        await image.close();
        const result = await snapshotOverlay(overlay, undefined, { fs });
        expect(await chainPaths(fs, overlay)).toContain(result.layer);
        expect((await fsp.stat(overlay)).mode & 0o7777).toBe(mode);
      }
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });

  it('costs what the overlay holds: a few blocks written on a 1 TiB disk read a few blocks', async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'cowdisk-snap-'));
    try {
      const fs = new CountingFileSystem(new RealFileSystem());
      const overlay = path.join(dir, 'big.cow');
      await createImage(overlay, { size: 1024 ** 4, blockSize: 64 * KiB, fs });
      const image = (await openImage(overlay, { fs })).device;
      for (const at of [0, 3 * 1024 ** 3, 1024 ** 4 - 64 * KiB]) await image.write(pattern(at % 97, 64 * KiB), at);
      await image.close();
      fs.bytesRead = 0;
      const result = await snapshotOverlay(overlay, undefined, { fs });
      expect(result.blocks).toBe(3);
      // Three blocks, three map pages (two copies each), headers: well under a megabyte, where
      // reading the 1 TiB disk's map alone would be 256 MiB.
      expect(fs.bytesRead).toBeLessThan(1024 * KiB);
      await expectChecks(fs, overlay);
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});

/** Counts the bytes read through it (and keeps seekData, which the cost depends on). */
class CountingFileSystem implements FileSystem {
  bytesRead = 0;

  constructor(private readonly inner: FileSystem) {}

  async open(file: string, options?: { readOnly?: boolean }): Promise<BlockFile> {
    return this.wrap(await this.inner.open(file, options));
  }

  async create(file: string, options?: { exclusive?: boolean; mode?: number }): Promise<BlockFile> {
    return this.wrap(await this.inner.create(file, options));
  }

  private wrap(file: BlockFile): BlockFile {
    return new Proxy(file, {
      get: (target, prop) => {
        if (prop === 'read') {
          return async (buf: Buffer, pos: number) => {
            const n = await target.read(buf, pos);
            this.bytesRead += n;
            return n;
          };
        }
        const value = Reflect.get(target, prop) as unknown;
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  }

  stat = (file: string) => this.inner.stat(file);
  exists = (file: string) => this.inner.exists(file);
  rename = (from: string, to: string) => this.inner.rename(from, to);
  publish = (from: string, to: string) => this.inner.publish(from, to);
  unlink = (file: string) => this.inner.unlink(file);
  syncDir = (dir: string) => this.inner.syncDir(dir);
  chmod = (file: string, mode: number) => this.inner.chmod(file, mode);
}
