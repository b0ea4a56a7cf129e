/**
 * The addon's file calls on real files in a temporary directory: punching a hole frees the blocks
 * (the file system's own block count says so) without changing the size, SEEK_DATA / SEEK_HOLE
 * find a sparse file's data, and OFD locks give one writer at a time, also between two opens in
 * one process and across processes.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, expect, test } from 'vitest';
import { addon } from './addon.js';

const KiB = 1024;
const MiB = 1024 * KiB;
let dir: string;
const fds: number[] = [];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(tmpdir(), 'cowdisk-native-'));
});

afterEach(() => {
  for (const fd of fds.splice(0)) fs.closeSync(fd);
  fs.rmSync(dir, { recursive: true, force: true });
});

function openFile(name: string, flags = 'w+'): number {
  const fd = fs.openSync(path.join(dir, name), flags);
  fds.push(fd);
  return fd;
}

function closeFile(fd: number): void {
  fds.splice(fds.indexOf(fd), 1);
  fs.closeSync(fd);
}

test('punchHole frees the blocks of the range, keeps the size, and the range reads as zeros', () => {
  const fd = openFile('punch.bin');
  const data = Buffer.alloc(MiB, 0xa5);
  fs.writeSync(fd, data, 0, data.length, 0);
  fs.fsyncSync(fd);
  const before = fs.fstatSync(fd);

  expect(addon().punchHole(fd, 256 * KiB, 512 * KiB)).toBe(true);

  const after = fs.fstatSync(fd);
  expect(after.size).toBe(MiB);
  // st_blocks counts 512-byte units: 512 KiB freed is 1024 of them.
  expect(before.blocks - after.blocks).toBeGreaterThanOrEqual(1024);
  const back = Buffer.alloc(MiB);
  fs.readSync(fd, back, 0, MiB, 0);
  expect(back.subarray(0, 256 * KiB).every((b) => b === 0xa5)).toBe(true);
  expect(back.subarray(256 * KiB, 768 * KiB).every((b) => b === 0)).toBe(true);
  expect(back.subarray(768 * KiB).every((b) => b === 0xa5)).toBe(true);
});

test('punchHole on a bad descriptor throws a Node-style EBADF error', () => {
  expect(() => addon().punchHole(-1, 0, 4096)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'fallocate' }));
});

test('punchHole refuses offsets that are not whole non-negative numbers', () => {
  const fd = openFile('args.bin');
  expect(() => addon().punchHole(fd, -1, 4096)).toThrow(TypeError);
  expect(() => addon().punchHole(fd, 0.5, 4096)).toThrow(TypeError);
});

test('seekData and seekHole find the data in a sparse file, and -1 past the last data', () => {
  const fd = openFile('sparse.bin');
  fs.ftruncateSync(fd, 4 * MiB);
  fs.writeSync(fd, Buffer.alloc(64 * KiB, 1), 0, 64 * KiB, MiB);
  fs.fsyncSync(fd);
  const b = addon();
  expect(b.seekData(fd, 0)).toBe(MiB);
  expect(b.seekHole(fd, MiB)).toBe(MiB + 64 * KiB);
  expect(b.seekData(fd, 2 * MiB)).toBe(-1);
  expect(b.seekHole(fd, 2 * MiB)).toBe(2 * MiB);
});

test('an exclusive OFD lock keeps a second open of the same file out, even in the same process', () => {
  const b = addon();
  const first = openFile('image.cow');
  const second = openFile('image.cow', 'r+');
  expect(b.lock(first, true)).toBe(true);
  expect(b.lock(second, true)).toBe(false);
  expect(b.lock(second, false)).toBe(false);
  closeFile(first);
  expect(b.lock(second, true)).toBe(true);
});

test('shared OFD locks coexist and keep an exclusive one out', () => {
  const b = addon();
  const readers = [openFile('base.cow'), openFile('base.cow', 'r')];
  const writer = openFile('base.cow', 'r+');
  expect(b.lock(readers[0], false)).toBe(true);
  expect(b.lock(readers[1], false)).toBe(true);
  expect(b.lock(writer, true)).toBe(false);
});

test('an OFD lock goes away when its descriptor closes', () => {
  const b = addon();
  const holder = openFile('closing.cow');
  const other = openFile('closing.cow', 'r+');
  expect(b.lock(holder, true)).toBe(true);
  closeFile(holder);
  expect(b.lock(other, true)).toBe(true);
});

test('another process cannot take a lock this process holds', () => {
  const file = path.join(dir, 'shared.cow');
  const fd = openFile('shared.cow');
  expect(addon().lock(fd, true)).toBe(true);
  const addonPath = fileURLToPath(new URL('../../native/build/Release/cowdisk_native.node', import.meta.url));
  const child = spawnSync(
    process.execPath,
    ['-e', `const b = require(${JSON.stringify(addonPath)}); const fd = require('fs').openSync(${JSON.stringify(file)}, 'r+'); process.stdout.write(String(b.lock(fd, true)));`],
    { encoding: 'utf8' },
  );
  expect(child.stderr).toBe('');
  expect(child.stdout).toBe('false');
});

/** A file written with O_DIRECT (dd oflag=direct): its bytes are on disk and not in the page cache. */
function uncachedFile(name: string, data: Buffer): string {
  const source = path.join(dir, `${name}.src`);
  const target = path.join(dir, name);
  fs.writeFileSync(source, data);
  const r = spawnSync('dd', [`if=${source}`, `of=${target}`, 'bs=1M', 'oflag=direct', 'status=none']);
  if (r.status !== 0) throw new Error(`dd oflag=direct failed (coreutils): ${r.stderr}`);
  return target;
}

/** Asks the kernel to drop a file's clean cached pages (posix_fadvise POSIX_FADV_DONTNEED, through dd). */
function dropCache(file: string): void {
  const r = spawnSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
  if (r.status !== 0) throw new Error(`dd iflag=nocache failed (coreutils): ${r.stderr}`);
}

test('readCached reads what the page cache holds and answers -1 for bytes only the disk has', () => {
  const data = Buffer.alloc(2 * MiB);
  for (let i = 0; i < data.length; i += 4096) data.writeUInt32LE(i, i);
  const file = uncachedFile('cold', data);
  const fd = fs.openSync(file, 'r');
  fds.push(fd);
  const buf = Buffer.alloc(4096);
  // The direct write leaves nothing cached, but on a busy machine ext4 may take the write through the
  // page cache (a direct write falls back to a buffered one when it cannot invalidate the range).
  // Drop the file's clean pages (fadvise DONTNEED, what `dd iflag=nocache count=0` does) and ask again:
  // a readCached that answered from anywhere but the page cache would still fail here.
  let cold = addon().readCached(fd, buf, MiB);
  for (let tries = 0; cold !== -1 && tries < 5; tries++) {
    dropCache(file);
    cold = addon().readCached(fd, buf, MiB);
  }
  expect(cold).toBe(-1);
  expect(fs.readSync(fd, buf, 0, 4096, MiB)).toBe(4096);
  expect(addon().readCached(fd, buf.fill(0), MiB)).toBe(4096);
  expect(buf.readUInt32LE(0)).toBe(MiB);
  expect(addon().readCached(fd, buf, 2 * MiB)).toBe(0);
});
