/**
 * RealFileSystem on a temporary directory: the BlockFile contract on real files, in both I/O modes,
 * and hole punching through the native addon (which `npm run build:native` builds; a machine
 * without it fails here, saying so).
 */
import { spawnSync } from 'node:child_process';
import * as fsp from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { CowdiskError, ErrorCode } from '../../src/errors.js';
import { RealFileSystem } from '../../src/io/real-file.js';
import { native, nativeUnavailableReason } from '../../src/native.js';

let dir: string;

beforeEach(() => {
  dir = fsp.mkdtempSync(path.join(tmpdir(), 'cowdisk-real-file-'));
});

afterEach(() => {
  fsp.rmSync(dir, { recursive: true, force: true });
});

for (const io of ['sync', 'serve', 'async'] as const) {
  describe(`io '${io}'`, () => {
    const fs = new RealFileSystem(io);

    test('a write reads back, a read at the end of the file comes back short', async () => {
      const f = await fs.create(path.join(dir, 'a'));
      const data = Buffer.from('0123456789');
      await f.write(data, 100);
      const back = Buffer.alloc(20);
      expect(await f.read(back, 100)).toBe(10);
      expect(back.subarray(0, 10)).toEqual(data);
      expect(await f.read(Buffer.alloc(4), 1000)).toBe(0);
      await f.close();
    });

    test('size and stat follow writes and truncate; sync succeeds', async () => {
      const f = await fs.create(path.join(dir, 'a'));
      await f.write(Buffer.alloc(5000, 1), 0);
      await f.sync();
      expect(await f.size()).toBe(5000);
      await f.truncate(1 << 20);
      const st = await f.stat();
      expect(st.size).toBe(1 << 20);
      // The extension is sparse: the allocation is far below the size.
      expect(st.allocated).toBeLessThan(1 << 19);
      expect(st.ino).toBe(fsp.statSync(path.join(dir, 'a'), { bigint: true }).ino);
      expect(st.mode).toBe(Number(fsp.statSync(path.join(dir, 'a')).mode) & 0o7777);
      await f.truncate(10);
      expect(await f.size()).toBe(10);
      await f.close();
    });
  });
}

const fs = new RealFileSystem();

test('punchHole frees the blocks of the range, keeps the size, and the range reads as zeros', async () => {
  if (!native()) throw new Error(`${nativeUnavailableReason()} (\`npm run build:native\` builds it)`);
  const f = await fs.create(path.join(dir, 'a'));
  await f.write(Buffer.alloc(1 << 20, 0xa5), 0);
  await f.sync();
  const before = await f.stat();
  expect(await f.punchHole(256 << 10, 512 << 10)).toBe(true);
  const after = await f.stat();
  expect(after.size).toBe(1 << 20);
  expect(before.allocated - after.allocated).toBeGreaterThanOrEqual(512 << 10);
  const back = Buffer.alloc(1 << 20);
  await f.read(back, 0);
  expect(back.subarray(0, 256 << 10).every((b) => b === 0xa5)).toBe(true);
  expect(back.subarray(256 << 10, 768 << 10).every((b) => b === 0)).toBe(true);
  expect(back.subarray(768 << 10).every((b) => b === 0xa5)).toBe(true);
  await f.close();
});

test('a read-only open refuses writes with a typed I/O error naming the file', async () => {
  const file = path.join(dir, 'a');
  fsp.writeFileSync(file, 'abc');
  const f = await fs.open(file, { readOnly: true });
  const err = await f.write(Buffer.from('x'), 0).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(CowdiskError);
  expect((err as CowdiskError).code).toBe(ErrorCode.IO);
  expect((err as CowdiskError).message).toContain(file);
  await f.close();
});

test('opening a missing file is NOT_FOUND and creating an existing one exclusively is EXISTS', async () => {
  const file = path.join(dir, 'a');
  await expect(fs.open(file)).rejects.toMatchObject({ code: ErrorCode.NOT_FOUND, path: file });
  fsp.writeFileSync(file, 'abc');
  await expect(fs.create(file)).rejects.toMatchObject({ code: ErrorCode.EXISTS, path: file });
  const replaced = await fs.create(file, { exclusive: false });
  expect(await replaced.size()).toBe(0);
  await replaced.close();
});

test('rename replaces the target, unlink removes, exists and syncDir work on the directory', async () => {
  const a = path.join(dir, 'a');
  const b = path.join(dir, 'b');
  fsp.writeFileSync(a, 'new');
  fsp.writeFileSync(b, 'old');
  await fs.rename(a, b);
  await fs.syncDir(dir);
  expect(await fs.exists(a)).toBe(false);
  expect(fsp.readFileSync(b, 'utf8')).toBe('new');
  await fs.unlink(b);
  expect(await fs.exists(b)).toBe(false);
});

