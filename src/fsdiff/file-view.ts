/**
 * Disks as files, for tools that only read files (e2fsprogs' `debugfs`, for `diff --files`).
 *
 * Exporting a whole disk to a raw file costs its size, however little the tool reads. Instead the
 * devices are served read-only by cowdisk's own NBD server on a Unix socket in a private
 * temporary directory, and `nbdfuse` mounts each export as a file: the tool reads only the blocks
 * it needs, straight from the chain, and nothing is written anywhere. The server runs in this
 * process, so the tools must be spawned asynchronously (they wait on us to answer their reads).
 *
 * The devices stay the caller's: the server gets thin wrappers whose `close` does nothing.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';
import { NbdServer } from '../nbd/index.js';
import type { BlockDevice, Capabilities } from '../image/device.js';
import { PassThroughDevice } from '../image/pass-through.js';
import { READ_ONLY_CAPABILITIES, readOnlyError } from '../image/sealed-chain.js';

/** The absolute path of program `name`, or an error naming the Debian package that has it. */
export function findProgram(name: string, debianPackage: string, purpose: string): string {
  const dirs = (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin', '/usr/bin', '/bin']);
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  throw new CowdiskError(
    ErrorCode.UNSUPPORTED,
    `${purpose} needs ${name}, which is not installed: install the Debian package ${debianPackage} (apt-get install ${debianPackage}).`,
  );
}

export interface ProgramResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program to completion without blocking the event loop (it may be reading from us). */
export function runProgram(file: string, args: readonly string[], input = ''): Promise<ProgramResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A device lent to the server: reads pass through, writes are refused, closing is left to its owner. */
class Lent extends PassThroughDevice {
  override get capabilities(): Capabilities {
    return READ_ONLY_CAPABILITIES;
  }

  override async write(): Promise<void> {
    throw readOnlyError('this view is read-only.');
  }

  override async zero(): Promise<void> {
    throw readOnlyError('this view is read-only.');
  }

  override async trim(): Promise<void> {
    throw readOnlyError('this view is read-only.');
  }

  override async flush(): Promise<void> {}

  override async close(): Promise<void> {}
}

export interface FileViews {
  /** One file per device, in order. */
  readonly files: readonly string[];
  close(): Promise<void>;
}

const MOUNT_TIMEOUT_MS = 30_000;

/** Serves `devices` read-only and mounts each as a file; `close` unmounts and stops serving. */
export async function viewAsFiles(devices: readonly BlockDevice[], purpose: string): Promise<FileViews> {
  const nbdfuse = findProgram('nbdfuse', 'libnbd-bin', purpose);
  const fusermount = findProgram('fusermount3', 'fuse3', purpose);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowdisk-view-'));
  const server = new NbdServer({ exports: devices.map((device, i) => ({ name: `view${i}`, device: new Lent(device), readOnly: true })) });
  const mounts: Array<{ dir: string; exited: Promise<void> }> = [];
  const close = async () => {
    for (const mount of mounts) {
      await runProgram(fusermount, ['-u', mount.dir]);
      await mount.exited;
    }
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await server.listen({ socket: path.join(dir, 'nbd.sock') });
    const files: string[] = [];
    for (let i = 0; i < devices.length; i++) {
      const mountDir = path.join(dir, `view${i}`);
      fs.mkdirSync(mountDir);
      const pidFile = path.join(dir, `view${i}.pid`);
      const child = spawn(nbdfuse, ['-r', '-P', pidFile, path.join(mountDir, 'disk'), server.uris(`view${i}`)[0]], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
      let gone = false;
      const exited = new Promise<void>((resolve) => child.on('close', () => ((gone = true), resolve())));
      child.on('error', () => undefined);
      const deadline = Date.now() + MOUNT_TIMEOUT_MS;
      while (!fs.existsSync(pidFile) || fs.readFileSync(pidFile, 'utf8').trim() === '') {
        if (gone || Date.now() > deadline) {
          if (!gone) child.kill();
          await exited;
          throw new CowdiskError(ErrorCode.UNSUPPORTED, `${purpose}: nbdfuse could not mount a view of the disk (${stderr.trim() || 'it timed out'}). It needs FUSE (/dev/fuse).`);
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      mounts.push({ dir: mountDir, exited });
      files.push(path.join(mountDir, 'disk'));
    }
    return { files, close };
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }
}
