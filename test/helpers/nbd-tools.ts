/**
 * Running the third-party NBD clients the interop tests drive (qemu-img, qemu-io, nbdinfo, nbdcopy,
 * nbdfuse, fio, python3-libnbd). A client that is not installed fails the test with the Debian
 * package to install; nothing is skipped. Every process is spawned asynchronously, because the
 * server under test may live in the test's own event loop.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Debian packages that provide each tool (scripts/setup.sh installs them). */
const PACKAGES: Record<string, string> = {
  'qemu-img': 'qemu-utils',
  'qemu-io': 'qemu-utils',
  'qemu-nbd': 'qemu-utils',
  nbdinfo: 'libnbd-bin',
  nbdcopy: 'libnbd-bin',
  nbdfuse: 'libnbd-bin',
  fio: 'fio',
  fusermount3: 'fuse3',
  losetup: 'util-linux',
  mount: 'mount',
  umount: 'mount',
  'mkfs.ext4': 'e2fsprogs',
  e2fsck: 'e2fsprogs',
  debugfs: 'e2fsprogs',
  certtool: 'gnutls-bin',
  psktool: 'gnutls-bin',
  setpriv: 'util-linux',
  cc: 'gcc',
};

/** The absolute path of `name`, or an error naming the package to install. */
export function tool(name: string): string {
  const dirs = (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin', '/usr/bin', '/bin']);
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  const pkg = PACKAGES[name] ?? name;
  throw new Error(`${name} is not installed: install the Debian package ${pkg} (apt-get install ${pkg}, or npm run setup)`);
}

/** The Python that can import libnbd (Debian's, not a pyenv one), or an error naming the package. */
export const SYSTEM_PYTHON = '/usr/bin/python3';

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Resolve with the result instead of rejecting when the exit code is not 0. */
  allowFailure?: boolean;
  input?: string;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

/** Runs a program to completion without blocking the event loop. */
export function run(program: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const file = program.includes('/') ? program : tool(program);
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], env: options.env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      const result = { code, stdout, stderr };
      if (code !== 0 && !options.allowFailure) {
        reject(new Error(`${program} ${args.join(' ')} exited with ${code}:\n${stderr}${stdout}`));
      } else {
        resolve(result);
      }
    });
    if (child.stdin) {
      child.stdin.on('error', () => undefined);
      child.stdin.end(options.input);
    }
  });
}

/** Runs a Python script with libnbd importable; fails naming python3-libnbd when it is not. */
export async function python(script: string, args: readonly string[] = [], options: RunOptions = {}): Promise<RunResult> {
  if (!fs.existsSync(SYSTEM_PYTHON)) throw new Error(`${SYSTEM_PYTHON} is missing: install the Debian packages python3 and python3-libnbd`);
  const probe = await run(SYSTEM_PYTHON, ['-c', 'import nbd'], { allowFailure: true });
  if (probe.code !== 0) throw new Error('python3 cannot import nbd: install the Debian package python3-libnbd (apt-get install python3-libnbd)');
  return run(SYSTEM_PYTHON, ['-c', script, ...args], options);
}
