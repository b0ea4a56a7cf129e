/**
 * The error values the spec prescribes, request by request, over a raw socket: ENOSPC for writes
 * past the end, EINVAL for bad ranges, flags, lengths and unknown commands, EPERM on a read-only
 * export. Each bad request leaves the connection usable.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { MemoryDevice } from '../helpers/nbd-memory-device.js';
import { startServer, type TestServer } from '../helpers/nbd-server.js';
import { CMD, encode, ERR, FLAG, negotiate, type RawClient } from '../helpers/nbd-wire.js';

const SIZE = 1024 * 1024;
const MAX = 32 * 1024 * 1024;
let srv: TestServer;
let disk: MemoryDevice;

beforeAll(async () => {
  disk = new MemoryDevice({ size: SIZE });
  srv = await startServer([
    { name: 'disk', device: disk },
    { name: 'ro', device: new MemoryDevice({ size: SIZE }), readOnly: true },
  ]);
});
afterAll(() => srv.close());

let handle = 100n;

/** Sends one request on a simple-reply connection and returns its error value. */
async function errorOf(c: RawClient, type: number, offset: number | bigint, length: number, flags = 0, payload?: Buffer): Promise<number> {
  const h = handle++;
  await c.write(encode.request(type, h, offset, length, flags, payload));
  const r = await c.simpleReply(type === CMD.READ ? length : 0);
  expect(r.handle).toBe(h);
  return r.error;
}

describe('range errors', () => {
  test('a write past the end is ENOSPC', async () => {
    const { client } = await negotiate(srv.socket, 'disk');
    expect(await errorOf(client, CMD.WRITE, SIZE - 512, 1024, 0, Buffer.alloc(1024))).toBe(ERR.ENOSPC);
    client.close();
  });

  test('write zeroes past the end is ENOSPC', async () => {
    const { client } = await negotiate(srv.socket, 'disk');
    expect(await errorOf(client, CMD.WRITE_ZEROES, SIZE, 512)).toBe(ERR.ENOSPC);
    client.close();
  });

  test('read, trim and cache past the end are EINVAL', async () => {
    const { client } = await negotiate(srv.socket, 'disk');
    expect(await errorOf(client, CMD.READ, SIZE - 512, 1024)).toBe(ERR.EINVAL);
    expect(await errorOf(client, CMD.TRIM, SIZE, 4096)).toBe(ERR.EINVAL);
    expect(await errorOf(client, CMD.CACHE, 2n ** 63n, 512)).toBe(ERR.EINVAL);
    client.close();
  });

  test('an offset beyond 2^53 is refused, not rounded into range', async () => {
    const { client } = await negotiate(srv.socket, 'disk');
    expect(await errorOf(client, CMD.READ, 2n ** 64n - 512n, 512)).toBe(ERR.EINVAL);
    client.close();
  });
});

describe('read-only exports', () => {
  test('write, trim and write zeroes are EPERM', async () => {
    const { client } = await negotiate(srv.socket, 'ro');
    expect(await errorOf(client, CMD.WRITE, 0, 512, 0, Buffer.alloc(512, 1))).toBe(ERR.EPERM);
    expect(await errorOf(client, CMD.TRIM, 0, 4096)).toBe(ERR.EPERM);
    expect(await errorOf(client, CMD.WRITE_ZEROES, 0, 4096)).toBe(ERR.EPERM);
    client.close();
  });

  test('read, flush and cache succeed, with FUA too', async () => {
    const { client } = await negotiate(srv.socket, 'ro');
    expect(await errorOf(client, CMD.READ, 0, 4096, FLAG.FUA)).toBe(0);
    expect(await errorOf(client, CMD.FLUSH, 0, 0, FLAG.FUA)).toBe(0);
    expect(await errorOf(client, CMD.CACHE, 0, 4096)).toBe(0);
    client.close();
  });
});

