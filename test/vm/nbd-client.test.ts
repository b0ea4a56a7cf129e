/**
 * The real kernel NBD client. A Debian kernel boots under QEMU (test/vm/vm.ts); in it, Debian's
 * nbd-client connects /dev/nbd0 to `cowdisk serve` running on the host (TCP, 127.0.0.1), through
 * the VM's single forwarded address, with the export named. The guest makes an ext4 filesystem,
 * writes files, unmounts and disconnects; the server then stops cleanly (exit 0). The host
 * serves the overlay again, copies it out with nbdcopy (a client independent of the kernel) and
 * checks the filesystem and the files with e2fsck and debugfs: every byte made the trip
 * kernel -> cowdisk -> overlay file, and survived closing and reopening the overlay.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { cowdisk } from '../helpers/cli.js';
import { startServe, type ServeProcess } from '../helpers/nbd-cli.js';
import { findTool, runInVm } from './vm.js';

const IMAGE_BYTES = 64 * 1024 * 1024;
const GREETING = `written by the guest kernel through /dev/nbd0 at ${new Date().toISOString()}\n`;

interface Server {
  port: number;
  /** SIGTERM, then the exit code: 0 means every image was flushed and closed cleanly. */
  stop(): Promise<number | null>;
}
const running = new Set<ServeProcess>();

/** `cowdisk serve IMAGE --port 0` on 127.0.0.1, with the port from the URI it prints. */
async function serve(image: string): Promise<Server> {
  const server = await startServe([image, '--port', '0']);
  running.add(server);
  const uri = /^nbd:\/\/127\.0\.0\.1:(\d+)\//.exec(server.uris[0]);
  if (!uri) throw new Error(`cowdisk serve --port 0 printed ${server.uris[0]}, not an nbd:// URI on 127.0.0.1`);
  return {
    port: Number(uri[1]),
    stop() {
      running.delete(server);
      return server.stop();
    },
  };
}

afterEach(() => {
  for (const server of running) if (server.child.exitCode === null) server.child.kill('SIGKILL');
  running.clear();
});

test('the kernel nbd client in a VM makes ext4 on the export and its files land in the image', async () => {
  const tools = {
    nbdClient: findTool('nbd-client', 'nbd-client'),
    modprobe: findTool('modprobe', 'kmod'),
    mkfs: findTool('mkfs.ext4', 'e2fsprogs'),
    e2fsck: findTool('e2fsck', 'e2fsprogs'),
    debugfs: findTool('debugfs', 'e2fsprogs'),
    nbdcopy: findTool('nbdcopy', 'libnbd-bin'),
  };
  const runDir = mkdtempSync(join(tmpdir(), 'cowdisk-nbd-client-'));
  try {
    const image = join(runDir, 'disk.cow');
    const created = await cowdisk(['create', image, '--size', String(IMAGE_BYTES)]);
    expect(created.code, created.stderr).toBe(0);
    const payload = randomBytes(3 * 1024 * 1024 + 123);
    writeFileSync(join(runDir, 'payload.bin'), payload);

    const server = await serve(image);
    let result;
    let serverExit;
    try {
      result = await runInVm({
        runDir,
        forward: { to: { host: '127.0.0.1', port: server.port } },
        env: { GREETING },
        script: `
          ${tools.modprobe} nbd
          ${tools.nbdClient} "$VM_FORWARD_HOST" "$VM_FORWARD_PORT" /dev/nbd0 -N disk
          echo "nbd0-bytes=$(blockdev --getsize64 /dev/nbd0)"
          ${tools.mkfs} -q /dev/nbd0
          mkdir /tmp/mnt
          mount /dev/nbd0 /tmp/mnt
          printf %s "$GREETING" > /tmp/mnt/greeting.txt
          mkdir /tmp/mnt/dir
          cp payload.bin /tmp/mnt/dir/payload.bin
          umount /tmp/mnt
          ${tools.nbdClient} -d /dev/nbd0
          echo guest-done
        `,
      });
    } finally {
      serverExit = await server.stop();
    }
    expect(result.exitCode, result.output).toBe(0);
    expect(serverExit).toBe(0);
    expect(result.output).toContain(`nbd0-bytes=${IMAGE_BYTES}`);
    expect(result.output).toContain('guest-done');

    // Read the image back through a fresh server and a client that is not the kernel.
    const copy = join(runDir, 'copy.raw');
    const again = await serve(image);
    try {
      execFileSync(tools.nbdcopy, [`nbd://127.0.0.1:${again.port}/disk`, copy]);
    } finally {
      expect(await again.stop()).toBe(0);
    }
    execFileSync(tools.e2fsck, ['-fn', copy], { stdio: 'pipe' });
    const greeting = execFileSync(tools.debugfs, ['-R', 'cat /greeting.txt', copy], { stdio: ['ignore', 'pipe', 'ignore'] });
    expect(greeting.toString()).toBe(GREETING);
    const dumped = join(runDir, 'payload.out');
    execFileSync(tools.debugfs, ['-R', `dump /dir/payload.bin ${dumped}`, copy], { stdio: 'ignore' });
    expect(readFileSync(dumped).equals(payload)).toBe(true);
  } finally {
    rmSync(runDir, { recursive: true, force: true });
  }
}, 300_000);
