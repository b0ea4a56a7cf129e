/**
 * NBD_OPT_STARTTLS byte for byte, against the spec's "TLS support" section: what a server that
 * requires TLS answers before it, what is forgotten after it, and what happens to clients that
 * break the rules. The test's wire client (nbd-wire.ts) speaks NBD itself and node:tls for the
 * TLS part; the PSK file is made by psktool. Every refused client costs its connection only:
 * a client in transmission over TLS is served throughout.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { CowdiskError } from '../../src/errors.js';
import { loadTlsCredentials, parsePskFile } from '../../src/nbd/index.js';
import { MemoryDevice } from '../helpers/nbd-memory-device.js';
import { tempDir } from '../helpers/nbd-images.js';
import { startServer, type TestServer } from '../helpers/nbd-server.js';
import { makePsk } from '../helpers/nbd-tls.js';
import { CMD, encode, INFO, OPT, RawClient, REP, REP_ERR } from '../helpers/nbd-wire.js';

const SIZE = 1024 * 1024;
const SEND_DF = 1 << 7;
let dir: string;
let pskFile: string;
let key: Buffer;
let required: TestServer;
let offered: TestServer;
let device: MemoryDevice;
const refusals: CowdiskError[] = [];
/** A client in transmission over TLS for the whole file. */
let bystander: RawClient;
let handle = 1n;

