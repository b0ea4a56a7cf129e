/**
 * A whole session (handshake, pipelined requests, disconnect) sent in two pieces, cut at every
 * byte: the server's answer is byte-for-byte the same wherever the cut falls. The expected bytes
 * are built by the test's own encoder from the spec, not by the server's serializers.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import { MemoryDevice } from '../helpers/nbd-memory-device.js';
import { startServer, type TestServer } from '../helpers/nbd-server.js';
import { CMD, encode, expected, INFO, OPT, RawClient, REP } from '../helpers/nbd-wire.js';

const SIZE = 1024 * 1024;
let srv: TestServer;

beforeAll(async () => {
  srv = await startServer([{ name: 'disk', device: new MemoryDevice({ size: SIZE, blockSize: 4096 }) }]);
});
afterAll(() => srv.close());

const payload = Buffer.from(Array.from({ length: 512 }, (_, i) => (i * 7) & 0xff));

const session = Buffer.concat([
  encode.clientFlags(1),
  encode.option(OPT.LIST),
  encode.option(OPT.GO, encode.infoRequest('disk', [INFO.BLOCK_SIZE])),
  encode.request(CMD.WRITE, 1n, 512, payload.length, 0, payload),
  encode.request(CMD.READ, 2n, 0, 2048),
  encode.request(CMD.FLUSH, 3n, 0, 0),
  encode.request(CMD.DISC, 4n, 0, 0),
]);

function answer(): Buffer {
  const nameEntry = Buffer.concat([Buffer.from([0, 0, 0, 4]), Buffer.from('disk')]);
  const flags = 1 | 4 | 8 | 32 | 64 | 256 | 1024 | 2048;
  const disk = Buffer.alloc(2048);
  payload.copy(disk, 512);
  return Buffer.concat([
    expected.optionReply(OPT.LIST, REP.SERVER, nameEntry),
    expected.optionReply(OPT.LIST, REP.ACK),
    expected.infoExport(OPT.GO, SIZE, flags),
    expected.infoBlockSize(OPT.GO, 512, 4096, 32 * 1024 * 1024),
    expected.optionReply(OPT.GO, REP.ACK),
    expected.simpleReply(1n),
    expected.simpleReply(2n, 0, disk),
    expected.simpleReply(3n),
  ]);
}

test('a session cut in two at any byte gets the same answer', async () => {
  const want = answer();
  for (let cut = 1; cut < session.length; cut++) {
    const c = await RawClient.greeted(srv.socket);
    await c.write(session.subarray(0, cut));
    await new Promise((r) => setTimeout(r, 1));
    await c.write(session.subarray(cut));
    const got = await c.read(want.length);
    if (!got.equals(want)) expect({ cut, got: got.toString('hex') }).toEqual({ cut, got: want.toString('hex') });
    expect(await c.closedByServer()).toBe(true);
  }
}, 60_000);

test('a session sent one byte at a time gets the same answer', async () => {
  const c = await RawClient.greeted(srv.socket);
  for (let i = 0; i < session.length; i++) c.socket.write(session.subarray(i, i + 1));
  expect((await c.read(answer().length)).equals(answer())).toBe(true);
  expect(await c.closedByServer()).toBe(true);
});
