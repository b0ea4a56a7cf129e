/**
 * Reads the server answers at once (Transmission's readAtOnce, BlockDevice.readNow), through a
 * real overlay over a raw base: their buffers come from arenas that are used again once every
 * reply carved from them has been sent. A client that sends thousands of reads in waves and reads
 * the replies late keeps many arenas in flight; every reply must still carry its own bytes, so an
 * arena reused before its replies left would show here as another offset's data.
 */
import { afterEach, expect, test } from 'vitest';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { openImage } from '../../src/image/open.js';
import { buildChain, Random } from '../helpers/engine-chain.js';
import { startServer, type TestServer } from '../helpers/nbd-server.js';
import { CMD, encode, negotiate } from '../helpers/nbd-wire.js';

const BS = 65536;
const SIZE = 64 * BS;

let server: TestServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

test('thousands of 4 KiB reads in waves, replies read late: each reply holds its own offset\'s bytes', async () => {
  const fs = new MemoryFileSystem();
  const chain = await buildChain(fs, '/r', { depth: 2, base: 'raw', size: SIZE, blockSize: BS, seed: 21 });
  const image = await openImage(chain.overlay, { fs });
  // Every read below is then answerable at once (map pages and the base's resolution in memory).
  await image.device.read(Buffer.alloc(SIZE), 0);
  expect(image.device.readNow!(Buffer.alloc(4096), 0)).toBe(true);
  server = await startServer([{ name: '', device: image.device }]);
  const { client } = await negotiate(server.socket);
  const rng = new Random(5);
  const offsets = new Map<bigint, number>();
  let handle = 1n;
  const WAVES = 4;
  const PER_WAVE = 1500; // 4 waves of 6 MiB: far more than the arenas kept (2 MiB)
  client.pause();
  for (let wave = 0; wave < WAVES; wave++) {
    const requests: Buffer[] = [];
    for (let i = 0; i < PER_WAVE; i++) {
      const offset = rng.below(SIZE / 512 - 8) * 512;
      offsets.set(handle, offset);
      requests.push(encode.request(CMD.READ, handle++, offset, 4096));
    }
    await client.write(Buffer.concat(requests));
    // Let the server answer this wave while the replies of the earlier ones still wait in the socket.
    await new Promise((resolve) => setTimeout(resolve, 30));
    if (wave === 1) client.resume(); // from here on, replies drain as later waves are answered
  }
  client.resume();
  let wrong = 0;
  for (let n = 0; n < WAVES * PER_WAVE; n++) {
    const reply = await client.simpleReply(4096);
    expect(reply.error).toBe(0);
    const offset = offsets.get(reply.handle)!;
    expect(offset).toBeDefined();
    offsets.delete(reply.handle);
    if (!reply.data.equals(chain.content.subarray(offset, offset + 4096))) wrong++;
  }
  expect(wrong).toBe(0);
  expect(offsets.size).toBe(0);
  client.socket.destroy();
  await server.close();
  server = undefined;
  await image.close();
});
