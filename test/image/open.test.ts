/**
 * Opening an image: the kind of file is told from its first bytes, and every link of the chain is
 * checked on the way down. A parent that is missing, changed or writable is refused with a typed
 * error naming the file at fault; nothing opened on the way is left open.
 */
import * as fsp from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import { CowdiskError, ErrorCode } from '../../src/errors.js';
import { OverlayFile } from '../../src/format/overlay.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { RealFileSystem } from '../../src/io/real-file.js';
import { cloneImage, createImage } from '../../src/ops/create.js';
import { detectKind, openImage } from '../../src/image/open.js';
import { type BlockContent, buildChain, pattern, putFile, writeSnapshotLayer } from '../helpers/engine-chain.js';
import { WatchedFileSystem } from '../helpers/engine-files.js';

const BS = 4096;
const SIZE = 12 * BS;

/** Expects opening `file` to fail with `code`, the error naming `culprit` in its path and message. */
async function refused(fs: MemoryFileSystem, file: string, code: string, culprit: string): Promise<CowdiskError> {
  const watched = new WatchedFileSystem(fs);
  const err = await openImage(file, { fs: watched }).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(CowdiskError);
  const e = err as CowdiskError;
  expect({ code: e.code, path: e.path, names: e.message.includes(culprit) }).toEqual({ code, path: culprit, names: true });
  expect(watched.leaked).toEqual([]);
  return e;
}

async function rawChain(fs = new MemoryFileSystem()) {
  return { fs, chain: await buildChain(fs, '/c', { depth: 2, base: 'raw', size: SIZE, blockSize: BS, seed: 3 }) };
}

async function snapshotChain(fs = new MemoryFileSystem()) {
  return { fs, chain: await buildChain(fs, '/c', { depth: 3, base: 'snapshot', size: SIZE, blockSize: BS, seed: 4 }) };
}

describe('kinds', () => {
  test('an overlay, a snapshot layer and a raw file are told apart by their first bytes', async () => {
    const { fs, chain } = await snapshotChain();
    await putFile(fs, '/c/plain.raw', pattern(1, 3 * BS));
    expect(await detectKind(chain.overlay, fs)).toBe('overlay');
    expect(await detectKind(chain.sealed[0], fs)).toBe('snapshot');
    expect(await detectKind('/c/plain.raw', fs)).toBe('raw');
    for (const [file, kind] of [
      [chain.overlay, 'overlay'],
      [chain.sealed[0], 'snapshot'],
      ['/c/plain.raw', 'raw'],
    ] as const) {
      const image = await openImage(file, { fs, readOnly: true });
      expect([image.kind, image.path]).toEqual([kind, file]);
      await image.close();
    }
  });

  test('a raw file of fewer bytes than a magic opens as a raw image', async () => {
    const fs = new MemoryFileSystem();
    await putFile(fs, '/c/tiny.raw', Buffer.from('abc'));
    const image = (await openImage('/c/tiny.raw', { fs })).device;
    expect(image.size).toBe(3);
    await image.close();
  });

  test('an empty raw file is refused as INVALID_ARGUMENT, naming it', async () => {
    const fs = new MemoryFileSystem();
    await putFile(fs, '/c/empty.raw', Buffer.alloc(0));
    await refused(fs, '/c/empty.raw', ErrorCode.INVALID_ARGUMENT, '/c/empty.raw');
  });

  test('an overlay whose first header slot is damaged, magic included, opens from its second slot', async () => {
    const { fs, chain } = await rawChain();
    const bytes = fs.get(chain.overlay);
    bytes.fill(0xff, 0, 64);
    fs.put(chain.overlay, bytes);
    expect(await detectKind(chain.overlay, fs)).toBe('overlay');
    const image = await openImage(chain.overlay, { fs });
    expect(image.kind).toBe('overlay');
    const back = Buffer.alloc(SIZE);
    await image.device.read(back, 0);
    expect(back.equals(chain.content)).toBe(true);
    await image.close();
  });

  test('a missing image is NOT_FOUND, naming it', async () => {
    await refused(new MemoryFileSystem(), '/c/nothing', ErrorCode.NOT_FOUND, '/c/nothing');
  });
});

