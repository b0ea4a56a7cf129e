/**
 * The one mapping from failures to NBD error values (src/nbd/errno.ts), and that a device's
 * failure reaches the client through it.
 */
import { describe, expect, test } from 'vitest';
import { CowdiskError, ErrorCode } from '../../src/errors.js';
import { nbdErrno } from '../../src/nbd/errno.js';
import { MemoryDevice } from '../helpers/nbd-memory-device.js';
import { startServer } from '../helpers/nbd-server.js';
import { CMD, encode, ERR, FLAG, negotiate } from '../helpers/nbd-wire.js';

const READ = CMD.READ;
const WRITE = CMD.WRITE;
const ZERO = CMD.WRITE_ZEROES;
const os = (code: string): Error => Object.assign(new Error(code), { code });
const io = (code: string): CowdiskError => new CowdiskError(ErrorCode.IO, 'failed', { cause: os(code) });

describe('nbdErrno', () => {
  test('cowdisk error codes map to the spec values', () => {
    expect(nbdErrno(new CowdiskError(ErrorCode.READ_ONLY, ''), WRITE, 0)).toBe(ERR.EPERM);
    expect(nbdErrno(new CowdiskError(ErrorCode.OUT_OF_RANGE, ''), WRITE, 0)).toBe(ERR.ENOSPC);
    expect(nbdErrno(new CowdiskError(ErrorCode.OUT_OF_RANGE, ''), ZERO, 0)).toBe(ERR.ENOSPC);
    expect(nbdErrno(new CowdiskError(ErrorCode.OUT_OF_RANGE, ''), READ, 0)).toBe(ERR.EINVAL);
    expect(nbdErrno(new CowdiskError(ErrorCode.INVALID_ARGUMENT, ''), READ, 0)).toBe(ERR.EINVAL);
    expect(nbdErrno(new CowdiskError(ErrorCode.CLOSED, ''), READ, 0)).toBe(ERR.ESHUTDOWN);
    expect(nbdErrno(new CowdiskError(ErrorCode.CORRUPT, ''), READ, 0)).toBe(ERR.EIO);
    expect(nbdErrno(new CowdiskError(ErrorCode.PARENT_CHANGED, ''), READ, 0)).toBe(ERR.EIO);
  });

  test('ENOTSUP only for FAST_ZERO, EOVERFLOW only for DF; EINVAL otherwise', () => {
    const unsupported = new CowdiskError(ErrorCode.UNSUPPORTED, '');
    expect(nbdErrno(unsupported, ZERO, FLAG.FAST_ZERO)).toBe(ERR.ENOTSUP);
    expect(nbdErrno(unsupported, ZERO, 0)).toBe(ERR.EINVAL);
    expect(nbdErrno(os('EOVERFLOW'), READ, FLAG.DF)).toBe(ERR.EOVERFLOW);
    expect(nbdErrno(os('EOVERFLOW'), READ, 0)).toBe(ERR.EINVAL);
  });

  test('OS errors inside I/O errors: a full disk is ENOSPC, a refused write EPERM, ENOMEM stays, the rest EIO', () => {
    for (const code of ['ENOSPC', 'EDQUOT', 'EFBIG']) expect(nbdErrno(io(code), WRITE, 0)).toBe(ERR.ENOSPC);
    for (const code of ['EPERM', 'EACCES', 'EROFS']) expect(nbdErrno(io(code), WRITE, 0)).toBe(ERR.EPERM);
    expect(nbdErrno(io('ENOMEM'), READ, 0)).toBe(12);
    expect(nbdErrno(io('EIO'), READ, 0)).toBe(ERR.EIO);
    expect(nbdErrno(new Error('something else'), READ, 0)).toBe(ERR.EIO);
    expect(nbdErrno(undefined, READ, 0)).toBe(ERR.EIO);
  });
});

test("a device's failure reaches the client through the mapping, and the connection goes on", async () => {
  const device = new MemoryDevice({ size: 1024 * 1024 });
  device.write = async () => {
    throw io('ENOSPC');
  };
  device.read = async () => {
    throw new CowdiskError(ErrorCode.CORRUPT, 'block 3 of /x.snap does not match its digest');
  };
  const srv = await startServer([{ name: 'disk', device }]);
  const { client } = await negotiate(srv.socket, 'disk', { structured: true });
  await client.write(encode.request(CMD.WRITE, 1n, 0, 512, 0, Buffer.alloc(512)));
  const [write] = await client.chunks();
  expect(write.payload.readUInt32BE(0)).toBe(ERR.ENOSPC);
  await client.write(encode.request(CMD.READ, 2n, 0, 512));
  const [read] = await client.chunks();
  expect(read.payload.readUInt32BE(0)).toBe(ERR.EIO);
  expect(read.payload.subarray(6).toString()).toMatch(/does not match its digest/);
  await client.write(encode.request(CMD.FLUSH, 3n, 0, 0));
  expect((await client.simpleReply()).error).toBe(0);
  client.close();
  await srv.close();
});