function pskOptions(identity = 'alice', psk = key): tls.ConnectionOptions {
  return { pskCallback: () => ({ identity, psk }), ciphers: 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384', checkServerIdentity: () => undefined };
}

async function fixedNewstyle(srv: TestServer, flags = 1): Promise<RawClient> {
  const c = await RawClient.greeted(srv.socket);
  await c.write(encode.clientFlags(flags));
  return c;
}

async function ask(c: RawClient, option: number, data?: Buffer): Promise<{ type: number; data: Buffer }[]> {
  await c.write(encode.option(option, data));
  return c.optionReplies();
}

/** Sends STARTTLS, expects ACK, and runs the TLS handshake: the client to use from now on. */
async function startTls(c: RawClient, options = pskOptions()): Promise<RawClient> {
  expect((await ask(c, OPT.STARTTLS)).map((r) => r.type)).toEqual([REP.ACK]);
  return c.startTls(options);
}

/** Enters transmission with NBD_OPT_GO; returns the transmission flags. */
async function go(c: RawClient, name = 'disk'): Promise<number> {
  const replies = await ask(c, OPT.GO, encode.infoRequest(name));
  expect(replies[replies.length - 1].type).toBe(REP.ACK);
  const exportInfo = replies.find((r) => r.type === REP.INFO && r.data.readUInt16BE(0) === INFO.EXPORT)!;
  return exportInfo.data.readUInt16BE(10);
}

async function bystanderStillServed(): Promise<void> {
  expect((await bystander.readAt(handle++, 0, 4096)).equals(Buffer.alloc(4096, 0x42))).toBe(true);
}

async function settle(srv: TestServer, connections: number): Promise<void> {
  for (let i = 0; i < 200 && srv.server.connectionCount > connections; i++) await new Promise((r) => setTimeout(r, 10));
}

beforeAll(async () => {
  dir = tempDir();
  pskFile = await makePsk(dir, ['alice']);
  key = parsePskFile(fs.readFileSync(pskFile, 'utf8'), pskFile).get('alice')!;
  device = new MemoryDevice({ size: SIZE });
  device.fill(0, 0, Buffer.alloc(SIZE, 0x42));
  const onClientRefused = (e: CowdiskError): void => void refusals.push(e);
  required = await startServer([{ name: 'disk', device }], {
    tls: loadTlsCredentials({ mode: 'require', pskFile }),
    onClientRefused,
    handshakeTimeout: 1000,
  });
  offered = await startServer([{ name: 'disk', device: new MemoryDevice({ size: SIZE }) }], { tls: loadTlsCredentials({ mode: 'on', pskFile }) });
  bystander = await startTls(await fixedNewstyle(required));
  await go(bystander);
});
afterAll(async () => {
  bystander.close();
  await required.close();
  await offered.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('--tls require (FORCEDTLS)', () => {
  test('before TLS every option but STARTTLS and ABORT is NBD_REP_ERR_TLS_REQD, and negotiation goes on', async () => {
    const c = await fixedNewstyle(required);
    for (const [option, data] of [
      [OPT.LIST, undefined],
      [OPT.INFO, encode.infoRequest('disk')],
      [OPT.GO, encode.infoRequest('disk')],
      [OPT.STRUCTURED_REPLY, undefined],
      [OPT.LIST_META, encode.metaRequest('disk', [])],
      [99, Buffer.from('unknown option data')],
    ] as [number, Buffer | undefined][]) {
      const replies = await ask(c, option, data);
      expect(replies.map((r) => [r.option, r.type])).toEqual([[option, REP_ERR.TLS_REQD]]);
      expect(replies[0].data.toString()).toMatch(/requires TLS/);
    }
    expect((await ask(c, OPT.ABORT)).map((r) => r.type)).toEqual([REP.ACK]);
    expect(await c.closedByServer()).toBe(true);
    await settle(required, 1);
    expect(refusals.pop()).toMatchObject({ code: 'COWDISK_E_TLS_REQUIRED', message: expect.stringMatching(/NBD_OPT_LIST/) });
    await bystanderStillServed();
  });

  test('NBD_OPT_EXPORT_NAME before TLS closes the connection (it cannot carry an error)', async () => {
    const c = await fixedNewstyle(required);
    await c.write(encode.option(OPT.EXPORT_NAME, Buffer.from('disk')));
    expect(await c.closedByServer()).toBe(true);
    expect(c.available).toBe(0);
    await settle(required, 1);
    expect(refusals.pop()?.code).toBe('COWDISK_E_TLS_REQUIRED');
    await bystanderStillServed();
  });

  test('a client without NBD_FLAG_C_FIXED_NEWSTYLE cannot start TLS, so it is closed at its flags', async () => {
    const c = await fixedNewstyle(required, 0);
    expect(await c.closedByServer()).toBe(true);
    await settle(required, 1);
    expect(refusals.pop()?.code).toBe('COWDISK_E_TLS_REQUIRED');
  });

  test('inside TLS the same export is served; STARTTLS again is NBD_REP_ERR_INVALID', async () => {
    const c = await startTls(await fixedNewstyle(required));
    expect((await ask(c, OPT.STARTTLS)).map((r) => r.type)).toEqual([REP_ERR.INVALID]);
    expect((await ask(c, OPT.LIST)).map((r) => r.type)).toEqual([REP.SERVER, REP.ACK]);
    await go(c);
    await c.write(encode.request(CMD.WRITE, 7n, 8192, 4096, 0, Buffer.alloc(4096, 0x42)));
    expect((await c.simpleReply()).error).toBe(0);
    await c.write(encode.request(CMD.READ, 8n, 8192, 4096));
    expect((await c.simpleReply(4096)).data.equals(Buffer.alloc(4096, 0x42))).toBe(true);
    c.close();
  });

  test('a PSK session settles on AES-GCM even when the client would rather have ChaCha20', async () => {
    const c = await fixedNewstyle(required);
    expect((await ask(c, OPT.STARTTLS)).map((r) => r.type)).toEqual([REP.ACK]);
    const secure = await c.startTls({ ...pskOptions(), ciphers: 'TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256' });
    expect((secure.socket as tls.TLSSocket).getCipher().name).toBe('TLS_AES_128_GCM_SHA256');
    secure.close();
  });

  test('STARTTLS with data is NBD_REP_ERR_INVALID, not an upgrade', async () => {
    const c = await fixedNewstyle(required);
    expect((await ask(c, OPT.STARTTLS, Buffer.from('x'))).map((r) => r.type)).toEqual([REP_ERR.INVALID]);
    c.close();
  });
});

describe('--tls on (TLS offered)', () => {
  test('a plaintext client is served as before', async () => {
    const c = await fixedNewstyle(offered);
    await go(c);
    await c.write(encode.request(CMD.READ, 1n, 0, 512));
    expect((await c.simpleReply(512)).error).toBe(0);
    c.close();
  });

  test('a client without NBD_FLAG_C_FIXED_NEWSTYLE stays in NOTLS mode: STARTTLS is NBD_REP_ERR_POLICY', async () => {
    const c = await fixedNewstyle(offered, 0);
    const [reply] = await ask(c, OPT.STARTTLS);
    expect(reply.type).toBe(REP_ERR.POLICY);
    expect(reply.data.toString()).toMatch(/NBD_FLAG_C_FIXED_NEWSTYLE/);
    c.close();
  });

  test('what was negotiated before STARTTLS is forgotten: structured replies, and the contexts that need them', async () => {
    const c = await fixedNewstyle(offered);
    expect((await ask(c, OPT.STRUCTURED_REPLY)).map((r) => r.type)).toEqual([REP.ACK]);
    expect((await ask(c, OPT.SET_META, encode.metaRequest('disk', ['base:allocation']))).map((r) => r.type)).toEqual([REP.META_CONTEXT, REP.ACK]);
    const secure = await startTls(c);
    // Without structured replies renegotiated inside TLS, SET_META_CONTEXT is refused and DF is not offered.
    expect((await ask(secure, OPT.SET_META, encode.metaRequest('disk', ['base:allocation']))).map((r) => r.type)).toEqual([REP_ERR.INVALID]);
    expect((await go(secure)) & SEND_DF).toBe(0);
    await secure.write(encode.request(CMD.BLOCK_STATUS, 2n, 0, 4096));
    expect((await secure.simpleReply()).error).toBe(22);
    secure.close();
  });
});

describe('clients that break the TLS rules cost their own connection only', () => {
  test('bytes sent after STARTTLS before the TLS handshake close the connection', async () => {
    const c = await fixedNewstyle(required);
    await c.write(Buffer.concat([encode.option(OPT.STARTTLS), encode.option(OPT.GO, encode.infoRequest('disk'))]));
    expect((await c.optionReply()).type).toBe(REP.ACK);
    expect(await c.closedByServer()).toBe(true);
    await bystanderStillServed();
  });

  test('a client that goes away in the middle of the TLS handshake is reported and released', async () => {
    const c = await fixedNewstyle(required);
    expect((await ask(c, OPT.STARTTLS)).map((r) => r.type)).toEqual([REP.ACK]);
    // The start of a TLS record (handshake, TLS 1.0 framing, 512 bytes announced), then nothing.
    await c.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
    c.close();
    await settle(required, 1);
    expect(required.server.connectionCount).toBe(1);
    expect(refusals.pop()).toMatchObject({ code: 'COWDISK_E_TLS_HANDSHAKE', message: expect.stringMatching(/closed the connection during the TLS handshake/) });
    await bystanderStillServed();
  });

  test('a client that stalls in the TLS handshake is cut off at the handshake timeout', async () => {
    const c = await fixedNewstyle(required);
    expect((await ask(c, OPT.STARTTLS)).map((r) => r.type)).toEqual([REP.ACK]);
    expect(await c.closedByServer(3000)).toBe(true);
    await settle(required, 1);
    expect(refusals.pop()).toMatchObject({ code: 'COWDISK_E_TLS_HANDSHAKE', message: expect.stringMatching(/within the handshake timeout \(1 s\)/) });
    await bystanderStillServed();
  });

  test('a client that answers the ACK in plaintext is told apart from a TLS failure', async () => {
    const c = await fixedNewstyle(required);
    expect((await ask(c, OPT.STARTTLS)).map((r) => r.type)).toEqual([REP.ACK]);
    await c.write(encode.option(OPT.GO, encode.infoRequest('disk')));
    expect(await c.closedByServer()).toBe(true);
    await settle(required, 1);
    expect(refusals.pop()).toMatchObject({ code: 'COWDISK_E_TLS_HANDSHAKE', message: expect.stringMatching(/did not start TLS after NBD_OPT_STARTTLS/) });
    await bystanderStillServed();
  });

  test('a client that offers no pre-shared key to a PSK server is told so', async () => {
    const c = await fixedNewstyle(required);
    expect((await ask(c, OPT.STARTTLS)).map((r) => r.type)).toEqual([REP.ACK]);
    await expect(c.startTls({ checkServerIdentity: () => undefined, rejectUnauthorized: false })).rejects.toThrow();
    await settle(required, 1);
    expect(refusals.pop()).toMatchObject({ code: 'COWDISK_E_TLS_HANDSHAKE', message: expect.stringMatching(/offered no pre-shared key/) });
    await bystanderStillServed();
  });

  test('a wrong key fails the handshake on both sides; the server says which identity', async () => {
    const c = await fixedNewstyle(required);
    expect((await ask(c, OPT.STARTTLS)).map((r) => r.type)).toEqual([REP.ACK]);
    await expect(c.startTls(pskOptions('alice', Buffer.alloc(32, 7)))).rejects.toThrow();
    await settle(required, 1);
    expect(refusals.pop()).toMatchObject({ code: 'COWDISK_E_TLS_HANDSHAKE', message: expect.stringMatching(/key for PSK identity "alice" is not the one/) });
    await bystanderStillServed();
  });

  test('server shutdown with a client in the middle of its TLS handshake does not wait for it', async () => {
    const srv = await startServer([{ name: 'disk', device: new MemoryDevice({ size: SIZE }) }], { tls: loadTlsCredentials({ mode: 'require', pskFile }) });
    const c = await fixedNewstyle(srv);
    expect((await ask(c, OPT.STARTTLS)).map((r) => r.type)).toEqual([REP.ACK]);
    await srv.close();
    expect(await c.closedByServer()).toBe(true);
    expect(fs.existsSync(path.dirname(srv.socket))).toBe(false);
  });
});
