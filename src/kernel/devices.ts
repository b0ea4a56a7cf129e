/**
 * The kernel's nbd devices as sysfs shows them, and their names.
 *
 * /sys/block/nbdN exists for every device the driver created (nbds_max at load, 16 by default, and
 * any netlink CONNECT made on top). Its `pid` file exists only while the device is running: the
 * driver creates it when the device starts and removes it when the device stops, so it is the
 * cheapest honest answer to "is nbdN in use?". `size` is in 512-byte sectors whatever the logical
 * block size, `ro` is 1 for a read-only export, and `backend` (Linux 5.14+) is the identifier the
 * netlink CONNECT gave it; cowdisk puts the image path there.
 */
import { readdir, readFile } from 'node:fs/promises';
import { CowdiskError, ErrorCode } from '../errors.js';

export interface NbdDevice {
  index: number;
  /** /dev/nbdN */
  path: string;
  /** The device is running: sysfs has its `pid` file. */
  running: boolean;
  /** The kernel thread or process serving it (the `pid` file), when running. */
  pid: number | undefined;
  sizeBytes: number;
  readOnly: boolean;
  /** What the attaching process called its backend (cowdisk: the image path), if the kernel keeps it. */
  backend: string | undefined;
}

const SYS_BLOCK = '/sys/block';

/** Accepts /dev/nbdN, nbdN or N and returns the index; anything else is INVALID_ARGUMENT. */
export function parseDevice(name: string): number {
  const m = /^(?:\/dev\/)?(?:nbd)?(\d{1,6})$/.exec(name.trim());
  if (!m) {
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `"${name}" is not an nbd device; name one like /dev/nbd0.`);
  }
  return Number(m[1]);
}

export function devicePath(index: number): string {
  return `/dev/nbd${index}`;
}

async function readSys(index: number, attr: string): Promise<string | undefined> {
  try {
    return (await readFile(`${SYS_BLOCK}/nbd${index}/${attr}`, 'utf8')).trim();
  } catch {
    return undefined;
  }
}

/** One device's state, or undefined when the driver has no such device. */
export async function readDevice(index: number): Promise<NbdDevice | undefined> {
  const size = await readSys(index, 'size');
  if (size === undefined) return undefined;
  const [pid, ro, backend] = await Promise.all([readSys(index, 'pid'), readSys(index, 'ro'), readSys(index, 'backend')]);
  return {
    index,
    path: devicePath(index),
    running: pid !== undefined,
    pid: pid === undefined ? undefined : Number(pid),
    sizeBytes: Number(size) * 512,
    readOnly: ro === '1',
    backend: backend || undefined,
  };
}

/** Every nbd device the driver has, by index. Empty when the driver is not loaded. */
export async function listDevices(): Promise<NbdDevice[]> {
  let names: string[];
  try {
    names = await readdir(SYS_BLOCK);
  } catch {
    return [];
  }
  const indexes = names
    .map((n) => /^nbd(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
  const devices = await Promise.all(indexes.map(readDevice));
  return devices.filter((d): d is NbdDevice => d !== undefined);
}

/** The first device sysfs shows as free, or undefined when all are running. */
export async function firstFreeDevice(): Promise<NbdDevice | undefined> {
  return (await listDevices()).find((d) => !d.running);
}
