/**
 * Hostile and broken clients. Each case closes (or errors) that one connection; a second client
 * connected throughout keeps being served, the disk keeps its contents, and memory stays bounded.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { NbdServer } from '../../src/nbd/index.js';
import { MemoryDevice } from '../helpers/nbd-memory-device.js';
import { startServer, type TestServer } from '../helpers/nbd-server.js';
import { CMD, encode, negotiate, OPT, RawClient, REP_ERR, type RawClient as Client } from '../helpers/nbd-wire.js';

const SIZE = 32 * 1024 * 1024;
let srv: TestServer;
let device: MemoryDevice;
/** A well-behaved client connected for the whole file. */
let bystander: Client;
let handle = 1000n;

beforeAll(async () => {
  device = new MemoryDevice({ size: SIZE });
  device.fill(0, 0, Buffer.alloc(1024 * 1024, 0x42));
  srv = await startServer([{ name: 'disk', device }]);
  bystander = (await negotiate(srv.socket, 'disk')).client;
});
afterAll(async () => {
  bystander.close();
  await srv.close();
});

/** The bystander can still read what the disk held from the start. */
async function bystanderStillServed(): Promise<void> {
  const h = handle++;
  await bystander.write(encode.request(CMD.READ, h, 0, 4096));
  const r = await bystander.simpleReply(4096);
  expect(r.handle).toBe(h);
  expect(r.data.equals(Buffer.alloc(4096, 0x42))).toBe(true);
}

async function fixedNewstyle(): Promise<RawClient> {
  const c = await RawClient.greeted(srv.socket);
  await c.write(encode.clientFlags(1));
  return c;
}

async function settle(): Promise<void> {
  for (let i = 0; i < 200 && srv.server.connectionCount > 1; i++) await new Promise((r) => setTimeout(r, 10));
}

describe('during the handshake', () => {
  test('a bad option magic closes the connection', async () => {
    const c = await fixedNewstyle();
    await c.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    expect(await c.closedByServer()).toBe(true);
    await bystanderStillServed();
  });

  test('unknown client flags close the connection', async () => {
    const c = await RawClient.greeted(srv.socket);
    await c.write(encode.clientFlags(0x80000001));
    expect(await c.closedByServer()).toBe(true);
    await bystanderStillServed();
  });

  test('an option claiming 4 GiB of data is refused with ERR_TOO_BIG and a close, without reading it', async () => {
    const before = process.memoryUsage().arrayBuffers;
    const c = await fixedNewstyle();
    await c.write(encode.option(OPT.LIST, Buffer.alloc(0), 0xffffffff));
    const reply = await c.optionReply();
    expect(reply.type).toBe(REP_ERR.TOO_BIG);
    expect(reply.data.toString()).toMatch(/over the limit/);
    c.socket.write(Buffer.alloc(8 * 1024 * 1024, 0x55));
    expect(await c.closedByServer()).toBe(true);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(32 * 1024 * 1024);
    await bystanderStillServed();
  });

  test('an export name over 4096 bytes closes NBD_OPT_EXPORT_NAME', async () => {
    const c = await fixedNewstyle();
    await c.write(encode.option(OPT.EXPORT_NAME, Buffer.alloc(5000, 0x61)));
    expect(await c.closedByServer()).toBe(true);
    await bystanderStillServed();
  });

  test('an export name over 4096 bytes in NBD_OPT_GO is ERR_INVALID and negotiation goes on', async () => {
    const c = await fixedNewstyle();
    await c.write(encode.option(OPT.GO, encode.infoRequest(Buffer.alloc(5000, 0x61))));
    expect((await c.optionReply()).type).toBe(REP_ERR.INVALID);
    await c.write(encode.option(OPT.GO, encode.infoRequest('disk')));
    expect((await c.optionReplies()).at(-1)?.type).toBe(1);
    c.close();
  });

  test('a client that vanishes mid-option leaves nothing behind', async () => {
    const c = await fixedNewstyle();
    await c.write(encode.option(OPT.GO, encode.infoRequest('disk')).subarray(0, 19));
    c.close();
    await settle();
    expect(srv.server.connectionCount).toBe(1);
    await bystanderStillServed();
  });
});

describe('a client that never finishes the handshake', () => {
  test('is disconnected after the handshake timeout, freeing its slot; a client that finished stays connected', async () => {
    const small = await startServer([{ name: 'disk', device: new MemoryDevice({ size: 1024 * 1024 }) }], { handshakeTimeout: 300, maxConnections: 3 });
    try {
      const served = (await negotiate(small.socket, 'disk')).client;
      // One says nothing after the greeting; one lists the exports and then idles.
      const silent = await RawClient.greeted(small.socket);
      const idler = await RawClient.greeted(small.socket);
      await idler.write(encode.clientFlags(1));
      await idler.write(encode.option(OPT.LIST));
      // Not at once: only when the limit has passed.
      expect(await silent.closedByServer(50)).toBe(false);
      expect(await silent.closedByServer()).toBe(true);
      expect(await idler.closedByServer()).toBe(true);
      // The slots are free again (with all three held, a fourth connection would be refused at once).
      const next = await negotiate(small.socket, 'disk');
      for (const c of [served, next.client]) {
        await c.write(encode.request(CMD.READ, 7n, 0, 4096));
        expect((await c.simpleReply(4096)).error).toBe(0);
        c.close();
      }
    } finally {
      await small.close();
    }
  });
});

