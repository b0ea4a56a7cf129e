/**
 * Attach records and the inventory built from them (`cowdisk devices`). A record names the
 * serving process by pid and start time, so a server that died shows as orphaned, and so does a
 * record whose pid now belongs to some other process. Records live in COWDISK_RUN_DIR here, a
 * temporary directory, instead of /run/cowdisk.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, expect, test } from 'vitest';
import { parseDevice } from '../../src/kernel/devices.js';
import { inventory } from '../../src/kernel/inventory.js';
import {
  isAlive,
  listRecords,
  processStartTime,
  readRecord,
  removeRecord,
  writeRecord,
  type AttachRecord,
} from '../../src/kernel/records.js';
import { cowdisk } from '../helpers/cli.js';

let dir: string;
const saved = process.env.COWDISK_RUN_DIR;

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'cowdisk-run-'));
  process.env.COWDISK_RUN_DIR = dir;
});

afterEach(() => {
  if (saved === undefined) delete process.env.COWDISK_RUN_DIR;
  else process.env.COWDISK_RUN_DIR = saved;
  rmSync(dir, { recursive: true, force: true });
});

function record(index: number, pid: number, startTime: string, image: string): AttachRecord {
  return {
    index,
    device: `/dev/nbd${index}`,
    image,
    pid,
    startTime,
    readOnly: index % 2 === 1,
    connections: 1,
    kernelInterface: 'netlink',
    attachedAt: new Date(0).toISOString(),
  };
}

/** The pid of a process that has exited. */
function deadPid(): number {
  return spawnSync(process.execPath, ['-e', '']).pid!;
}

test('a record written for this process reads back and is alive', async () => {
  const mine = record(3, process.pid, processStartTime(process.pid)!, '/images/vm1.cow');
  await writeRecord(mine);
  expect(await readRecord(3)).toEqual(mine);
  expect(isAlive(mine)).toBe(true);
  expect(readdirSync(dir)).toEqual(['nbd3.json']);
});

test('a record whose process exited, or whose pid was reused, is not alive', () => {
  expect(isAlive(record(0, deadPid(), '12345', '/images/a.cow'))).toBe(false);
  const startTime = processStartTime(process.pid)!;
  expect(isAlive(record(0, process.pid, String(Number(startTime) + 1), '/images/b.cow'))).toBe(false);
});

test('the inventory shows live records as attached and dead ones as orphaned, by device order', async () => {
  await writeRecord(record(5, deadPid(), '1', '/images/dead.cow'));
  await writeRecord(record(1, process.pid, processStartTime(process.pid)!, '/images/live.cow'));
  const { devices } = await inventory();
  expect(devices.map((d) => [d.device, d.state, d.image, d.readOnly])).toEqual([
    ['/dev/nbd1', 'attached', '/images/live.cow', true],
    ['/dev/nbd5', 'orphaned', '/images/dead.cow', true],
  ]);
});

test('removing a record forgets it; removing a missing one is not an error', async () => {
  await writeRecord(record(2, process.pid, processStartTime(process.pid)!, '/images/x.cow'));
  await removeRecord(2);
  await removeRecord(2);
  expect(await listRecords()).toEqual([]);
});

test('`cowdisk devices` (and `attach --list`) prints the table, and --json the same entries', async () => {
  await writeRecord(record(7, deadPid(), '1', '/images/orphan.cow'));
  const env = { ...process.env, COWDISK_RUN_DIR: dir };
  const [table, json, list] = await Promise.all([
    cowdisk(['devices'], { env }),
    cowdisk(['devices', '--json'], { env }),
    cowdisk(['attach', '--list'], { env }),
  ]);
  expect(list).toEqual(table);
  expect(table.code).toBe(0);
  expect(table.stdout).toMatch(/\/dev\/nbd7\s+orphaned\s+ro\s.*\/images\/orphan\.cow/);
  expect(table.stdout).toContain('cowdisk detach DEVICE');
  expect(json.code).toBe(0);
  expect(JSON.parse(json.stdout).devices).toMatchObject([{ device: '/dev/nbd7', state: 'orphaned', image: '/images/orphan.cow' }]);
});

test('device names: /dev/nbdN, nbdN and N name device N; anything else is refused', () => {
  expect(parseDevice('/dev/nbd0')).toBe(0);
  expect(parseDevice('nbd12')).toBe(12);
  expect(parseDevice('3')).toBe(3);
  for (const bad of ['/dev/sda', '/dev/nbd', 'nbd1p1', '/dev/nbd-1', '']) {
    expect(() => parseDevice(bad)).toThrow(expect.objectContaining({ code: 'COWDISK_E_INVALID_ARGUMENT' }));
  }
});
