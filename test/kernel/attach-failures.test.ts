/**
 * What `attach` and `detach` say where they cannot work. This host's kernel has no nbd driver
 * (DESIGN.md: the real /dev/nbd0 tests boot a kernel under QEMU, test/vm/attach.test.ts), so
 * here attach must fail before it opens the image, with the error that names `modprobe nbd` and
 * the nbdfuse + losetup route. Also: not root, the addon missing (attach says why, the rest
 * works), and device names that are not nbd devices.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { attach } from '../../src/kernel/attach.js';
import { detach } from '../../src/kernel/detach.js';
import { cowdisk } from '../helpers/cli.js';

let dir: string;
let image: string;

beforeAll(() => {
  if (existsSync('/sys/module/nbd')) {
    throw new Error('this host has the nbd driver loaded; these tests describe a kernel without it (`modprobe -r nbd`)');
  }
  dir = mkdtempSync(path.join(tmpdir(), 'cowdisk-attach-'));
  image = path.join(dir, 'disk.raw');
  writeFileSync(image, Buffer.alloc(1024 * 1024));
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

function expectNoDriverMessage(message: string): void {
  expect(message).toContain('modprobe nbd');
  expect(message).toContain('nbdfuse');
  expect(message).toContain('losetup');
}

test('attach without the nbd driver fails with NO_NBD_DRIVER before opening the image', async () => {
  let opened = false;
  const failure = attach({
    image,
    openExport: async () => {
      opened = true;
      throw new Error('the image must not be opened');
    },
  });
  await expect(failure).rejects.toMatchObject({ code: ErrorCode.NO_NBD_DRIVER });
  expectNoDriverMessage(((await failure.catch((e: unknown) => e)) as Error).message);
  expect(opened).toBe(false);
});

test('detach without the nbd driver fails with NO_NBD_DRIVER', async () => {
  await expect(detach(0)).rejects.toMatchObject({ code: ErrorCode.NO_NBD_DRIVER });
});

test('`cowdisk attach` without the driver exits 1 and prints the no-driver error', async () => {
  const r = await cowdisk(['attach', image, '/dev/nbd0']);
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(`[${ErrorCode.NO_NBD_DRIVER}]`);
  expectNoDriverMessage(r.stderr);
  expect(r.stdout).toBe('');
});

test('`cowdisk attach --daemon` relays the background process\'s error and exit code, and writes no pid file', async () => {
  const pidFile = path.join(dir, 'attach.pid');
  const r = await cowdisk(['attach', '--daemon', '--pid-file', pidFile, image]);
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(`[${ErrorCode.NO_NBD_DRIVER}]`);
  expectNoDriverMessage(r.stderr);
  expect(existsSync(pidFile)).toBe(false);
});

test('`cowdisk detach` of a free device without the driver says so too', async () => {
  const r = await cowdisk(['detach', '/dev/nbd0']);
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(`[${ErrorCode.NO_NBD_DRIVER}]`);
});

test('`cowdisk attach` as a user other than root fails with NOT_ROOT', async () => {
  const r = await cowdisk(['attach', image], { uid: 65534, gid: 65534, cwd: '/' });
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(`[${ErrorCode.NOT_ROOT}]`);
  expect(r.stderr).toContain('sudo');
});

test('without the native addon attach says why and how to build it, and other commands still run', async () => {
  const env = { ...process.env, COWDISK_NATIVE_ADDON: path.join(dir, 'missing', 'cowdisk_native.node') };
  const r = await cowdisk(['attach', image], { env });
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(`[${ErrorCode.NO_NATIVE}]`);
  expect(r.stderr).toContain('npm run build:native');

  const devices = await cowdisk(['devices', '--json'], { env: { ...env, COWDISK_RUN_DIR: path.join(dir, 'run') } });
  expect(devices.code).toBe(0);
  expect(JSON.parse(devices.stdout)).toEqual({ driverLoaded: false, devices: [] });
});

test('a device name that is not an nbd device is a usage error (exit 2)', async () => {
  const results = await Promise.all(['/dev/sda', 'nbd', '/dev/nbd0p1'].map((name) => cowdisk(['attach', image, name])));
  for (const r of results) {
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`[${ErrorCode.INVALID_ARGUMENT}]`);
  }
});

test('a --timeout the kernel would wrap around (it keeps seconds times HZ in 32 bits) is INVALID_ARGUMENT, before anything else', async () => {
  let opened = false;
  const failure = attach({
    image,
    timeout: 4_294_968,
    openExport: async () => {
      opened = true;
      throw new Error('the image must not be opened');
    },
  });
  await expect(failure).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT });
  expect(((await failure.catch((e: unknown) => e)) as Error).message).toContain('4294967');
  expect(opened).toBe(false);

  const r = await cowdisk(['attach', '--timeout', '4294968', image]);
  expect(r.code).toBe(2);
  expect(r.stderr).toContain(`[${ErrorCode.INVALID_ARGUMENT}]`);
});