describe('parents', () => {
  test('a raw base that vanished is PARENT_MISSING, naming it', async () => {
    const { fs, chain } = await rawChain();
    await fs.unlink(chain.sealed[0]);
    const err = await refused(fs, chain.overlay, ErrorCode.PARENT_MISSING, chain.sealed[0]);
    expect(err.message).toContain(chain.overlay);
  });

  test('a snapshot parent that moved is PARENT_MISSING; moved back, the chain opens again', async () => {
    const { fs, chain } = await snapshotChain();
    await fs.rename(chain.sealed[1], '/elsewhere/base.snap');
    await refused(fs, chain.overlay, ErrorCode.PARENT_MISSING, chain.sealed[1]);
    await fs.rename('/elsewhere/base.snap', chain.sealed[1]);
    const image = (await openImage(chain.overlay, { fs })).device;
    await image.close();
  });

  test('a chain moved together keeps working: parents are found relative to the child', async () => {
    const { fs, chain } = await snapshotChain();
    for (const file of [chain.overlay, ...chain.sealed]) await fs.rename(file, file.replace('/c/', '/moved/'));
    const image = (await openImage('/moved/top.overlay', { fs })).device;
    const back = Buffer.alloc(SIZE);
    await image.read(back, 0);
    expect(back.equals(chain.content)).toBe(true);
    await image.close();
  });

  test('a raw base with one byte changed is PARENT_CHANGED, naming it and saying what changed', async () => {
    const { fs, chain } = await rawChain();
    const base = await fs.open(chain.sealed[0]);
    await base.write(Buffer.from([1]), 100);
    await base.close();
    const err = await refused(fs, chain.overlay, ErrorCode.PARENT_CHANGED, chain.sealed[0]);
    expect(err.message).toMatch(/modified/);
  });

  test('a raw base replaced by a copy (another inode) or resized is PARENT_CHANGED', async () => {
    const { fs, chain } = await rawChain();
    const original = fs.get(chain.sealed[0]);
    await fs.unlink(chain.sealed[0]);
    await putFile(fs, chain.sealed[0], original);
    await refused(fs, chain.overlay, ErrorCode.PARENT_CHANGED, chain.sealed[0]);
    const resized = await rawChain();
    const handle = await resized.fs.open(resized.chain.sealed[0]);
    await handle.truncate(SIZE + BS);
    await handle.close();
    const err = await refused(resized.fs, resized.chain.overlay, ErrorCode.PARENT_CHANGED, resized.chain.sealed[0]);
    expect(err.message).toMatch(/size/);
  });

  test('a snapshot parent replaced by another layer is PARENT_CHANGED (its digest differs)', async () => {
    const { fs, chain } = await snapshotChain();
    await fs.unlink(chain.sealed[0]);
    await writeSnapshotLayer(fs, chain.sealed[0], { size: SIZE, blockSize: BS, parent: { kind: 'none' }, blocks: new Map([[0, pattern(9, BS)]]) });
    const err = await refused(fs, chain.overlay, ErrorCode.PARENT_CHANGED, chain.sealed[0]);
    expect(err.message).toMatch(/digest/);
  });

  test('a link deeper in the chain is checked too: a changed base under a snapshot is PARENT_CHANGED, naming the base', async () => {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/c', { depth: 3, base: 'raw', size: SIZE, blockSize: BS, seed: 8 });
    const base = await fs.open(chain.sealed[1]);
    await base.write(Buffer.from([9]), 0);
    await base.close();
    await refused(fs, chain.overlay, ErrorCode.PARENT_CHANGED, chain.sealed[1]);
    await refused(fs, chain.sealed[0], ErrorCode.PARENT_CHANGED, chain.sealed[1]);
  });

  test('a writable overlay where a sealed parent belongs is NOT_SEALED, naming it', async () => {
    const { fs, chain } = await snapshotChain();
    await fs.unlink(chain.sealed[0]);
    await createImage(chain.sealed[0], { size: SIZE, blockSize: BS, fs });
    await refused(fs, chain.overlay, ErrorCode.NOT_SEALED, chain.sealed[0]);
  });

  test('a raw base replaced by a snapshot layer is PARENT_CHANGED', async () => {
    const { fs, chain } = await rawChain();
    await fs.unlink(chain.sealed[0]);
    await writeSnapshotLayer(fs, chain.sealed[0], { size: SIZE, blockSize: BS, parent: { kind: 'none' }, blocks: new Map() });
    await refused(fs, chain.overlay, ErrorCode.PARENT_CHANGED, chain.sealed[0]);
  });

  test('a layer that names itself as its parent is CORRUPT (a loop), not a hang', async () => {
    const fs = new MemoryFileSystem();
    const blocks = new Map<number, BlockContent>([[1, pattern(2, BS)]]);
    // The digest covers content only, so it is known before the layer that refers to it is written.
    const probe = await writeSnapshotLayer(fs, '/c/probe.snap', { size: SIZE, blockSize: BS, parent: { kind: 'none' }, blocks });
    await writeSnapshotLayer(fs, '/c/loop.snap', { size: SIZE, blockSize: BS, parent: { ...probe, path: 'loop.snap' }, blocks });
    await refused(fs, '/c/loop.snap', ErrorCode.CORRUPT, '/c/loop.snap');
  });

  test('an overlay open for writing cannot be opened for writing again (LOCKED); read-only it can', async () => {
    const { fs, chain } = await rawChain();
    const writer = (await openImage(chain.overlay, { fs })).device;
    await expect(openImage(chain.overlay, { fs })).rejects.toMatchObject({ code: ErrorCode.LOCKED, path: chain.overlay });
    const reader = (await openImage(chain.overlay, { fs, readOnly: true })).device;
    await reader.close();
    await writer.close();
  });

  test('a shared-lock read-only open excludes writers and is refused while one writes; plain readers still open', async () => {
    const { fs, chain } = await rawChain();
    const shared = (await openImage(chain.overlay, { fs, readOnly: true, sharedLock: true })).device;
    const second = (await openImage(chain.overlay, { fs, readOnly: true, sharedLock: true })).device;
    await expect(openImage(chain.overlay, { fs })).rejects.toMatchObject({ code: ErrorCode.LOCKED, path: chain.overlay });
    await second.close();
    await shared.close();
    const writer = (await openImage(chain.overlay, { fs })).device;
    await expect(openImage(chain.overlay, { fs, readOnly: true, sharedLock: true })).rejects.toMatchObject({ code: ErrorCode.LOCKED });
    const reader = (await openImage(chain.overlay, { fs, readOnly: true })).device;
    await reader.close();
    await writer.close();
  });

  test('clone refuses a writable overlay as parent with NOT_SEALED, naming the command that seals it', async () => {
    const { fs, chain } = await rawChain();
    const err = await cloneImage(chain.overlay, '/c/child.overlay', { fs }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCode.NOT_SEALED, path: chain.overlay });
    expect((err as Error).message).toContain('cowdisk snapshot');
    expect(await fs.exists('/c/child.overlay')).toBe(false);
  });

  test('an overlay made on a chain opens with the same chain below it', async () => {
    const { fs, chain } = await snapshotChain();
    const image = (await openImage(chain.overlay, { fs })).device;
    expect(image.chain.map((l) => [l.kind, l.path])).toEqual([['overlay', chain.overlay], ...chain.sealed.map((p) => ['snapshot', p])]);
    expect((await OverlayFile.open(fs, chain.overlay, { readOnly: true })).header.parent).toMatchObject({ kind: 'snapshot', path: 'layer1.snap' });
    await image.close();
  });
});

