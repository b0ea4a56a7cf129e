/**
 * The receive path that reads the socket into the server's own memory (own-reads.ts) and lands
 * large WRITE payloads straight in pooled buffers (framing.ts `expect`): engaged on the Node the
 * project runs on, exact whatever sizes the stream is cut into, and paused and resumed by the
 * connection's limits like the 'data' path it replaces.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { pattern, Random } from '../helpers/engine-chain.js';
import { MemoryDevice } from '../helpers/nbd-memory-device.js';
import { startServer, type TestServer } from '../helpers/nbd-server.js';
import { CMD, encode, negotiate } from '../helpers/nbd-wire.js';

const SIZE = 64 * 1024 * 1024;
let srv: TestServer;

beforeAll(async () => {
  srv = await startServer([{ name: '', device: new MemoryDevice({ size: SIZE, blockSize: 4096 }) }]);
});
afterAll(() => srv.close());

/** `length` random bytes, different for each k (pattern's seeds that are multiples of 3 give random bytes). */
const randomBytes = (length: number, k: number): Buffer => pattern(3 * k, length);

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const pauseBriefly = (): Promise<void> => new Promise((r) => setTimeout(r, 1));

test('a plain connection in transmission reads into the server\'s own buffers on this Node', async () => {
  const before = srv.server.ownReadCount;
  const { client } = await negotiate(srv.socket);
  // One round trip, so the server has certainly entered transmission for this connection.
  await client.readAt(1n, 0, 512);
  expect(srv.server.ownReadCount).toBe(before + 1);
  client.close();
});

test('writes of every size (over 4 MiB kept as they come, not expected), sent in pieces cut anywhere, arrive intact and in order', async () => {
  const { client } = await negotiate(srv.socket);
  const rng = new Random(99);
  const rand = (n: number): number => rng.below(n);
  const sizes = [4096, 128 * 1024, 1024 * 1024, 512, 128 * 1024 - 512, 300 * 1024, 4 * 1024 * 1024, 64 * 1024, 2 * 1024 * 1024 + 512, 5 * 1024 * 1024];
  const writes: { offset: number; data: Buffer }[] = [];
  let offset = 0;
  for (let round = 0; round < 3; round++) {
    for (const [i, n] of sizes.entries()) {
      writes.push({ offset, data: randomBytes(n, round * 100 + i + 1) });
      offset += n + 4096;
    }
  }
  // Rewrites of earlier ranges, so that order matters.
  writes.push({ offset: writes[2].offset, data: randomBytes(writes[2].data.length, 777) });
  const stream = Buffer.concat(writes.map((w, i) => encode.request(CMD.WRITE, BigInt(i + 1), w.offset, w.data.length, 0, w.data)));
  for (let at = 0; at < stream.length; ) {
    const n = Math.min(stream.length - at, 1 + rand(rand(8) === 0 ? 16 : 200 * 1024));
    await client.write(stream.subarray(at, at + n));
    at += n;
    if (rand(16) === 0) await pauseBriefly();
  }
  for (let i = 0; i < writes.length; i++) {
    const r = await client.simpleReply();
    expect({ handle: r.handle, error: r.error }).toEqual({ handle: BigInt(i + 1), error: 0 });
  }
  const last = new Map<number, Buffer>();
  for (const w of writes) last.set(w.offset, w.data);
  let h = 1000n;
  for (const [at, data] of last) {
    const got = await client.readAt(h++, at, data.length);
    expect(sha(got)).toBe(sha(data));
  }
  client.close();
});

test('a connection held at its limits by a client that does not read stops reading, and resumes exactly', async () => {
  const { client } = await negotiate(srv.socket);
  const data = randomBytes(1024 * 1024, 5);
  await client.write(encode.request(CMD.WRITE, 1n, 0, data.length, 0, data));
  expect((await client.simpleReply()).error).toBe(0);
  client.pause();
  // 96 MiB of replies asked for: over the connection's 64 MiB, so the server stops reading...
  const reads = 96;
  const requests = Buffer.concat(Array.from({ length: reads }, (_, i) => encode.request(CMD.READ, BigInt(10 + i), 0, data.length)));
  // ...while a large write and a read of it follow in the same stream.
  const late = randomBytes(1024 * 1024, 6);
  const tail = Buffer.concat([encode.request(CMD.WRITE, 500n, 8 * 1024 * 1024, late.length, 0, late), encode.request(CMD.READ, 501n, 8 * 1024 * 1024, late.length)]);
  client.socket.write(requests);
  client.socket.write(tail);
  await new Promise((r) => setTimeout(r, 200));
  client.resume();
  for (let i = 0; i < reads; i++) {
    const r = await client.simpleReply(data.length);
    expect(r.handle).toBe(BigInt(10 + i));
    if (!r.data.equals(data)) expect(sha(r.data)).toBe(sha(data));
  }
  expect((await client.simpleReply()).handle).toBe(500n);
  const r = await client.simpleReply(late.length);
  expect(r.handle).toBe(501n);
  expect(sha(r.data)).toBe(sha(late));
  client.close();
}, 30_000);

test('a large write cut off halfway costs that connection only', async () => {
  const { client } = await negotiate(srv.socket);
  const data = randomBytes(1024 * 1024, 8);
  const whole = encode.request(CMD.WRITE, 1n, 48 * 1024 * 1024, data.length, 0, data);
  await client.write(whole.subarray(0, 28 + 300 * 1024));
  await pauseBriefly();
  client.socket.destroy();
  const other = await negotiate(srv.socket);
  const small = randomBytes(4096, 9);
  await other.client.write(encode.request(CMD.WRITE, 2n, 0, small.length, 0, small));
  expect((await other.client.simpleReply()).error).toBe(0);
  expect((await other.client.readAt(3n, 0, small.length)).equals(small)).toBe(true);
  // Nothing of the cut write reached the device.
  expect((await other.client.readAt(4n, 48 * 1024 * 1024, 4096)).equals(Buffer.alloc(4096))).toBe(true);
  other.client.close();
});

test('bytes the kernel delivers one at a time through own reads still make whole requests', async () => {
  const { client } = await negotiate(srv.socket);
  const data = randomBytes(200 * 1024, 11);
  const req = encode.request(CMD.WRITE, 7n, 32 * 1024 * 1024, data.length, 0, data);
  // Small writes with the socket's Nagle off come out as separate reads on the server.
  client.socket.setNoDelay(true);
  for (let i = 0; i < 64; i++) {
    client.socket.write(req.subarray(i, i + 1));
    await pauseBriefly();
  }
  await client.write(req.subarray(64));
  expect((await client.simpleReply()).handle).toBe(7n);
  expect(sha(await client.readAt(8n, 32 * 1024 * 1024, data.length))).toBe(sha(data));
  client.close();
});
