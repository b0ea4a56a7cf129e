/**
 * importRaw (raw file -> sealed snapshot layer) and exportRaw (any chain -> sparse raw file):
 * each on its own, and as a round trip that must give back the same bytes.
 */
import * as fsp from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { BlockKind } from '../../src/format/constants.js';
import { SnapshotV2File } from '../../src/format/snapshot-v2-reader.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { RealFileSystem } from '../../src/io/real-file.js';
import { exportRaw } from '../../src/ops/export.js';
import { importRaw } from '../../src/ops/import.js';
import { openImage } from '../../src/image/open.js';
import { buildChain, pattern, putFile } from '../helpers/engine-chain.js';

const BS = 65536;

/** Random blocks, compressible blocks and zero blocks, with a partial last block. */
function mixedDisk(blocks: number, tail: number): Buffer {
  const out = Buffer.alloc(blocks * BS + tail);
  for (let b = 0; b * BS < out.length; b++) {
    if (b % 4 === 3) continue;
    pattern(b * 3 + (b % 4), Math.min(BS, out.length - b * BS)).copy(out, b * BS);
  }
  return out;
}

describe('import', () => {
  test('a raw file imports to a layer that reads the same; zero blocks become zero entries, the rest stored', async () => {
    const fs = new MemoryFileSystem();
    const raw = mixedDisk(150, 777);
    await putFile(fs, '/i/disk.raw', raw);
    const made = await importRaw('/i/disk.raw', '/i/disk.snap', { fs });
    expect(made.size).toBe(raw.length);
    const snap = await SnapshotV2File.open(fs, '/i/disk.snap');
    const page = await snap.page(0);
    if (!page) throw new Error('no table page');
    for (let b = 0; b < snap.blocks; b++) {
      const zero = raw.subarray(b * BS, (b + 1) * BS).every((x) => x === 0);
      expect(page.kinds[b] === BlockKind.ZERO, `block ${b}`).toBe(zero);
    }
    await snap.close();
    const image = (await openImage('/i/disk.snap', { fs })).device;
    const back = Buffer.alloc(raw.length);
    await image.read(back, 0);
    expect(back.equals(raw)).toBe(true);
    await image.close();
  });

  test('the block size is the one asked for; a bad one is INVALID_ARGUMENT', async () => {
    const fs = new MemoryFileSystem();
    await putFile(fs, '/i/disk.raw', mixedDisk(2, 0));
    expect((await importRaw('/i/disk.raw', '/i/a.snap', { fs, blockSize: 4096 })).blockSize).toBe(4096);
    await expect(importRaw('/i/disk.raw', '/i/b.snap', { fs, blockSize: 5000 })).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
  });

  test('progress is reported up to the whole size', async () => {
    const fs = new MemoryFileSystem();
    const raw = mixedDisk(70, 5);
    await putFile(fs, '/i/disk.raw', raw);
    const seen: Array<[number, number]> = [];
    await importRaw('/i/disk.raw', '/i/a.snap', { fs, onProgress: (done, total) => seen.push([done, total]) });
    expect(seen.at(-1)).toEqual([raw.length, raw.length]);
    expect(seen.every(([d], i) => i === 0 || d > seen[i - 1][0])).toBe(true);
  });

  test('an empty raw file is INVALID_ARGUMENT; an existing layer is EXISTS; neither leaves a file behind', async () => {
    const fs = new MemoryFileSystem();
    await putFile(fs, '/i/empty.raw', Buffer.alloc(0));
    await expect(importRaw('/i/empty.raw', '/i/a.snap', { fs })).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
    await putFile(fs, '/i/disk.raw', mixedDisk(1, 0));
    await putFile(fs, '/i/b.snap', Buffer.from('keep'));
    await expect(importRaw('/i/disk.raw', '/i/b.snap', { fs })).rejects.toMatchObject({ code: ErrorCode.EXISTS });
    expect(fs.list('/i')).toEqual(['/i/b.snap', '/i/disk.raw', '/i/empty.raw']);
  });

  test('a raw file of more than 2^31 blocks at the block size asked for is INVALID_ARGUMENT at once, leaving no file', async () => {
    const dir = fsp.mkdtempSync(path.join(tmpdir(), 'cowdisk-import-'));
    try {
      const raw = path.join(dir, 'disk.raw');
      fsp.writeFileSync(raw, '');
      fsp.truncateSync(raw, 2 ** 31 * 4096 + 1);
      await expect(importRaw(raw, path.join(dir, 'disk.snap'), { fs: new RealFileSystem(), blockSize: 4096 })).rejects.toMatchObject({
        code: ErrorCode.INVALID_ARGUMENT,
      });
      expect(fsp.readdirSync(dir)).toEqual(['disk.raw']);
    } finally {
      fsp.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('an import that fails half way (I/O error) leaves no layer and no temporary file', async () => {
    const fs = new MemoryFileSystem();
    await putFile(fs, '/i/disk.raw', mixedDisk(20, 0));
    let writes = 0;
    fs.inject = (op) => (op.op === 'write' && ++writes === 6 ? Object.assign(new Error('disk full'), { code: 'ENOSPC' }) : undefined);
    await expect(importRaw('/i/disk.raw', '/i/a.snap', { fs })).rejects.toMatchObject({ code: ErrorCode.IO });
    fs.inject = undefined;
    expect(fs.list('/i')).toEqual(['/i/disk.raw']);
  });
});

describe('export', () => {
  test('an overlay over a chain exports to exactly the bytes it reads', async () => {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/e', { depth: 4, base: 'snapshot', size: 40 * 4096 + 99, blockSize: 4096, seed: 12 });
    const image = (await openImage(chain.overlay, { fs })).device;
    await image.write(pattern(1, 10_000), 5000);
    await image.zero(60_000, 20_000);
    const expected = Buffer.alloc(image.size);
    await image.read(expected, 0);
    await exportRaw(image, '/e/out.raw', { fs });
    expect(fs.get('/e/out.raw').equals(expected)).toBe(true);
    await image.close();
  });

  test('an existing output file is never replaced: EXISTS', async () => {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/e', { depth: 1, base: 'raw', size: 4096, blockSize: 4096, seed: 1 });
    await putFile(fs, '/e/out.raw', Buffer.from('keep'));
    const image = (await openImage(chain.overlay, { fs, readOnly: true })).device;
    await expect(exportRaw(image, '/e/out.raw', { fs })).rejects.toMatchObject({ code: ErrorCode.EXISTS });
    await image.close();
  });
});

describe('on real files', () => {
  let dir: string;
  beforeEach(() => {
    dir = fsp.mkdtempSync(path.join(tmpdir(), 'cowdisk-import-'));
  });
  afterEach(() => {
    fsp.rmSync(dir, { recursive: true, force: true });
  });

  test('import then export gives a byte-identical, sparse file; the layer is smaller than the raw file', async () => {
    const raw = mixedDisk(100, 4097);
    const rawPath = path.join(dir, 'disk.raw');
    fsp.writeFileSync(rawPath, raw);
    const snapPath = path.join(dir, 'disk.snap');
    await importRaw(rawPath, snapPath, { fs: new RealFileSystem() });
    expect(fsp.statSync(snapPath).size).toBeLessThan(raw.length);
    const image = (await openImage(snapPath)).device;
    const out = path.join(dir, 'out.raw');
    await exportRaw(image, out);
    await image.close();
    expect(fsp.readFileSync(out).equals(raw)).toBe(true);
    // Zero blocks were not written: the export is sparse where the disk is zero.
    const dataBlocks = [...Array(Math.ceil(raw.length / BS)).keys()].filter((b) => b % 4 !== 3).length;
    expect(fsp.statSync(out).blocks * 512).toBeLessThanOrEqual(dataBlocks * BS);
  });
});
