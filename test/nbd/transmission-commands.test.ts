/**
 * What each transmission command does to the device, over a raw socket: FUA reaching the device
 * (or becoming a flush), WRITE_ZEROES flags, CACHE, zero-length requests, pipelining with replies
 * out of order, and NBD_CMD_DISC finishing in-flight requests first.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { MemoryDevice } from '../helpers/nbd-memory-device.js';
import { startServer, type TestServer } from '../helpers/nbd-server.js';
import { CMD, encode, ERR, FLAG, negotiate } from '../helpers/nbd-wire.js';

const SIZE = 1024 * 1024;
let srv: TestServer | undefined;
afterEach(async () => {
  await srv?.close();
  srv = undefined;
});

async function serve(device: MemoryDevice): Promise<TestServer> {
  srv = await startServer([{ name: 'disk', device }]);
  return srv;
}

describe('commands', () => {
  test('WRITE then READ returns the bytes written', async () => {
    const s = await serve(new MemoryDevice({ size: SIZE }));
    const { client } = await negotiate(s.socket);
    const data = Buffer.alloc(8192, 0x5a);
    await client.write(encode.request(CMD.WRITE, 1n, 4096, data.length, 0, data));
    expect((await client.simpleReply()).error).toBe(0);
    await client.write(encode.request(CMD.READ, 2n, 4096, data.length));
    expect((await client.simpleReply(data.length)).data).toEqual(data);
    client.close();
  });

  test('FUA reaches a device that honours it as a FUA write', async () => {
    const device = new MemoryDevice({ size: SIZE });
    const s = await serve(device);
    const { client } = await negotiate(s.socket);
    await client.write(encode.request(CMD.WRITE, 1n, 0, 512, FLAG.FUA, Buffer.alloc(512, 1)));
    expect((await client.simpleReply()).error).toBe(0);
    expect(device.log).toContain('write+fua 0 512');
    expect(device.flushes).toBe(0);
    client.close();
  });

  test('FUA on a device without it is a write followed by a flush, for WRITE, TRIM and WRITE_ZEROES', async () => {
    const device = new MemoryDevice({ size: SIZE, capabilities: { fua: false } });
    const s = await serve(device);
    const { client } = await negotiate(s.socket);
    await client.write(encode.request(CMD.WRITE, 1n, 0, 512, FLAG.FUA, Buffer.alloc(512, 1)));
    await client.write(encode.request(CMD.TRIM, 2n, 65536, 65536, FLAG.FUA));
    await client.write(encode.request(CMD.WRITE_ZEROES, 3n, 131072, 65536, FLAG.FUA));
    for (let i = 0; i < 3; i++) expect((await client.simpleReply()).error).toBe(0);
    expect(device.log.filter((l) => l.startsWith('flush'))).toHaveLength(3);
    client.close();
  });

  test('FLUSH reaches the device', async () => {
    const device = new MemoryDevice({ size: SIZE });
    const s = await serve(device);
    const { client } = await negotiate(s.socket);
    await client.write(encode.request(CMD.FLUSH, 9n, 0, 0));
    expect(await client.simpleReply()).toMatchObject({ error: 0, handle: 9n });
    expect(device.flushes).toBe(1);
    client.close();
  });

  test('TRIM makes the range read as zeros', async () => {
    const device = new MemoryDevice({ size: SIZE });
    device.fill(0, 0, Buffer.alloc(SIZE, 7));
    const s = await serve(device);
    const { client } = await negotiate(s.socket);
    await client.write(encode.request(CMD.TRIM, 1n, 65536, 131072));
    expect((await client.simpleReply()).error).toBe(0);
    expect(device.contents().subarray(65536, 196608).equals(Buffer.alloc(131072))).toBe(true);
    expect(device.contents()[65535]).toBe(7);
    client.close();
  });

  test('WRITE_ZEROES passes NO_HOLE and FAST_ZERO to the device', async () => {
    const device = new MemoryDevice({ size: SIZE });
    device.fill(0, 0, Buffer.alloc(SIZE, 7));
    const s = await serve(device);
    const { client } = await negotiate(s.socket);
    await client.write(encode.request(CMD.WRITE_ZEROES, 1n, 0, 65536, FLAG.NO_HOLE));
    await client.write(encode.request(CMD.WRITE_ZEROES, 2n, 65536, 65536, FLAG.FAST_ZERO));
    expect((await client.simpleReply()).error).toBe(0);
    expect((await client.simpleReply()).error).toBe(0);
    expect(device.log).toEqual(expect.arrayContaining(['zero+nohole 0 65536', 'zero+fast 65536 65536']));
    expect(device.contents().subarray(0, 131072).equals(Buffer.alloc(131072))).toBe(true);
    client.close();
  });

  test('FAST_ZERO on a device that cannot zero fast is ENOTSUP and leaves the data alone', async () => {
    const device = new MemoryDevice({ size: SIZE, capabilities: { fastZero: false } });
    device.fill(0, 0, Buffer.alloc(SIZE, 7));
    const s = await serve(device);
    const { client } = await negotiate(s.socket);
    await client.write(encode.request(CMD.WRITE_ZEROES, 1n, 0, 65536, FLAG.FAST_ZERO));
    expect((await client.simpleReply()).error).toBe(ERR.ENOTSUP);
    expect(device.contents()[0]).toBe(7);
    client.close();
  });

  test('CACHE reads the range through the device', async () => {
    const device = new MemoryDevice({ size: 4 * SIZE });
    const s = await serve(device);
    const { client } = await negotiate(s.socket);
    await client.write(encode.request(CMD.CACHE, 1n, 0, 3 * SIZE));
    expect((await client.simpleReply()).error).toBe(0);
    expect(device.log.filter((l) => l.startsWith('read')).reduce((n, l) => n + Number(l.split(' ')[2]), 0)).toBe(3 * SIZE);
    client.close();
  });

  test('zero-length READ, WRITE and TRIM succeed without touching the device', async () => {
    const device = new MemoryDevice({ size: SIZE });
    const s = await serve(device);
    const { client } = await negotiate(s.socket);
    await client.write(encode.request(CMD.READ, 1n, 0, 0));
    await client.write(encode.request(CMD.WRITE, 2n, 0, 0));
    await client.write(encode.request(CMD.TRIM, 3n, 0, 0));
    for (let i = 0; i < 3; i++) expect((await client.simpleReply()).error).toBe(0);
    expect(device.log).toEqual([]);
    client.close();
  });
});

describe('pipelining', () => {
  test('requests sent together are all answered, as each completes, out of order', async () => {
    const device = new MemoryDevice({ size: SIZE, blockSize: 4096, delay: 20 });
    for (let i = 0; i < 16; i++) device.fill(0, i * 4096, Buffer.alloc(4096, i + 1));
    const s = await serve(device);
    const { client } = await negotiate(s.socket);
    await client.write(Buffer.concat(Array.from({ length: 16 }, (_, i) => encode.request(CMD.READ, BigInt(i), i * 4096, 4096))));
    const order: number[] = [];
    for (let i = 0; i < 16; i++) {
      const r = await client.simpleReply(4096);
      const n = Number(r.handle);
      expect(r.data.equals(Buffer.alloc(4096, n + 1))).toBe(true);
      order.push(n);
    }
    expect([...order].sort((a, b) => a - b)).toEqual(Array.from({ length: 16 }, (_, i) => i));
    expect(order).not.toEqual([...order].sort((a, b) => a - b));
    client.close();
  });

  test('NBD_CMD_DISC answers the requests in flight before closing', async () => {
    const device = new MemoryDevice({ size: SIZE, delay: 50 });
    const s = await serve(device);
    const { client } = await negotiate(s.socket);
    await client.write(
      Buffer.concat([encode.request(CMD.WRITE, 1n, 0, 512, 0, Buffer.alloc(512, 3)), encode.request(CMD.FLUSH, 2n, 0, 0), encode.request(CMD.DISC, 3n, 0, 0)]),
    );
    const handles = [(await client.simpleReply()).handle, (await client.simpleReply()).handle].sort();
    expect(handles).toEqual([1n, 2n]);
    expect(await client.closedByServer()).toBe(true);
    expect(device.contents()[0]).toBe(3);
  });
});
