/**
 * libnbd's command line tools against served images: nbdinfo --list / --map / --map=cowdisk:layer
 * and nbdcopy in both directions.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { makeChain, makeEmpty, MiB, serveImages, type Chain } from '../helpers/nbd-images.js';
import type { TestServer } from '../helpers/nbd-server.js';
import { run } from '../helpers/nbd-tools.js';

const K64 = 64 * 1024;
let chain: Chain;
let srv: TestServer;

beforeAll(async () => {
  chain = await makeChain();
  const empty = await makeEmpty(chain.dir, 8 * MiB);
  srv = await serveImages([
    { name: 'disk', file: chain.overlay },
    { name: 'base', file: chain.snapshot },
    { name: 'empty', file: empty },
  ]);
  // Overwrite one base block and one empty block in the overlay.
  const device = srv.server.exports[0].device;
  await device.write(Buffer.alloc(K64, 0xcd), 1 * K64);
  await device.write(Buffer.alloc(K64, 0xce), 5 * K64);
});
afterAll(async () => {
  await srv.close();
  fs.rmSync(chain.dir, { recursive: true, force: true });
});

/** nbdinfo --map lines as [offset, length, value]. */
function parseMap(stdout: string): number[][] {
  return stdout
    .trim()
    .split('\n')
    .map((line) => line.trim().split(/\s+/).slice(0, 3).map(Number));
}

describe('nbdinfo', () => {
  test('--list shows every export with its size, description and read-only flag', async () => {
    const { stdout } = await run('nbdinfo', ['--list', '--json', srv.uri()]);
    const exports = JSON.parse(stdout).exports as { 'export-name': string; 'export-size': number; description: string; is_read_only: boolean }[];
    expect(exports.map((e) => [e['export-name'], e['export-size'], e.is_read_only])).toEqual([
      ['disk', chain.size, false],
      ['base', chain.size, true],
      ['empty', 8 * MiB, false],
    ]);
    expect(exports[1].description).toBe(`snapshot ${chain.snapshot}`);
  });

  test('--map shows base:allocation: data where any layer stores it, hole|zero elsewhere', async () => {
    const { stdout } = await run('nbdinfo', ['--map', srv.uri('disk')]);
    expect(parseMap(stdout)).toEqual([
      [0, 4 * K64, 0],
      [4 * K64, K64, 3],
      [5 * K64, K64, 0],
      [6 * K64, 2 * K64, 3],
      [8 * K64, 2 * K64, 0],
      [10 * K64, 20 * K64, 3],
      [30 * K64, K64, 0],
      [31 * K64, chain.size - 31 * K64, 3],
    ]);
  });

  test('--map=cowdisk:layer shows which layer serves each extent: 1 the overlay, 2 the snapshot', async () => {
    const { stdout } = await run('nbdinfo', ['--map=cowdisk:layer', srv.uri('disk')]);
    // Blocks 1 and 5 were written to the overlay; the snapshot answers for the rest, data or zero.
    expect(parseMap(stdout)).toEqual([
      [0, K64, 2],
      [K64, K64, 1],
      [2 * K64, 3 * K64, 2],
      [5 * K64, K64, 1],
      [6 * K64, chain.size - 6 * K64, 2],
    ]);
  });

  test('--map=cowdisk:layer on an empty overlay with no parent reports no layer (0) past what was written', async () => {
    const empty = srv.server.exports[2].device;
    await empty.write(Buffer.alloc(K64, 1), 0);
    const { stdout } = await run('nbdinfo', ['--map=cowdisk:layer', srv.uri('empty')]);
    expect(parseMap(stdout)).toEqual([
      [0, K64, 1],
      [K64, 8 * MiB - K64, 0],
    ]);
  });
});

describe('nbdcopy', () => {
  test('copies an export to a raw file byte for byte', async () => {
    const out = path.join(chain.dir, 'copy.raw');
    await run('nbdcopy', [srv.uri('base'), out]);
    expect(fs.readFileSync(out).equals(chain.contents)).toBe(true);
  });

  test('copies a raw file into an export, holes included', async () => {
    const src = path.join(chain.dir, 'in.raw');
    const data = Buffer.alloc(8 * MiB);
    for (let i = 0; i < 2 * MiB; i += 4) data.writeUInt32BE((i * 40503) >>> 0, i);
    data.fill(0x11, 6 * MiB, 7 * MiB);
    fs.writeFileSync(src, data);
    await run('nbdcopy', [src, srv.uri('empty')]);
    const back = path.join(chain.dir, 'back.raw');
    await run('nbdcopy', [srv.uri('empty'), back]);
    expect(fs.readFileSync(back).equals(data)).toBe(true);
  });
});
