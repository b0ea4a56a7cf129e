/**
 * The real kernel NBD client. A Debian kernel boots under QEMU (test/vm/vm.ts); in it, Debian's
 * nbd-client connects /dev/nbd0 to a server running on the host, through the VM's single
 * forwarded address. The guest makes an ext4 filesystem, writes files, unmounts and disconnects.
 * The host then serves the image again, copies it out with nbdcopy (a client independent of
 * the kernel) and checks the filesystem and the files with e2fsck and debugfs: every byte made
 * the trip kernel -> server -> image file.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { findTool, runInVm } from './vm.js';

const IMAGE_BYTES = 64 * 1024 * 1024;
const GREETING = `written by the guest kernel through /dev/nbd0 at ${new Date().toISOString()}\n`;

/** A port on the loopback that was free a moment ago. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

interface Server {
  port: number;
  stop(): Promise<void>;
}
const running = new Set<ChildProcess>();

/**
 * Serves `image` over TCP on 127.0.0.1. nbdkit's file plugin stands in for `cowdisk serve`
 * until that command exists.
 */
async function serve(image: string): Promise<Server> {
  const nbdkit = findTool('nbdkit', 'nbdkit');
  const port = await freePort();
  // nbdkit writes its pid file once it listens.
  const pidFile = `${image}.${port}.pid`;
  const child = spawn(
    nbdkit,
    ['--foreground', '--exit-with-parent', '-P', pidFile, '-i', '127.0.0.1', '-p', String(port), 'file', image],
    { stdio: ['ignore', 'inherit', 'inherit'] },
  );
  running.add(child);
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  while (!existsSync(pidFile) || statSync(pidFile).size === 0) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`nbdkit exited before listening on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
      running.delete(child);
    },
  };
}

afterEach(() => {
  for (const child of running) if (child.exitCode === null) child.kill('SIGKILL');
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
    const image = join(runDir, 'disk.img');
    writeFileSync(image, '');
    truncateSync(image, IMAGE_BYTES);
    const payload = randomBytes(3 * 1024 * 1024 + 123);
    writeFileSync(join(runDir, 'payload.bin'), payload);

    const server = await serve(image);
    let result;
    try {
      result = await runInVm({
        runDir,
        forward: { to: { host: '127.0.0.1', port: server.port } },
        env: { GREETING },
        script: `
          ${tools.modprobe} nbd
          ${tools.nbdClient} "$VM_FORWARD_HOST" "$VM_FORWARD_PORT" /dev/nbd0 -N ''
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
      await server.stop();
    }
    expect(result.exitCode, result.output).toBe(0);
    expect(result.output).toContain(`nbd0-bytes=${IMAGE_BYTES}`);
    expect(result.output).toContain('guest-done');

    // Read the image back through a fresh server and a client that is not the kernel.
    const copy = join(runDir, 'copy.raw');
    const again = await serve(image);
    try {
      execFileSync(tools.nbdcopy, [`nbd://127.0.0.1:${again.port}`, copy]);
    } finally {
      await again.stop();
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
