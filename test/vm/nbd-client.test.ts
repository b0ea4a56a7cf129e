/**
 * The real kernel NBD client. A Debian kernel boots under QEMU (test/vm/vm.ts); in it, Debian's
 * nbd-client connects /dev/nbd0 to `cowdisk serve` running on the host (TCP, 127.0.0.1), through
 * the VM's single forwarded address, with the export named. The guest makes an ext4 filesystem,
 * writes files, unmounts and disconnects; the server then stops cleanly (exit 0). The host
 * serves the overlay again, copies it out with nbdcopy (a client independent of the kernel) and
 * checks the filesystem and the files with e2fsck and debugfs: every byte made the trip
 * kernel -> cowdisk -> overlay file, and survived closing and reopening the overlay.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { findTool, REPO_ROOT, runInVm } from './vm.js';

const IMAGE_BYTES = 64 * 1024 * 1024;
const GREETING = `written by the guest kernel through /dev/nbd0 at ${new Date().toISOString()}\n`;

const CLI = join(REPO_ROOT, 'bin', 'cowdisk');

interface Server {
  port: number;
  /** SIGTERM, then the exit code: 0 means every image was flushed and closed cleanly. */
  stop(): Promise<number | null>;
}
const running = new Set<ChildProcess>();

/** `cowdisk serve IMAGE --port 0` on 127.0.0.1; resolves with the port from the URI it prints. */
async function serve(image: string): Promise<Server> {
  const child = spawn(process.execPath, [CLI, 'serve', image, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      const uri = /^nbd:\/\/127\.0\.0\.1:(\d+)\//m.exec(stdout);
      if (uri) resolve(Number(uri[1]));
    });
    void exited.then((code) =>
      reject(new Error(`cowdisk serve exited (${code}) before printing its URI (is dist/ built? npm run build)\n${stdout}${stderr}`)),
    );
  });
  return {
    port,
    async stop() {
      child.kill('SIGTERM');
      const code = await exited;
      running.delete(child);
      return code;
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
    const image = join(runDir, 'disk.cow');
    execFileSync(process.execPath, [CLI, 'create', image, '--size', String(IMAGE_BYTES)], { stdio: 'pipe' });
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
