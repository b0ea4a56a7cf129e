/**
 * cowdisk's own NBD client (src/bench/nbd-client.ts, used by `cowdisk bench`) against a server that is
 * not cowdisk's: nbdkit, with its memory plugin and a few of its filters. What the client writes
 * is read back by nbdcopy (libnbd), and what nbdcopy writes is read by the client, so neither
 * side is checked only against itself.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { NbdClient, NbdReplyError } from '../../src/bench/nbd-client.js';
import { NbdErrno, TransmissionFlag } from '../../src/nbd/constants.js';
import { run, tool } from '../helpers/nbd-tools.js';

const MiB = 1024 * 1024;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowdisk-client-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

interface Nbdkit {
  socket: string;
  uri: string;
  child: ChildProcess;
  /** Resolves with nbdkit's exit code. */
  exited: Promise<number | null>;
}

const running: Nbdkit[] = [];
afterEach(async () => {
  for (const k of running.splice(0)) {
    if (k.child.exitCode === null) k.child.kill('SIGTERM');
    await k.exited;
  }
});

let serial = 0;

/**
 * Starts `nbdkit ARGS` in the foreground on a fresh Unix socket; resolves once it listens, which
 * nbdkit tells by writing its pid file (no probe connection, which the exitlast filter would count).
 */
