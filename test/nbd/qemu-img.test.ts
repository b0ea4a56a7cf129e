/**
 * qemu-img against a served chain (raw base -> snapshot layer -> overlay): info, map (checked
 * against `cowdisk map`, which needs dist/ built), convert in both directions, compare.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { makeChain, makeEmpty, MiB, serveImages, type Chain } from '../helpers/nbd-images.js';
import type { TestServer } from '../helpers/nbd-server.js';
import { run } from '../helpers/nbd-tools.js';
import { cowdisk } from '../helpers/cli.js';

let chain: Chain;
let srv: TestServer;

beforeAll(async () => {
  chain = await makeChain();
  const target = await makeEmpty(chain.dir, 4 * MiB, 'target.cow');
  srv = await serveImages([
    { name: 'disk', file: chain.overlay },
    { name: 'target', file: target },
  ]);
});
afterAll(async () => {
  await srv.close();
  fs.rmSync(chain.dir, { recursive: true, force: true });
});

describe('qemu-img', () => {
  test('info reports the virtual size', async () => {
    const { stdout } = await run('qemu-img', ['info', '--output=json', '-f', 'raw', srv.uri('disk')]);
    expect(JSON.parse(stdout)['virtual-size']).toBe(chain.size);
  });

  test('map --output=json agrees with `cowdisk map --json` run on the served image', async () => {
    const { stdout } = await run('qemu-img', ['map', '--output=json', '-f', 'raw', srv.uri('disk')]);
    const mapped = (JSON.parse(stdout) as { start: number; length: number; data: boolean }[]).map((e) => ({
      start: e.start,
      length: e.length,
      data: e.data,
    }));
    const ours = await cowdisk(['map', '--json', chain.overlay]);
    expect(ours.code, ours.stderr).toBe(0);
    // qemu-img sees base:allocation, so it merges what cowdisk tells apart (layers, zero vs hole).
    const own: typeof mapped = [];
    for (const e of JSON.parse(ours.stdout) as { offset: number; length: number; kind: string }[]) {
      const data = e.kind === 'data';
      const last = own[own.length - 1];
      if (last && last.data === data) last.length += e.length;
      else own.push({ start: e.offset, length: e.length, data });
    }
    expect(mapped).toEqual(own);
    // And both say where the base had data: blocks 0-3, 8-9 and 30.
    expect(mapped.filter((e) => e.data).map((e) => [e.start / chain.blockSize, e.length / chain.blockSize])).toEqual([
      [0, 4],
      [8, 2],
      [30, 1],
    ]);
  });

  test('convert from the export to a raw file gives the chain\'s bytes', async () => {
    const out = path.join(chain.dir, 'out.raw');
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', srv.uri('disk'), out]);
    expect(fs.readFileSync(out).equals(chain.contents)).toBe(true);
  });

  test('convert from a raw file into the export, then compare: identical', async () => {
    const src = path.join(chain.dir, 'src.raw');
    const data = Buffer.alloc(4 * MiB);
    for (let i = 0; i < MiB; i += 4) data.writeUInt32LE((i * 2246822519) >>> 0, i);
    data.fill(0xab, 3 * MiB, 3 * MiB + 4096);
    fs.writeFileSync(src, data);
    await run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, srv.uri('target')]);
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, srv.uri('target')]);
    expect(cmp.stdout).toMatch(/Images are identical/);
  });

  test('compare finds the served clone identical to its raw base', async () => {
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', chain.raw, srv.uri('disk')]);
    expect(cmp.code).toBe(0);
  });
});
