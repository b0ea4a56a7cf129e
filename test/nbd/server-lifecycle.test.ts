/**
 * The server's life around the protocol: a graceful close (in-flight requests finish, buffered ones
 * are answered ESHUTDOWN, devices closed once, sockets removed), the connection limit, stale
 * sockets, and the URIs it reports.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { NbdServer } from '../../src/nbd/index.js';
import { MemoryDevice } from '../helpers/nbd-memory-device.js';
import { startServer, type TestServer } from '../helpers/nbd-server.js';
import { CMD, encode, ERR, negotiate, RawClient } from '../helpers/nbd-wire.js';

describe('close()', () => {
  // These tests close the server itself (not the helper's close(), which also removes the
  // directory), so the socket's directory is removed here.
  const started: TestServer[] = [];
  afterEach(() => {
    for (const srv of started.splice(0)) fs.rmSync(srv.dir, { recursive: true, force: true });
  });
  const start = async (...args: Parameters<typeof startServer>) => {
    const srv = await startServer(...args);
    started.push(srv);
    return srv;
  };

  test('in-flight requests finish, buffered ones are answered ESHUTDOWN, then the connection closes', async () => {
    const device = new MemoryDevice({ size: 1024 * 1024 });
    const srv = await start([{ name: 'disk', device }]);
    const { client } = await negotiate(srv.socket);
    const release = device.hold();
    // 300 reads in one chunk: 256 (the per-connection limit) start, 44 wait in the receive buffer.
    await client.write(Buffer.concat(Array.from({ length: 300 }, (_, i) => encode.request(CMD.READ, BigInt(i), 0, 512))));
    while (device.log.length < 256) await new Promise((r) => setTimeout(r, 5));
    const closing = srv.server.close();
    release();
    const errors = new Map<number, number>();
    for (let i = 0; i < 300; i++) {
      const r = await client.simpleReply(512);
      errors.set(r.error, (errors.get(r.error) ?? 0) + 1);
    }
    expect(Object.fromEntries(errors)).toEqual({ 0: 256, [ERR.ESHUTDOWN]: 44 });
    expect(await client.closedByServer()).toBe(true);
    await closing;
    expect(device.closed).toBe(true);
    expect(fs.existsSync(srv.socket)).toBe(false);
  });

  test('a client still negotiating is disconnected, and the device is closed once', async () => {
    const device = new MemoryDevice({ size: 1024 * 1024 });
    let closes = 0;
    const close = device.close.bind(device);
    device.close = () => {
      closes++;
      return close();
    };
    const srv = await start([
      { name: 'a', device },
      { name: 'b', device, readOnly: true },
    ]);
    const c = await RawClient.greeted(srv.socket);
    await srv.server.close();
    expect(await c.closedByServer()).toBe(true);
    expect(closes).toBe(1);
  });

  test('a client that never reads its replies cannot hold close() open', async () => {
    const srv = await start([{ name: 'disk', device: new MemoryDevice({ size: 4 * 1024 * 1024 }) }], { drainTimeout: 200 });
    const { client } = await negotiate(srv.socket);
    client.pause();
    // 100 MiB of replies: far more than the socket buffers hold.
    client.socket.write(Buffer.concat(Array.from({ length: 100 }, (_, i) => encode.request(CMD.READ, BigInt(i), 0, 1024 * 1024))));
    await new Promise((r) => setTimeout(r, 200));
    await srv.server.close();
    expect(srv.server.connectionCount).toBe(0);
    client.close();
  });

  test('after close() nobody can connect', async () => {
    const srv = await start([{ name: 'disk', device: new MemoryDevice({ size: 4096 }) }]);
    await srv.server.close();
    await expect(RawClient.connect(srv.socket)).rejects.toThrow();
  });
});

describe('listening', () => {
  test('connections beyond maxConnections are closed at once; the others are served', async () => {
    const srv = await startServer([{ name: 'disk', device: new MemoryDevice({ size: 4096 }) }], { maxConnections: 1 });
    const first = await RawClient.greeted(srv.socket);
    const second = await RawClient.connect(srv.socket);
    expect(await second.closedByServer()).toBe(true);
    await first.write(encode.clientFlags(1));
    await first.write(encode.option(3));
    expect((await first.optionReplies()).length).toBe(2);
    first.close();
    await srv.close();
  });

  test('a stale socket file left by a dead server is replaced; a live one is refused', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowdisk-nbd-'));
    const socket = path.join(dir, 's.sock');
    // A socket file nobody listens on, as a killed server leaves it.
    const dead = net.createServer();
    await new Promise<void>((r) => dead.listen(socket, r));
    fs.linkSync(socket, `${socket}.keep`);
    await new Promise<void>((r) => dead.close(() => r()));
    fs.renameSync(`${socket}.keep`, socket);
    const server = new NbdServer({ exports: [{ name: 'disk', device: new MemoryDevice({ size: 4096 }) }] });
    await server.listen({ socket });
    const other = new NbdServer({ exports: [{ name: 'disk', device: new MemoryDevice({ size: 4096 }) }] });
    await expect(other.listen({ socket })).rejects.toMatchObject({ code: 'COWDISK_E_EXISTS' });
    await server.close();
    await other.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('listen reports nbd+unix and nbd:// URIs for every export; TCP binds 127.0.0.1', async () => {
    const server = new NbdServer({
      exports: [
        { name: 'disk', device: new MemoryDevice({ size: 4096 }) },
        { name: 'two words', device: new MemoryDevice({ size: 4096 }) },
      ],
    });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowdisk-nbd-'));
    expect(await server.listen({ socket: path.join(dir, 's.sock') })).toEqual([
      `nbd+unix:///disk?socket=${dir}/s.sock`,
      `nbd+unix:///two%20words?socket=${dir}/s.sock`,
    ]);
    const [tcp] = await server.listen({ port: 0 });
    expect(tcp).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/disk$/);
    expect(server.addresses()[1]).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(server.uris('')).toEqual([`nbd+unix:///?socket=${dir}/s.sock`, tcp.replace(/disk$/, '')]);
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('exports must be named apart and within the 4096-byte limit', () => {
    const device = new MemoryDevice({ size: 4096 });
    expect(() => new NbdServer({ exports: [] })).toThrow(/at least one export/);
    expect(() => new NbdServer({ exports: [{ name: 'a', device }, { name: 'a', device }] })).toThrow(/Two exports/);
    expect(() => new NbdServer({ exports: [{ name: 'x'.repeat(4097), device }] })).toThrow(/not valid/);
  });
});
