// @ts-check
/**
 * The "boot" figure, as DADI reports one (15 MB read of an 894 MB image to start a container): an
 * ext4 image made here, pushed, cloned lazily, served by `cowdisk serve`, mounted read-only through
 * nbdfuse + loop, and a set of its files read, the way a boot reads its binaries and libraries.
 * What moved from the registry is then compared with the image's size. Needs root (losetup,
 * mount) and nbdfuse (libnbd-bin), fuse3, e2fsprogs.
 */
import { execFile, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Runs a program to its end without blocking the event loop: the registry's forwarder lives in
 * this process, and a mount that waits on it must not stop it from answering.
 * @param {string} program
 * @param {string[]} args
 * @returns {Promise<string>}
 */
function must(program, args) {
  return new Promise((resolve, reject) => {
    execFile(program, args, { encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${program} ${args.join(' ')} failed (${err.message}): ${stderr}`));
      else resolve(stdout.trim());
    });
  });
}

/** Whether the boot figure can run here, or why not. */
export function bootUnavailable() {
  if (process.getuid?.() !== 0) return 'needs root (losetup and mount)';
  for (const program of ['nbdfuse', 'fusermount3', 'losetup', 'mkfs.ext4', 'mount']) {
    if (spawnSync('sh', ['-c', `command -v ${program}`]).status !== 0) return `${program} is not installed (npm run setup)`;
  }
  return null;
}

/**
 * A raw image of `size` bytes holding an ext4 file system with a tree of files of random bytes:
 * many small ones, fewer large ones, about a quarter of the image in all.
 * @param {string} dir
 * @param {number} size
 */
export async function makeExt4Image(dir, size) {
  const raw = join(dir, 'boot.raw');
  await must('truncate', ['-s', String(size), raw]);
  await must('mkfs.ext4', ['-q', '-F', raw]);
  const mnt = join(dir, 'populate');
  mkdirSync(mnt, { recursive: true });
  await must('mount', ['-o', 'loop', raw, mnt]);
  /** @type {Array<{path: string, size: number}>} */
  const files = [];
  try {
    let total = 0;
    for (let i = 0; total < size / 4; i++) {
      const sub = join('usr', `lib${i % 16}`);
      mkdirSync(join(mnt, sub), { recursive: true });
      // Sizes from 1 KiB to 4 MiB, most of them small, as a system's files are.
      const length = Math.floor(1024 * 2 ** (Math.random() * Math.random() * 12));
      const path = join(sub, `file${i}.so`);
      writeFileSync(join(mnt, path), randomBytes(length));
      files.push({ path, size: length });
      total += length;
    }
  } finally {
    await must('umount', [mnt]);
  }
  return { raw, files };
}

/**
 * Serves `overlay` with the CLI, mounts it read-only through nbdfuse + loop, reads `files`, and
 * unmounts. Resolves with the bytes of files read.
 * @param {string} cowdisk  bin/cowdisk
 * @param {string} overlay
 * @param {string} dir
 * @param {Array<{path: string, size: number}>} files
 */
export async function bootRead(cowdisk, overlay, dir, files) {
  const socket = join(dir, 'boot.sock');
  const server = spawn(process.execPath, [cowdisk, 'serve', '--read-only', '--socket', socket, overlay], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((resolve, reject) => {
    server.stdout.once('data', resolve);
    server.once('exit', (code) => reject(new Error(`cowdisk serve exited with ${code}`)));
  });
  const fuse = join(dir, 'fuse');
  const mnt = join(dir, 'mnt');
  mkdirSync(fuse, { recursive: true });
  mkdirSync(mnt, { recursive: true });
  const pidFile = join(dir, 'nbdfuse.pid');
  rmSync(pidFile, { force: true });
  const nbdfuse = spawn('nbdfuse', ['-r', '-P', pidFile, join(fuse, 'disk'), `nbd+unix:///?socket=${socket}`], { stdio: 'ignore' });
  const fuseExited = new Promise((resolve) => nbdfuse.once('exit', resolve));
  let loop = '';
  let mounted = false;
  try {
    for (let i = 0; i < 200 && !existsSync(pidFile); i++) await new Promise((r) => setTimeout(r, 50));
    loop = await must('losetup', ['-f', '--show', '-r', join(fuse, 'disk')]);
    await must('mount', ['-o', 'ro,noload', loop, mnt]);
    mounted = true;
    let read = 0;
    for (const f of files) read += (await readFile(join(mnt, f.path))).length;
    return read;
  } finally {
    if (mounted) await must('umount', [mnt]);
    if (loop) await must('losetup', ['-d', loop]);
    await must('fusermount3', ['-u', fuse]).catch(() => undefined);
    await Promise.race([fuseExited, new Promise((r) => setTimeout(r, 5000))]);
    if (nbdfuse.exitCode === null) process.kill(/** @type {number} */ (nbdfuse.pid), 'SIGKILL');
    const stopped = new Promise((resolve) => server.once('exit', resolve));
    process.kill(/** @type {number} */ (server.pid), 'SIGTERM');
    await stopped;
  }
}