async function nbdkit(args: string[]): Promise<Nbdkit> {
  const socket = path.join(dir, `nbdkit-${serial}.sock`);
  const pidFile = path.join(dir, `nbdkit-${serial++}.pid`);
  const child = spawn(tool('nbdkit'), ['-f', '--exit-with-parent', '-U', socket, '-P', pidFile, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const k = { socket, uri: `nbd+unix:///?socket=${socket}`, child, exited };
  running.push(k);
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`nbdkit ${args.join(' ')} exited with ${child.exitCode}:\n${stderr}`);
    if (fs.existsSync(pidFile) && fs.readFileSync(pidFile, 'utf8').trim() === String(child.pid)) return k;
    if (i > 500) throw new Error(`nbdkit did not listen on ${socket} within 10 s:\n${stderr}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('NbdClient against nbdkit', () => {
  it('negotiates the default export: its size and the flags nbdkit advertises', async () => {
    const k = await nbdkit(['memory', '64M']);
    const client = await NbdClient.connect(k.socket);
    expect(client.size).toBe(64 * MiB);
    expect(client.flags & TransmissionFlag.HAS_FLAGS).toBeTruthy();
    expect(client.flags & TransmissionFlag.SEND_FLUSH).toBeTruthy();
    expect(client.flags & TransmissionFlag.READ_ONLY).toBe(0);
    await client.close();
  });

  it('writes that nbdcopy reads back byte for byte, including pipelined writes answered in any order', async () => {
    const k = await nbdkit(['memory', '8M']);
    const client = await NbdClient.connect(k.socket);
    const model = Buffer.alloc(8 * MiB);
    // 64 writes of different sizes and alignments in flight at once, then a flush.
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 64; i++) {
      const offset = i * 128 * 1024 + (i % 7) * 512 + (i % 3);
      const data = randomBytes(1 + ((i * 4099) % 70000));
      data.copy(model, offset);
      writes.push(client.write(data, offset));
    }
    expect(client.inFlight).toBe(64);
    await Promise.all(writes);
    await client.flush();
    await client.close();
    const out = path.join(dir, 'copied.raw');
    await run(tool('nbdcopy'), [k.uri, out]);
    expect(fs.readFileSync(out).equals(model)).toBe(true);
  });

  it('reads what nbdcopy wrote, in requests small and large (a 4 MiB reply arrives in many chunks)', async () => {
    const k = await nbdkit(['memory', '8M']);
    const source = path.join(dir, 'source.raw');
    const content = randomBytes(8 * MiB);
    fs.writeFileSync(source, content);
    await run(tool('nbdcopy'), [source, k.uri]);
    const client = await NbdClient.connect(k.socket);
    const big = Buffer.alloc(4 * MiB);
    const small = Buffer.alloc(3);
    const odd = Buffer.alloc(4096);
    await Promise.all([client.read(big, 1 * MiB), client.read(small, 8 * MiB - 3), client.read(odd, 12345)]);
    expect(big.equals(content.subarray(1 * MiB, 5 * MiB))).toBe(true);
    expect(small.equals(content.subarray(8 * MiB - 3))).toBe(true);
    expect(odd.equals(content.subarray(12345, 12345 + 4096))).toBe(true);
    await client.close();
  });

  it('matches replies to requests by handle when the server answers out of order', async () => {
    // nbdkit's delay filter holds every read for 400 ms in a worker thread; the flush sent after
    // the read is not delayed, so its reply overtakes the read's.
    const k = await nbdkit(['--filter=delay', 'memory', '1M', 'delay-read=400ms']);
    const client = await NbdClient.connect(k.socket);
    const data = randomBytes(4096);
    await client.write(data, 8192);
    const order: string[] = [];
    const back = Buffer.alloc(4096);
    await Promise.all([client.read(back, 8192).then(() => order.push('read')), client.flush().then(() => order.push('flush'))]);
    expect(order).toEqual(['flush', 'read']);
    expect(back.equals(data)).toBe(true);
    await client.close();
  });

  it('an error reply fails that request with the NBD error value and leaves the connection usable', async () => {
    const k = await nbdkit(['--filter=error', 'memory', '1M', 'error-pwrite=EIO', 'error-pwrite-rate=100%']);
    const client = await NbdClient.connect(k.socket);
    const failed = await client.write(Buffer.alloc(4096, 1), 4096).catch((err: unknown) => err);
    expect(failed).toBeInstanceOf(NbdReplyError);
    expect((failed as NbdReplyError).errno).toBe(NbdErrno.EIO);
    expect((failed as NbdReplyError).code).toBe(ErrorCode.IO);
    const back = Buffer.alloc(4096, 0xaa);
    await client.read(back, 4096);
    expect(back.equals(Buffer.alloc(4096))).toBe(true);
    await client.close();
  });

  it('refuses at the edge what the export does not allow: writes to a read-only export, ranges past the end', async () => {
    const k = await nbdkit(['-r', 'memory', '1M']);
    const client = await NbdClient.connect(k.socket);
    expect(client.flags & TransmissionFlag.READ_ONLY).toBeTruthy();
    await expect(client.write(Buffer.alloc(512), 0)).rejects.toMatchObject({ code: ErrorCode.READ_ONLY });
    await expect(client.read(Buffer.alloc(512), 1 * MiB - 511)).rejects.toMatchObject({ code: ErrorCode.OUT_OF_RANGE });
    // Nothing reached the server, so the connection still works.
    await client.read(Buffer.alloc(512), 1 * MiB - 512);
    await client.close();
  });

  it('opens a named export and names a missing one in its error', async () => {
    const k = await nbdkit(['--filter=exportname', 'memory', '1M', 'exportname=disk', 'exportname-strict=true']);
    const client = await NbdClient.connect(k.socket, { exportName: 'disk' });
    expect(client.size).toBe(1 * MiB);
    await client.close();
    await expect(NbdClient.connect(k.socket, { exportName: 'nope' })).rejects.toMatchObject({ code: ErrorCode.NOT_FOUND, message: expect.stringContaining('"nope"') });
  });

  it('close waits for requests in flight, sends NBD_CMD_DISC, and later requests fail as closed', async () => {
    // The exitlast filter makes nbdkit exit (0) when its last connection ends.
    const k = await nbdkit(['--filter=exitlast', 'memory', '1M']);
    const client = await NbdClient.connect(k.socket);
    const write = client.write(randomBytes(65536), 0);
    const closing = client.close();
    await write;
    await closing;
    expect(await k.exited).toBe(0);
    await expect(client.read(Buffer.alloc(512), 0)).rejects.toMatchObject({ code: ErrorCode.CLOSED });
  });

  it('a server that vanishes fails the requests in flight instead of leaving them hanging', async () => {
    const k = await nbdkit(['--filter=delay', 'memory', '1M', 'delay-read=2']);
    const client = await NbdClient.connect(k.socket);
    const reading = client.read(Buffer.alloc(4096), 0);
    k.child.kill('SIGKILL');
    await expect(reading).rejects.toMatchObject({ code: ErrorCode.IO });
    await expect(client.flush()).rejects.toMatchObject({ code: ErrorCode.IO });
  });

  it('a socket with no server behind it is a clear error', async () => {
    await expect(NbdClient.connect(path.join(dir, 'nobody.sock'))).rejects.toMatchObject({
      code: ErrorCode.IO,
      message: expect.stringContaining('is it running?'),
    });
  });
});
