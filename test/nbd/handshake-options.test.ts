/**
 * Every handshake option, byte for byte over a raw socket, against expectations built from the spec
 * by the test's own encoder (test/helpers/nbd-wire.ts).
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { MemoryDevice } from '../helpers/nbd-memory-device.js';
import { startServer, type TestServer } from '../helpers/nbd-server.js';
import { encode, expected, INFO, OPT, RawClient, REP, REP_ERR } from '../helpers/nbd-wire.js';

// Transmission flag bits, from the spec.
const HAS_FLAGS = 1 << 0;
const READ_ONLY = 1 << 1;
const SEND_FLUSH = 1 << 2;
const SEND_FUA = 1 << 3;
const SEND_TRIM = 1 << 5;
const SEND_WRITE_ZEROES = 1 << 6;
const SEND_DF = 1 << 7;
const CAN_MULTI_CONN = 1 << 8;
const SEND_CACHE = 1 << 10;
const SEND_FAST_ZERO = 1 << 11;
const WRITABLE_FLAGS = HAS_FLAGS | SEND_FLUSH | SEND_FUA | SEND_TRIM | SEND_WRITE_ZEROES | CAN_MULTI_CONN | SEND_CACHE | SEND_FAST_ZERO;
const READ_ONLY_FLAGS = HAS_FLAGS | READ_ONLY | SEND_FLUSH | SEND_FUA | CAN_MULTI_CONN | SEND_CACHE;

const SIZE = 1024 * 1024;
let srv: TestServer;

beforeAll(async () => {
  srv = await startServer([
    { name: 'disk', device: new MemoryDevice({ size: SIZE }), description: 'first disk' },
    { name: 'ro', device: new MemoryDevice({ size: SIZE / 2, blockSize: 4096 }), readOnly: true },
  ]);
});
afterAll(() => srv.close());

async function fixedNewstyle(flags = 1): Promise<RawClient> {
  const c = await RawClient.greeted(srv.socket);
  await c.write(encode.clientFlags(flags));
  return c;
}

async function ask(c: RawClient, option: number, data?: Buffer): Promise<Buffer> {
  await c.write(encode.option(option, data));
  const replies = await c.optionReplies();
  return Buffer.concat(replies.map((r) => expected.optionReply(r.option, r.type, r.data)));
}

describe('handshake', () => {
  test('the server greets with NBDMAGIC, IHAVEOPT and FIXED_NEWSTYLE | NO_ZEROES', async () => {
    const c = await RawClient.connect(srv.socket);
    expect(await c.read(18)).toEqual(expected.greeting());
    c.close();
  });

  test('NBD_OPT_LIST names every export with its description, then ACK', async () => {
    const c = await fixedNewstyle();
    const server = (name: string, desc: string): Buffer => {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(Buffer.byteLength(name));
      return expected.optionReply(OPT.LIST, REP.SERVER, Buffer.concat([b, Buffer.from(name), Buffer.from(desc)]));
    };
    expect(await ask(c, OPT.LIST)).toEqual(Buffer.concat([server('disk', 'first disk'), server('ro', ''), expected.optionReply(OPT.LIST, REP.ACK)]));
    c.close();
  });

  test('NBD_OPT_LIST with data is NBD_REP_ERR_INVALID and negotiation goes on', async () => {
    const c = await fixedNewstyle();
    await c.write(encode.option(OPT.LIST, Buffer.from('x')));
    expect((await c.optionReply()).type).toBe(REP_ERR.INVALID);
    expect((await ask(c, OPT.LIST)).subarray(-20)).toEqual(expected.optionReply(OPT.LIST, REP.ACK));
    c.close();
  });

  test('NBD_OPT_INFO reports size, flags and block sizes and stays in negotiation', async () => {
    const c = await fixedNewstyle();
    expect(await ask(c, OPT.INFO, encode.infoRequest('disk', [INFO.BLOCK_SIZE]))).toEqual(
      Buffer.concat([
        expected.infoExport(OPT.INFO, SIZE, WRITABLE_FLAGS),
        expected.infoBlockSize(OPT.INFO, 512, 65536, 32 * 1024 * 1024),
        expected.optionReply(OPT.INFO, REP.ACK),
      ]),
    );
    expect((await ask(c, OPT.INFO, encode.infoRequest('ro'))).subarray(0, 32)).toEqual(expected.infoExport(OPT.INFO, SIZE / 2, READ_ONLY_FLAGS));
    c.close();
  });

  test('NBD_OPT_GO for the default export answers NBD_INFO_NAME with the first export and its description', async () => {
    const c = await fixedNewstyle();
    await c.write(encode.option(OPT.GO, encode.infoRequest('', [INFO.NAME, INFO.DESCRIPTION])));
    const infos = (await c.optionReplies()).filter((r) => r.type === REP.INFO);
    const byType = new Map(infos.map((r) => [r.data.readUInt16BE(0), r.data.subarray(2)]));
    expect(byType.get(INFO.NAME)?.toString()).toBe('disk');
    expect(byType.get(INFO.DESCRIPTION)?.toString()).toBe('first disk');
    expect(byType.get(INFO.EXPORT)?.readBigUInt64BE(0)).toBe(BigInt(SIZE));
    // Block sizes are sent even when not asked for.
    expect(byType.get(INFO.BLOCK_SIZE)?.readUInt32BE(4)).toBe(65536);
    c.close();
  });

  test('NBD_OPT_GO for an unknown export is NBD_REP_ERR_UNKNOWN and negotiation goes on', async () => {
    const c = await fixedNewstyle();
    await c.write(encode.option(OPT.GO, encode.infoRequest('nope')));
    const [r] = await c.optionReplies();
    expect(r.type).toBe(REP_ERR.UNKNOWN);
    expect((await ask(c, OPT.INFO, encode.infoRequest('disk'))).length).toBeGreaterThan(0);
    c.close();
  });

  test('malformed NBD_OPT_INFO (too short, name past the end, wrong info count) is NBD_REP_ERR_INVALID', async () => {
    const c = await fixedNewstyle();
    const bad = [
      Buffer.from([0, 0, 0]),
      Buffer.from([0, 0, 0, 9, 0x61, 0, 0]),
      Buffer.concat([encode.infoRequest('disk', [INFO.NAME]), Buffer.from([0])]),
    ];
    for (const data of bad) {
      await c.write(encode.option(OPT.INFO, data));
      expect((await c.optionReply()).type).toBe(REP_ERR.INVALID);
    }
    c.close();
  });

  test('NBD_OPT_EXPORT_NAME answers size, flags and 124 zero bytes', async () => {
    const c = await fixedNewstyle();
    await c.write(encode.option(OPT.EXPORT_NAME, Buffer.from('ro')));
    const b = await c.read(134);
    expect(b.readBigUInt64BE(0)).toBe(BigInt(SIZE / 2));
    expect(b.readUInt16BE(8)).toBe(READ_ONLY_FLAGS);
    expect(b.subarray(10).equals(Buffer.alloc(124))).toBe(true);
    c.close();
  });

  test('NBD_OPT_EXPORT_NAME leaves the zeros out when the client set NO_ZEROES', async () => {
    const c = await fixedNewstyle(0b11);
    await c.write(encode.option(OPT.EXPORT_NAME, Buffer.from('disk')));
    const b = await c.read(10);
    expect(b.readUInt16BE(8)).toBe(WRITABLE_FLAGS);
    // The next bytes are transmission: a flush is answered right after the 10 bytes.
    await c.write(encode.request(3, 7n, 0, 0));
    expect(await c.read(16)).toEqual(expected.simpleReply(7n));
    c.close();
  });

  test('a client that did not set FIXED_NEWSTYLE can still pick an export with NBD_OPT_EXPORT_NAME', async () => {
    const c = await fixedNewstyle(0);
    await c.write(encode.option(OPT.EXPORT_NAME, Buffer.from('disk')));
    expect((await c.read(134)).readBigUInt64BE(0)).toBe(BigInt(SIZE));
    c.close();
  });

  test('NBD_OPT_EXPORT_NAME for an unknown export closes the connection', async () => {
    const c = await fixedNewstyle();
    await c.write(encode.option(OPT.EXPORT_NAME, Buffer.from('nope')));
    expect(await c.closedByServer()).toBe(true);
  });

  test('NBD_OPT_ABORT is acknowledged, then the server closes', async () => {
    const c = await fixedNewstyle();
    await c.write(encode.option(OPT.ABORT));
    expect(await c.read(20)).toEqual(expected.optionReply(OPT.ABORT, REP.ACK));
    expect(await c.closedByServer()).toBe(true);
  });

  test('NBD_OPT_STARTTLS is refused with NBD_REP_ERR_UNSUP (NBD_REP_ERR_INVALID with data)', async () => {
    const c = await fixedNewstyle();
    await c.write(encode.option(OPT.STARTTLS));
    expect((await c.optionReply()).type).toBe(REP_ERR.UNSUP);
    await c.write(encode.option(OPT.STARTTLS, Buffer.from('x')));
    expect((await c.optionReply()).type).toBe(REP_ERR.INVALID);
    c.close();
  });

  test('NBD_OPT_STRUCTURED_REPLY is acknowledged and adds SEND_DF to the transmission flags', async () => {
    const c = await fixedNewstyle();
    expect(await ask(c, OPT.STRUCTURED_REPLY)).toEqual(expected.optionReply(OPT.STRUCTURED_REPLY, REP.ACK));
    expect((await ask(c, OPT.INFO, encode.infoRequest('disk'))).subarray(0, 32)).toEqual(
      expected.infoExport(OPT.INFO, SIZE, WRITABLE_FLAGS | SEND_DF),
    );
    c.close();
  });

  test('unknown options are NBD_REP_ERR_UNSUP and the next option is still parsed', async () => {
    const c = await fixedNewstyle();
    for (const option of [4, 11, 9999]) {
      await c.write(encode.option(option, Buffer.from('payload')));
      expect((await c.optionReply()).type).toBe(REP_ERR.UNSUP);
    }
    expect((await ask(c, OPT.STRUCTURED_REPLY)).length).toBe(20);
    c.close();
  });
});

describe('metadata contexts', () => {
  const names = async (c: RawClient, option: number, queries: string[], name = 'disk'): Promise<[string, number][]> => {
    await c.write(encode.option(option, encode.metaRequest(name, queries)));
    const replies = await c.optionReplies();
    expect(replies[replies.length - 1].type).toBe(REP.ACK);
    return replies.filter((r) => r.type === REP.META_CONTEXT).map((r) => [r.data.subarray(4).toString(), r.data.readUInt32BE(0)]);
  };

  test('NBD_OPT_LIST_META_CONTEXT lists both contexts, by namespace, by name, or none for other namespaces', async () => {
    const c = await fixedNewstyle();
    await ask(c, OPT.STRUCTURED_REPLY);
    expect(await names(c, OPT.LIST_META, [])).toEqual([['base:allocation', 0], ['cowdisk:layer', 0]]);
    expect(await names(c, OPT.LIST_META, ['base:'])).toEqual([['base:allocation', 0]]);
    expect(await names(c, OPT.LIST_META, ['cowdisk:'])).toEqual([['cowdisk:layer', 0]]);
    expect(await names(c, OPT.LIST_META, ['qemu:dirty-bitmap:x', 'base:nonesuch'])).toEqual([]);
    c.close();
  });

  test('NBD_OPT_SET_META_CONTEXT selects exact names with distinct ids and ignores wildcards', async () => {
    const c = await fixedNewstyle();
    await ask(c, OPT.STRUCTURED_REPLY);
    const selected = await names(c, OPT.SET_META, ['base:', 'cowdisk:layer', 'x-other:thing', 'base:allocation']);
    expect(selected.map(([n]) => n).sort()).toEqual(['base:allocation', 'cowdisk:layer']);
    expect(new Set(selected.map(([, id]) => id)).size).toBe(2);
    c.close();
  });

  test('NBD_OPT_SET_META_CONTEXT before NBD_OPT_STRUCTURED_REPLY is NBD_REP_ERR_INVALID', async () => {
    const c = await fixedNewstyle();
    await c.write(encode.option(OPT.SET_META, encode.metaRequest('disk', ['base:allocation'])));
    expect((await c.optionReply()).type).toBe(REP_ERR.INVALID);
    c.close();
  });

  test('meta context options for an unknown export are NBD_REP_ERR_UNKNOWN; malformed ones NBD_REP_ERR_INVALID', async () => {
    const c = await fixedNewstyle();
    await ask(c, OPT.STRUCTURED_REPLY);
    await c.write(encode.option(OPT.LIST_META, encode.metaRequest('nope', [])));
    expect((await c.optionReply()).type).toBe(REP_ERR.UNKNOWN);
    const truncated = encode.metaRequest('disk', ['base:allocation']).subarray(0, 20);
    await c.write(encode.option(OPT.SET_META, truncated));
    expect((await c.optionReply()).type).toBe(REP_ERR.INVALID);
    c.close();
  });
});
