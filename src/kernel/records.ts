/**
 * Attach records: one small JSON file per attached device under /run/cowdisk (a tmpfs, so a reboot
 * forgets them along with the devices), written by the serving process once the kernel runs the
 * device and removed by it after the image is closed cleanly. They answer what sysfs cannot: which
 * image is on nbdN, served by which process, since when, read-only or not.
 *
 * A record whose process is gone means the server died without closing the image (killed, or a
 * crash): the device is left connected to nothing and the image is dirty. `devices` shows such a
 * record as orphaned and `detach` cleans it up. A pid alone could be reused by an unrelated process
 * after a crash, so the record also keeps the process's start time from /proc/PID/stat.
 *
 * COWDISK_RUN_DIR moves the directory (a test, or a system without /run).
 */
import { mkdir, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { ioError } from '../errors.js';

export interface AttachRecord {
  index: number;
  device: string;
  /** Absolute path of the image served. */
  image: string;
  pid: number;
  /** Field 22 of /proc/PID/stat (clock ticks since boot), to tell a reused pid from ours. */
  startTime: string;
  readOnly: boolean;
  connections: number;
  /** How the kernel was connected. */
  kernelInterface: 'netlink' | 'ioctl';
  /** ISO 8601. */
  attachedAt: string;
}

export function recordDir(): string {
  return process.env.COWDISK_RUN_DIR || '/run/cowdisk';
}

function recordPath(index: number, dir: string): string {
  return path.join(dir, `nbd${index}.json`);
}

/**
 * The start time of a live process, or undefined when there is no such process. A zombie (dead,
 * not yet reaped by its parent) is not live: it serves nothing.
 */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may hold spaces; fields count from after it.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[0] === 'Z' || fields[0] === 'X' ? undefined : fields[19];
  } catch {
    return undefined;
  }
}

/** Whether the process that wrote the record is still running (and is the same process). */
export function isAlive(record: AttachRecord): boolean {
  return processStartTime(record.pid) === record.startTime;
}

export async function writeRecord(record: AttachRecord, dir = recordDir()): Promise<void> {
  const file = recordPath(record.index, dir);
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    await mkdir(dir, { recursive: true, mode: 0o755 });
    await writeFile(tmp, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o644 });
    await rename(tmp, file);
  } catch (err) {
    throw ioError(err, file, 'writing the attach record');
  }
}

export async function readRecord(index: number, dir = recordDir()): Promise<AttachRecord | undefined> {
  try {
    const record = JSON.parse(await readFile(recordPath(index, dir), 'utf8')) as AttachRecord;
    return typeof record.pid === 'number' && record.index === index ? record : undefined;
  } catch {
    return undefined;
  }
}

export async function listRecords(dir = recordDir()): Promise<AttachRecord[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const records = await Promise.all(
    names
      .map((n) => /^nbd(\d+)\.json$/.exec(n))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => readRecord(Number(m[1]), dir)),
  );
  return records.filter((r): r is AttachRecord => r !== undefined).sort((a, b) => a.index - b.index);
}

/** Removes the record for `index` (a missing one is fine: someone cleaned up first). */
export async function removeRecord(index: number, dir = recordDir()): Promise<void> {
  try {
    await unlink(recordPath(index, dir));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(err, recordPath(index, dir), 'removing the attach record');
  }
}
