/**
 * An image's file system mounted by the kernel, without the nbd driver: the image is served by an
 * in-process NbdServer (the one `cowdisk serve` runs), nbdfuse turns the export into a file,
 * losetup into /dev/loopN, and mount mounts it. Everything is undone in reverse order, and the
 * server's close flushes and closes the image cleanly.
 *
 * What is done on the mounted file system runs as a shell script in a child process, never through
 * this process's own file calls: the server answers the kernel from this process's event loop, so
 * a synchronous mkdir here on that mount would wait for an answer only this process can give.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { serveImages, tempDir } from '../helpers/nbd-images.js';
import { run, tool } from '../helpers/nbd-tools.js';

/** Serves `image` writable, mounts its file system (relatime, the default: reading a file updates its access time), runs `script` (sh -e, in the mountpoint), and unmounts. */
export async function withMounted(image: string, script: string, options: { mkfs?: boolean } = {}): Promise<void> {
  const dir = tempDir();
  const server = await serveImages([{ name: 'disk', file: image }]);
  const undo: Array<() => Promise<unknown>> = [async () => server.close(), async () => fs.rmSync(dir, { recursive: true, force: true })];
  try {
    const fuseDir = path.join(dir, 'fuse');
    fs.mkdirSync(fuseDir);
    const pidFile = path.join(dir, 'nbdfuse.pid');
    tool('fusermount3');
    const nbdfuse: ChildProcess = spawn(tool('nbdfuse'), ['-P', pidFile, `${fuseDir}/disk`, server.uri('disk')], { stdio: 'ignore' });
    const exited = new Promise<void>((resolve) => nbdfuse.once('exit', () => resolve()));
    undo.unshift(async () => {
      await run('fusermount3', ['-u', fuseDir], { allowFailure: true });
      await exited;
    });
    for (let i = 0; i < 200 && !fs.existsSync(pidFile); i++) await new Promise((r) => setTimeout(r, 50));
    if (!fs.existsSync(pidFile)) throw new Error('nbdfuse did not mount the export');
    const device = (await run('losetup', ['-f', '--show', `${fuseDir}/disk`])).stdout.trim();
    undo.unshift(() => run('losetup', ['-d', device], { allowFailure: true }));
    if (options.mkfs) await run('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', device]);
    const mnt = path.join(dir, 'mnt');
    fs.mkdirSync(mnt);
    await run('mount', ['-o', 'relatime', device, mnt]);
    undo.unshift(() => run('umount', [mnt]));
    await run('sh', ['-ec', `cd '${mnt}'\n${script}\nsync`]);
  } finally {
    for (const step of undo) await step();
  }
}