// FORMAT.md, "What opening costs": the overlay's 8 KiB, the snapshot's 4 KiB header and its
// directory (version 1: 16 bytes per table page, 256 KiB per TiB at 64 KiB blocks; version 2:
// 48 bytes, 768 KiB), and a few bytes of probes; then one map page and one table page per read.
for (const [version, directory, tablePage] of [
  [1, 16 * 16384, 16 + 1024 * 48],
  [2, 48 * 16384, 16 + 1024 * 80],
] as const) {
  test(`a 1 TiB chain over a version ${version} layer opens by reading its headers and the snapshot directory only`, async () => {
    const dir = fsp.mkdtempSync(path.join(tmpdir(), 'cowdisk-tib-'));
    try {
      const real = new RealFileSystem();
      const tib = 2 ** 40;
      const layer = path.join(dir, 'base.snap');
      await writeSnapshotLayer(real, layer, { size: tib, blockSize: 65536, parent: { kind: 'none' }, blocks: new Map([[12_345_678, pattern(4, 65536)]]), version });
      const overlay = path.join(dir, 'disk.overlay');
      await cloneImage(layer, overlay, { fs: real });
      const watched = new WatchedFileSystem(real);
      const image = (await openImage(overlay, { fs: watched })).device;
      const bytesRead = watched.reads.reduce((n, r) => n + r.length, 0);
      expect(bytesRead).toBeGreaterThanOrEqual(8192 + 4096 + directory);
      expect(bytesRead).toBeLessThanOrEqual(8192 + 4096 + directory + 64);
      expect(watched.reads.every((r) => r.length <= directory)).toBe(true);
      // A read far into the disk costs one map page and, where the layer has blocks, one table page.
      watched.forget();
      const back = Buffer.alloc(65536);
      await image.read(back, 12_345_678 * 65536);
      expect(back.equals(pattern(4, 65536))).toBe(true);
      expect(watched.reads.reduce((n, r) => n + r.length, 0)).toBeLessThanOrEqual(8192 + tablePage + 65536);
      await image.close();
    } finally {
      fsp.rmSync(dir, { recursive: true, force: true });
    }
  });
}