describe('while the server closes a refused client', () => {
  test('it stops reading: a client that reads no replies and keeps sending cannot grow the server', async () => {
    // The server's own side of the socket is needed to see what it holds and reads, so this test
    // accepts the connection itself and hands it to a server with a short drain timeout.
    const MiB = 1024 * 1024;
    const nbd = new NbdServer({ exports: [{ name: 'disk', device: new MemoryDevice({ size: MiB }) }], drainTimeout: 1000 });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowdisk-nbd-'));
    const socketPath = path.join(dir, 'nbd.sock');
    let serverSide: net.Socket | undefined;
    const listener = net.createServer((s) => {
      serverSide = s;
      void nbd.handleConnection(s);
    });
    await new Promise<void>((resolve) => listener.listen(socketPath, resolve));
    try {
      const c = await RawClient.greeted(socketPath);
      await c.write(encode.clientFlags(1));
      c.pause();
      // Option replies the client never reads, until a good part of them wait unsent at the server:
      // its closing handshake then cannot finish, and the connection lives on until the drain timeout.
      const side = serverSide as net.Socket;
      const lists = Buffer.concat(Array.from({ length: 2000 }, () => encode.option(OPT.LIST)));
      let sent = 4;
      for (let i = 0; i < 1000 && side.writableLength < 256 * 1024; i++) {
        await c.write(lists);
        sent += lists.length;
        // One batch at a time (about 100 KiB of replies), so the total stays well below 1 MiB.
        while (side.bytesRead < sent) await new Promise((r) => setTimeout(r, 1));
      }
      expect(side.writableLength).toBeGreaterThanOrEqual(256 * 1024);
      // Below the point where the handshake pauses reading on its own.
      expect(side.writableLength).toBeLessThan(MiB);
      const closed = new Promise((r) => side.once('close', r));
      await c.write(encode.option(OPT.LIST, Buffer.alloc(0), 0xffffffff));
      c.socket.write(Buffer.alloc(64 * MiB, 0x55));
      await closed;
      // Reading on would have taken in the whole 64 MiB while the connection drained.
      expect(side.bytesRead).toBeLessThan(8 * MiB);
      c.close();
      await bystanderStillServed();
    } finally {
      await new Promise((r) => listener.close(r));
      await nbd.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('during transmission', () => {
  test('garbage after the handshake closes that connection and changes nothing', async () => {
    const before = device.contents(0, 1024 * 1024);
    const { client } = await negotiate(srv.socket, 'disk');
    await client.write(Buffer.alloc(4096, 0xff));
    expect(await client.closedByServer()).toBe(true);
    expect(device.contents(0, 1024 * 1024).equals(before)).toBe(true);
    await bystanderStillServed();
  });

  test('a client that disconnects mid-header is released', async () => {
    const { client } = await negotiate(srv.socket, 'disk');
    await client.write(encode.request(CMD.READ, 1n, 0, 4096).subarray(0, 13));
    client.close();
    await settle();
    expect(srv.server.connectionCount).toBe(1);
    await bystanderStillServed();
  });

  test('a write cut off mid-payload never reaches the disk', async () => {
    const before = device.contents(0, 65536);
    const { client } = await negotiate(srv.socket, 'disk');
    await client.write(encode.request(CMD.WRITE, 1n, 0, 65536, 0, Buffer.alloc(65536, 0x99)).subarray(0, 28 + 30000));
    client.close();
    await settle();
    expect(srv.server.connectionCount).toBe(1);
    expect(device.contents(0, 65536).equals(before)).toBe(true);
    await bystanderStillServed();
  });

  test('a client that disconnects before reading its replies: received requests complete, the connection is released', async () => {
    const { client } = await negotiate(srv.socket, 'disk');
    const writes = Array.from({ length: 64 }, (_, i) => encode.request(CMD.WRITE, BigInt(i), 2 * 1024 * 1024 + i * 4096, 4096, 0, Buffer.alloc(4096, i + 1)));
    await client.write(Buffer.concat(writes));
    client.close();
    await settle();
    expect(srv.server.connectionCount).toBe(1);
    const written = device.contents(2 * 1024 * 1024, 64 * 4096);
    for (let i = 0; i < 64; i++) expect(written.subarray(i * 4096, (i + 1) * 4096).equals(Buffer.alloc(4096, i + 1))).toBe(true);
    await bystanderStillServed();
  });

  test('a client that sends reads without reading replies is paused: memory stays bounded', async () => {
    const { client } = await negotiate(srv.socket, 'disk');
    client.pause();
    const MiB = 1024 * 1024;
    const count = 200;
    const before = process.memoryUsage().arrayBuffers;
    const requests = Buffer.concat(Array.from({ length: count }, (_, i) => encode.request(CMD.READ, BigInt(i), (i % 31) * MiB, MiB)));
    client.socket.write(requests);
    await new Promise((r) => setTimeout(r, 500));
    const grown = process.memoryUsage().arrayBuffers - before;
    // Unbounded, this would be 200 MiB of read buffers; the limit is 64 MiB per connection.
    expect(grown).toBeLessThan(128 * MiB);
    client.resume();
    const seen = new Set<bigint>();
    for (let i = 0; i < count; i++) seen.add((await client.simpleReply(MiB)).handle);
    expect(seen.size).toBe(count);
    client.close();
    await bystanderStillServed();
  });
});
