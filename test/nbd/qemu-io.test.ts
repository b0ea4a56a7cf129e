/**
 * qemu-io against a served overlay on a snapshot layer: patterned writes and reads, write -z,
 * discard, FUA and flush, each checked through qemu-io's own pattern verification (-P) and, where
 * it matters, through the image itself afterwards.
 */
import * as fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import { openImage } from '../../src/image/open.js';
import { makeChain, type Chain } from '../helpers/nbd-images.js';
import { startServer, type TestServer } from '../helpers/nbd-server.js';
import { run } from '../helpers/nbd-tools.js';
import type { BlockDevice } from '../../src/image/device.js';

const K64 = 64 * 1024;
let chain: Chain;
let srv: TestServer;
let device: BlockDevice;

beforeAll(async () => {
  chain = await makeChain();
  device = (await openImage(chain.overlay)).device;
  srv = await startServer([{ name: 'disk', device }]);
});
afterAll(async () => {
  await srv.close();
  fs.rmSync(chain.dir, { recursive: true, force: true });
});

async function qemuIo(...commands: string[]): Promise<string> {
  const { stdout } = await run('qemu-io', ['-f', 'raw', ...commands.flatMap((c) => ['-c', c]), srv.uri('disk')]);
  expect(stdout).not.toMatch(/Pattern verification failed|error|failed/i);
  return stdout;
}

describe('qemu-io', () => {
  test('write -P then read -P verifies the pattern, unaligned too', async () => {
    await qemuIo('write -P 0x5a 1M 192k', 'read -P 0x5a 1M 192k');
    await qemuIo('write -P 0x3c 5000 3000', 'read -P 0x3c 5000 3000');
  });

  test('a region nothing wrote reads as zeros', async () => {
    await qemuIo(`read -P 0 ${20 * K64} ${4 * K64}`);
  });

  test('write -z zeroes a block that held base data, keeping it allocated (NO_HOLE)', async () => {
    expect(chain.contents.subarray(8 * K64, 9 * K64).some((b) => b !== 0)).toBe(true);
    const zero = vi.spyOn(device, 'zero');
    await qemuIo(`write -z ${8 * K64} ${K64}`, `read -P 0 ${8 * K64} ${K64}`);
    expect(zero.mock.calls.at(-1)?.[2]?.noHole).toBe(true);
    zero.mockRestore();
  });

  test('write -z -u may unmap: the block becomes a zero block hiding the base', async () => {
    expect(chain.contents.subarray(9 * K64, 10 * K64).some((b) => b !== 0)).toBe(true);
    await qemuIo(`write -z -u ${9 * K64} ${K64}`, `read -P 0 ${9 * K64} ${K64}`);
    const [e] = await device.extents(9 * K64, K64);
    expect(e).toMatchObject({ kind: 'zero', layer: 0 });
  });

  test('discard makes the range read as zeros and releases it in the overlay', async () => {
    await qemuIo(`write -P 0x77 ${12 * K64} ${2 * K64}`, `discard ${12 * K64} ${2 * K64}`, `read -P 0 ${12 * K64} ${2 * K64}`);
    expect((await device.extents(12 * K64, 2 * K64)).every((e) => e.kind !== 'data')).toBe(true);
  });

  test('write -f (FUA) reaches the image as a FUA write', async () => {
    const write = vi.spyOn(device, 'write');
    await qemuIo(`write -f -P 0x21 ${16 * K64} 4k`, `read -P 0x21 ${16 * K64} 4k`);
    expect(write.mock.calls.some(([, , options]) => options?.fua === true)).toBe(true);
    write.mockRestore();
  });

  test('flush reaches the image, and what was written survives closing and reopening it', async () => {
    const flush = vi.spyOn(device, 'flush');
    await qemuIo(`write -P 0x66 ${24 * K64} ${K64}`, 'flush');
    expect(flush).toHaveBeenCalled();
    flush.mockRestore();
    await srv.server.close();
    const reopened = (await openImage(chain.overlay, { readOnly: true })).device;
    const buf = Buffer.alloc(K64);
    await reopened.read(buf, 24 * K64);
    await reopened.close();
    expect(buf.equals(Buffer.alloc(K64, 0x66))).toBe(true);
  });
});
