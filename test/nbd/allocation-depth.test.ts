/**
 * `qemu:allocation-depth`, judged against QEMU itself: the same chain (a raw base, an overlay with
 * one block written and one block zeroed) is served by qemu-nbd --allocation-depth from a qcow2
 * overlay and by cowdisk from a cowdisk overlay, and QEMU's own tools must read the same depths
 * from both. Also: the context is listed only by a server that offers it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cloneImage } from '../../src/ops/create.js';
import { MiB, serveImages, tempDir } from '../helpers/nbd-images.js';
import type { TestServer } from '../helpers/nbd-server.js';
import { run, tool } from '../helpers/nbd-tools.js';
import { encode, OPT, RawClient, REP } from '../helpers/nbd-wire.js';

const K64 = 64 * 1024;
const SIZE = MiB;
let dir: string;
let srv: TestServer;
let qemu: ChildProcess;
let qemuSocket: string;

/** Waits until something accepts on a Unix socket (qemu-nbd creates the file before it listens). */
async function accepting(socket: string, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (child.exitCode !== null) throw new Error(`qemu-nbd exited with ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(socket, () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`qemu-nbd did not accept on ${socket}`);
}

beforeAll(async () => {
  dir = tempDir();
  // The raw base: data in blocks 0 and 2, holes elsewhere.
  const raw = path.join(dir, 'base.raw');
  const fd = fs.openSync(raw, 'w');
  fs.ftruncateSync(fd, SIZE);
  fs.writeSync(fd, Buffer.alloc(K64, 0x61), 0, K64, 0);
  fs.writeSync(fd, Buffer.alloc(K64, 0x62), 0, K64, 2 * K64);
  fs.closeSync(fd);

  // QEMU's side: a qcow2 overlay on it, block 1 written, block 8 zeroed.
  const qcow2 = path.join(dir, 'overlay.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', raw, '-F', 'raw', '-o', 'cluster_size=64k', qcow2]);
  await run('qemu-io', ['-f', 'qcow2', '-c', `write -P 1 ${K64} ${K64}`, '-c', `write -z ${8 * K64} ${K64}`, qcow2]);
  qemuSocket = path.join(dir, 'qemu.sock');
  qemu = spawn(tool('qemu-nbd'), ['--allocation-depth', '--persistent', '-f', 'qcow2', `--socket=${qemuSocket}`, qcow2], { stdio: 'ignore' });
  await accepting(qemuSocket, qemu);

  // cowdisk's side: an overlay on the same raw base, the same block written and the same zeroed.
  const overlay = path.join(dir, 'overlay.cow');
  await cloneImage(raw, overlay);
  srv = await serveImages([{ name: 'disk', file: overlay }], { allocationDepth: true });
  const device = srv.server.exports[0].device;
  await device.write(Buffer.alloc(K64, 1), K64);
  await device.zero(8 * K64, K64, {});
});
afterAll(async () => {
  if (qemu?.pid !== undefined && qemu.exitCode === null) {
    const exited = new Promise((r) => qemu.once('exit', r));
    process.kill(qemu.pid, 'SIGTERM');
    await exited;
  }
  await srv?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const qemuUri = (): string => `nbd+unix:///?socket=${qemuSocket}`;

describe('qemu:allocation-depth', () => {
  test('nbdinfo --map reads the same depths from cowdisk as from qemu-nbd: 1 for the overlay (written or zeroed), 2 for the raw base, holes included', async () => {
    const ours = (await run('nbdinfo', ['--map=qemu:allocation-depth', srv.uri('disk')])).stdout;
    const theirs = (await run('nbdinfo', ['--map=qemu:allocation-depth', qemuUri()])).stdout;
    const parse = (out: string): number[][] =>
      out
        .trim()
        .split('\n')
        .map((line) => line.trim().split(/\s+/).slice(0, 3).map(Number));
    expect(parse(ours)).toEqual([
      [0, K64, 2],
      [K64, K64, 1],
      [2 * K64, 6 * K64, 2],
      [8 * K64, K64, 1],
      [9 * K64, SIZE - 9 * K64, 2],
    ]);
    expect(parse(ours)).toEqual(parse(theirs));
  });

  test("QEMU's own NBD client negotiates it (qemu-img map with x-dirty-bitmap) and maps both servers alike", async () => {
    const map = async (socket: string, exportName: string): Promise<unknown> => {
      const opts = `driver=nbd,server.type=unix,server.path=${socket},export=${exportName},x-dirty-bitmap=qemu:allocation-depth`;
      const { stdout } = await run('qemu-img', ['map', '--output=json', '--image-opts', opts]);
      return (JSON.parse(stdout) as { start: number; length: number; data: boolean; zero: boolean }[]).map((e) => [e.start, e.length, e.data, e.zero]);
    };
    const ours = await map(srv.socket, 'disk');
    // QEMU reads the depth's low bits as NBD_STATE_HOLE and NBD_STATE_ZERO: depth 1 is "no data", depth 2 "data, zero".
    expect(ours).toEqual([
      [0, K64, true, true],
      [K64, K64, false, false],
      [2 * K64, 6 * K64, true, true],
      [8 * K64, K64, false, false],
      [9 * K64, SIZE - 9 * K64, true, true],
    ]);
    expect(ours).toEqual(await map(qemuSocket, ''));
  });

  test('is listed beside base:allocation and cowdisk:layer, by name and under the qemu: namespace, and SET selects it', async () => {
    const c = await RawClient.greeted(srv.socket);
    await c.write(encode.clientFlags(1));
    await c.write(encode.option(OPT.STRUCTURED_REPLY));
    await c.optionReplies();
    const list = async (queries: string[]): Promise<string[]> => {
      await c.write(encode.option(OPT.LIST_META, encode.metaRequest('disk', queries)));
      return (await c.optionReplies()).filter((r) => r.type === REP.META_CONTEXT).map((r) => r.data.subarray(4).toString());
    };
    expect(await list([])).toEqual(['base:allocation', 'cowdisk:layer', 'qemu:allocation-depth']);
    expect(await list(['qemu:'])).toEqual(['qemu:allocation-depth']);
    expect(await list(['qemu:allocation-depth'])).toEqual(['qemu:allocation-depth']);
    await c.write(encode.option(OPT.SET_META, encode.metaRequest('disk', ['qemu:allocation-depth', 'base:allocation'])));
    const selected = (await c.optionReplies()).filter((r) => r.type === REP.META_CONTEXT);
    expect(selected.map((r) => r.data.subarray(4).toString()).sort()).toEqual(['base:allocation', 'qemu:allocation-depth']);
    expect(new Set(selected.map((r) => r.data.readUInt32BE(0))).size).toBe(2);
    c.close();
  });
});