test('publish names a file, but never over one that exists: EXISTS naming the target, both files untouched', async () => {
  const tmp = path.join(dir, 'img.partial');
  const final = path.join(dir, 'img');
  fsp.writeFileSync(tmp, 'new');
  await fs.publish(tmp, final);
  expect(fsp.readdirSync(dir)).toEqual(['img']);
  expect(fsp.readFileSync(final, 'utf8')).toBe('new');

  fsp.writeFileSync(tmp, 'newer');
  await expect(fs.publish(tmp, final)).rejects.toMatchObject({ code: ErrorCode.EXISTS, path: final });
  expect(fsp.readFileSync(final, 'utf8')).toBe('new');
  expect(fsp.readFileSync(tmp, 'utf8')).toBe('newer');
});

test('chmod makes a file read-only for everyone', async () => {
  const file = path.join(dir, 'a');
  fsp.writeFileSync(file, 'abc');
  await fs.chmod(file, 0o444);
  expect(fsp.statSync(file).mode & 0o777).toBe(0o444);
});

test('a file closed twice is closed once; using it afterwards is a typed I/O error', async () => {
  const f = await fs.create(path.join(dir, 'a'));
  await f.close();
  await f.close();
  await expect(f.write(Buffer.from('x'), 0)).rejects.toMatchObject({ code: ErrorCode.IO });
});

test('reads of bytes not in the page cache go to the thread pool and come back right', async () => {
  if (!native()) throw new Error(nativeUnavailableReason());
  const data = Buffer.alloc(4 * 1024 * 1024);
  for (let i = 0; i < data.length; i += 512) data.writeUInt32LE(i, i);
  const source = path.join(dir, 'src');
  const target = path.join(dir, 'cold');
  fsp.writeFileSync(source, data);
  // Written with O_DIRECT, the copy's bytes are on disk only.
  const r = spawnSync('dd', [`if=${source}`, `of=${target}`, 'bs=1M', 'oflag=direct', 'status=none']);
  if (r.status !== 0) throw new Error(`dd oflag=direct failed (coreutils): ${r.stderr}`);
  const f = await new RealFileSystem('sync').open(target, { readOnly: true });
  const back = Buffer.alloc(data.length);
  expect(await f.read(back, 0)).toBe(data.length);
  expect(back.equals(data)).toBe(true);
  const tail = Buffer.alloc(8192);
  expect(await f.read(tail, data.length - 4096)).toBe(4096);
  expect(tail.subarray(0, 4096).equals(data.subarray(data.length - 4096))).toBe(true);
  await f.close();
});

describe('readNow (the server\'s synchronous read path)', () => {
  test('answers cached bytes at once; says no past the end, for large reads, in async mode and once closed', async () => {
    const fs = new RealFileSystem('sync');
    const f = await fs.create(path.join(dir, 'now'));
    const data = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < data.length; i += 4) data.writeUInt32LE(i, i);
    await f.write(data, 0);
    const buf = Buffer.alloc(4096);
    expect(f.readNow(buf, 8192)).toBe(true);
    expect(buf.equals(data.subarray(8192, 8192 + 4096))).toBe(true);
    // Short at the end of the file: read reports that, readNow declines.
    expect(f.readNow(buf, data.length - 1024)).toBe(false);
    // 256 KiB or more is copied on the thread pool, never on the event loop.
    expect(f.readNow(Buffer.alloc(256 * 1024), 0)).toBe(false);
    expect(f.readNow(Buffer.alloc(256 * 1024 - 4096), 0)).toBe(true);
    await f.close();
    expect(f.readNow(buf, 0)).toBe(false);
    const a = await new RealFileSystem('async').open(path.join(dir, 'now'));
    expect(a.readNow(buf, 0)).toBe(false);
    await a.close();
  });
});

describe("io 'serve' (a server's files)", () => {
  /** Whether a setImmediate callback queued as the write starts runs before the write is done. */
  async function loopRanDuringWrite(io: 'sync' | 'serve', length: number): Promise<boolean> {
    const f = await new RealFileSystem(io).create(path.join(dir, `${io}-${length}`));
    let ran = false;
    setImmediate(() => (ran = true));
    await f.write(Buffer.alloc(length, 1), 0);
    const during = ran;
    await f.close();
    return during;
  }

  test('a write of 256 KiB or more goes to the thread pool, the event loop running meanwhile; smaller ones and sync mode stay on it', async () => {
    expect(await loopRanDuringWrite('serve', 1024 * 1024)).toBe(true);
    expect(await loopRanDuringWrite('serve', 256 * 1024)).toBe(true);
    expect(await loopRanDuringWrite('serve', 256 * 1024 - 4096)).toBe(false);
    expect(await loopRanDuringWrite('sync', 1024 * 1024)).toBe(false);
  });
});