describe('malformed requests', () => {
  test('unknown commands are EINVAL and the connection goes on', async () => {
    const { client } = await negotiate(srv.socket, 'disk');
    for (const type of [8, 100, 65535]) expect(await errorOf(client, type, 0, 512)).toBe(ERR.EINVAL);
    expect(await errorOf(client, CMD.FLUSH, 0, 0)).toBe(0);
    client.close();
  });

  test('unknown command flags are EINVAL', async () => {
    const { client } = await negotiate(srv.socket, 'disk');
    expect(await errorOf(client, CMD.READ, 0, 512, 1 << 5)).toBe(ERR.EINVAL);
    expect(await errorOf(client, CMD.FLUSH, 0, 0, 1 << 15)).toBe(ERR.EINVAL);
    client.close();
  });

  test('a flag on a command it does not apply to is EINVAL', async () => {
    const { client } = await negotiate(srv.socket, 'disk');
    expect(await errorOf(client, CMD.WRITE, 0, 512, FLAG.NO_HOLE, Buffer.alloc(512))).toBe(ERR.EINVAL);
    expect(await errorOf(client, CMD.TRIM, 0, 512, FLAG.FAST_ZERO)).toBe(ERR.EINVAL);
    expect(await errorOf(client, CMD.READ, 0, 512, FLAG.REQ_ONE)).toBe(ERR.EINVAL);
    client.close();
  });

  test('DF without structured replies is EINVAL', async () => {
    const { client } = await negotiate(srv.socket, 'disk');
    expect(await errorOf(client, CMD.READ, 0, 512, FLAG.DF)).toBe(ERR.EINVAL);
    client.close();
  });

  test('a flush with a nonzero offset or length is EINVAL', async () => {
    const { client } = await negotiate(srv.socket, 'disk');
    expect(await errorOf(client, CMD.FLUSH, 512, 0)).toBe(ERR.EINVAL);
    expect(await errorOf(client, CMD.FLUSH, 0, 512)).toBe(ERR.EINVAL);
    client.close();
  });

  test('block status without a selected metadata context is EINVAL', async () => {
    const { client } = await negotiate(srv.socket, 'disk', { structured: true });
    const h = handle++;
    await client.write(encode.request(CMD.BLOCK_STATUS, h, 0, 4096));
    const [chunk] = await client.chunks();
    expect(chunk.handle).toBe(h);
    expect(chunk.payload.readUInt32BE(0)).toBe(ERR.EINVAL);
    client.close();
  });
});

describe('lengths over the maximum block size', () => {
  test('a read over 32 MiB is EINVAL', async () => {
    const { client } = await negotiate(srv.socket, 'disk');
    expect(await errorOf(client, CMD.READ, 0, MAX + 512)).toBe(ERR.EINVAL);
    client.close();
  });

  test('a write over 32 MiB is EINVAL, its payload is skipped, and the disk is unchanged', async () => {
    const before = disk.contents();
    const { client } = await negotiate(srv.socket, 'disk');
    expect(await errorOf(client, CMD.WRITE, 0, MAX + 512, 0, Buffer.alloc(MAX + 512, 0xee))).toBe(ERR.EINVAL);
    expect(await errorOf(client, CMD.FLUSH, 0, 0)).toBe(0);
    expect(disk.contents().equals(before)).toBe(true);
    client.close();
  });
});

describe('alignment', () => {
  test('a client that asked for block sizes is held to the 512-byte minimum', async () => {
    const { client } = await negotiate(srv.socket, 'disk', { blockSize: true });
    expect(await errorOf(client, CMD.READ, 100, 512)).toBe(ERR.EINVAL);
    expect(await errorOf(client, CMD.WRITE, 0, 100, 0, Buffer.alloc(100))).toBe(ERR.EINVAL);
    expect(await errorOf(client, CMD.READ, 512, 512)).toBe(0);
    client.close();
  });

  test('a client that did not ask gets byte granularity', async () => {
    const { client } = await negotiate(srv.socket, 'disk');
    expect(await errorOf(client, CMD.WRITE, 1001, 3, 0, Buffer.from('abc'))).toBe(0);
    const h = handle++;
    await client.write(encode.request(CMD.READ, h, 1000, 5));
    expect((await client.simpleReply(5)).data).toEqual(Buffer.from([0, 0x61, 0x62, 0x63, 0]));
    client.close();
  });
});
