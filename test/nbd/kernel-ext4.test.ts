/**
 * The kernel's view of a served image, without the nbd driver: nbdfuse exposes the export as a
 * file, losetup makes it /dev/loopN, and the kernel's ext4 reads and writes it. Served by the real
 * `cowdisk serve` (needs dist/ built), stopped with SIGTERM and served again.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { cloneImage } from '../../src/ops/create.js';
import { OverlayFile } from '../../src/format/overlay.js';
import { realFileSystem } from '../../src/io/real-file.js';
import { startServe } from '../helpers/nbd-cli.js';
import { makeEmpty, MiB, tempDir } from '../helpers/nbd-images.js';
import { run, tool } from '../helpers/nbd-tools.js';
import { cowdisk } from '../helpers/cli.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => {});
});

interface Loop {
  device: string;
  detach(): Promise<void>;
}

/** nbdfuse URI -> DIR/fuse/disk -> /dev/loopN. */
async function loopDevice(uri: string, dir: string, readOnly = false): Promise<Loop> {
  const fuseDir = path.join(dir, 'fuse');
  fs.mkdirSync(fuseDir, { recursive: true });
  const pidFile = path.join(dir, 'nbdfuse.pid');
  fs.rmSync(pidFile, { force: true });
  tool('fusermount3');
  const nbdfuse: ChildProcess = spawn(tool('nbdfuse'), [...(readOnly ? ['-r'] : []), '-P', pidFile, `${fuseDir}/disk`, uri], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => nbdfuse.once('exit', () => resolve()));
  for (let i = 0; i < 100 && !fs.existsSync(pidFile); i++) await new Promise((r) => setTimeout(r, 50));
  if (!fs.existsSync(pidFile)) throw new Error('nbdfuse did not start');
  const unmountFuse = async (): Promise<void> => {
    await run('fusermount3', ['-u', fuseDir], { allowFailure: true });
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    if (nbdfuse.exitCode === null) nbdfuse.kill('SIGKILL');
  };
  let device: string;
  try {
    device = (await run('losetup', ['-f', '--show', ...(readOnly ? ['-r'] : []), `${fuseDir}/disk`])).stdout.trim();
  } catch (err) {
    await unmountFuse();
    throw err;
  }
  let detached = false;
  const detach = async (): Promise<void> => {
    if (detached) return;
    detached = true;
    await run('losetup', ['-d', device], { allowFailure: true });
    await unmountFuse();
  };
  cleanups.push(detach);
  return { device, detach };
}

async function mount(device: string, at: string, readOnly = false): Promise<() => Promise<void>> {
  fs.mkdirSync(at, { recursive: true });
  await run('mount', [...(readOnly ? ['-o', 'ro'] : []), device, at]);
  let mounted = true;
  const umount = async (): Promise<void> => {
    if (!mounted) return;
    mounted = false;
    await run('umount', [at]);
  };
  cleanups.push(umount);
  return umount;
}

async function fsckClean(device: string): Promise<void> {
  const r = await run('e2fsck', ['-fn', device], { allowFailure: true });
  expect(r.code, r.stdout + r.stderr).toBe(0);
}

async function serve(image: string, socket: string): Promise<{ uri: string; stop(): Promise<number | null> }> {
  const s = await startServe([image, '--socket', socket]);
  cleanups.push(async () => {
    if (s.child.exitCode === null) await s.stop();
  });
  return { uri: s.uris[0], stop: () => s.stop('SIGTERM') };
}

function sha256(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

const payload = Buffer.alloc(3 * MiB);
for (let i = 0; i < payload.length; i += 4) payload.writeUInt32LE((i * 2654435761) >>> 0, i);

test('mkfs.ext4 through nbdfuse and a loop device, write files, fsck clean; served again, the files are intact', async () => {
  const dir = tempDir();
  cleanups.push(async () => fs.rmSync(dir, { recursive: true, force: true }));
  const image = await makeEmpty(dir, 64 * MiB, 'disk.cow');
  const socket = path.join(dir, 'nbd.sock');
  const mnt = path.join(dir, 'mnt');

  const first = await serve(image, socket);
  let loop = await loopDevice(first.uri, dir);
  await run('mkfs.ext4', ['-q', '-F', loop.device]);
  let umount = await mount(loop.device, mnt);
  fs.writeFileSync(path.join(mnt, 'hello.txt'), 'hello from the overlay\n');
  fs.mkdirSync(path.join(mnt, 'sub'));
  fs.writeFileSync(path.join(mnt, 'sub', 'payload.bin'), payload);
  await umount();
  await fsckClean(loop.device);
  await loop.detach();
  expect(await first.stop()).toBe(0);
  const header = await OverlayFile.open(realFileSystem, image, { readOnly: true });
  expect(header.header.dirty).toBe(false);
  await header.close();

  const second = await serve(image, socket);
  loop = await loopDevice(second.uri, dir, true);
  await fsckClean(loop.device);
  umount = await mount(loop.device, mnt, true);
  expect(fs.readFileSync(path.join(mnt, 'hello.txt'), 'utf8')).toBe('hello from the overlay\n');
  expect(fs.readFileSync(path.join(mnt, 'sub', 'payload.bin')).equals(payload)).toBe(true);
  await umount();
  await loop.detach();
  expect(await second.stop()).toBe(0);
}, 60_000);

test('an ext4 base, cloned and mounted: files land only in the overlay, the base is unchanged', async () => {
  const dir = tempDir();
  cleanups.push(async () => fs.rmSync(dir, { recursive: true, force: true }));
  const base = path.join(dir, 'base.raw');
  const seed = path.join(dir, 'seed');
  fs.mkdirSync(seed);
  fs.writeFileSync(path.join(seed, 'from-base.txt'), 'in the base image\n');
  fs.writeFileSync(base, Buffer.alloc(0));
  fs.truncateSync(base, 64 * MiB);
  await run('mkfs.ext4', ['-q', '-F', '-d', seed, base]);
  const baseDigest = sha256(base);
  const overlay = path.join(dir, 'clone.cow');
  await cloneImage(base, overlay);
  const socket = path.join(dir, 'nbd.sock');
  const mnt = path.join(dir, 'mnt');

  const server = await serve(overlay, socket);
  const loop = await loopDevice(server.uri, dir);
  const umount = await mount(loop.device, mnt);
  expect(fs.readFileSync(path.join(mnt, 'from-base.txt'), 'utf8')).toBe('in the base image\n');
  fs.writeFileSync(path.join(mnt, 'payload.bin'), payload);
  await umount();
  await fsckClean(loop.device);
  await loop.detach();
  expect(await server.stop()).toBe(0);

  expect(sha256(base)).toBe(baseDigest);
  const map = await cowdisk(['map', '--json', overlay]);
  expect(map.code, map.stderr).toBe(0);
  const extents = JSON.parse(map.stdout) as { length: number; kind: string; layer: number }[];
  const inOverlay = extents.filter((e) => e.layer === 0 && e.kind === 'data').reduce((n, e) => n + e.length, 0);
  // `cowdisk map`: the 3 MiB file plus some metadata blocks in the overlay; the rest still comes from the base.
  expect(inOverlay).toBeGreaterThanOrEqual(payload.length);
  expect(inOverlay).toBeLessThan(payload.length + 4 * MiB);
  expect(extents.filter((e) => e.layer === 1).reduce((n, e) => n + e.length, 0)).toBeGreaterThan(48 * MiB);
}, 60_000);
