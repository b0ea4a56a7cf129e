/**
 * Who can reach a listener. Unix sockets are 0600 whatever the umask, and mode decides who may
 * connect: checked with nbdinfo run as the unprivileged user `nobody` (setpriv). TCP beyond
 * loopback is refused without TLS required; the refusal is asserted, and nothing here ever listens
 * on an address other than loopback.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { isLoopback, NbdServer } from '../../src/nbd/index.js';
import { refuseExposure } from '../../src/nbd/listeners.js';
import { MemoryDevice } from '../helpers/nbd-memory-device.js';
import { tempDir } from '../helpers/nbd-images.js';
import { run, tool } from '../helpers/nbd-tools.js';

let dir: string;
const servers: NbdServer[] = [];

function server(): NbdServer {
  const s = new NbdServer({ exports: [{ name: 'disk', device: new MemoryDevice({ size: 1024 * 1024 }) }] });
  servers.push(s);
  return s;
}

/** nbdinfo's exit code when run as `nobody`, who owns nothing here. */
async function nobodyConnects(uri: string): Promise<{ code: number | null; stderr: string }> {
  if (process.getuid?.() !== 0) throw new Error('this test runs a client as the user nobody with setpriv, which needs root');
  const child = spawn(tool('setpriv'), ['--reuid=nobody', '--regid=nogroup', '--clear-groups', tool('nbdinfo'), '--size', uri], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  return { code, stderr };
}

beforeAll(() => {
  dir = tempDir();
  // nobody must be able to reach the sockets' directory; only the sockets' own modes stop them.
  fs.chmodSync(dir, 0o755);
});
afterAll(async () => {
  for (const s of servers) await s.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('Unix sockets', () => {
  test('are created mode 0600 even under umask 0, and another user cannot connect', async () => {
    const socket = path.join(dir, 'private.sock');
    const old = process.umask(0);
    let uri: string;
    try {
      [uri] = await server().listen({ socket });
    } finally {
      process.umask(old);
    }
    expect(fs.statSync(socket).mode & 0o777).toBe(0o600);
    const denied = await nobodyConnects(uri);
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toMatch(/Permission denied/);
    expect((await run('nbdinfo', ['--size', uri])).stdout.trim()).toBe(String(1024 * 1024));
  });

  test('mode opens them as asked: 0666 lets another user in', async () => {
    const socket = path.join(dir, 'shared.sock');
    const [uri] = await server().listen({ socket, mode: 0o666 });
    expect(fs.statSync(socket).mode & 0o777).toBe(0o666);
    expect((await nobodyConnects(uri)).code).toBe(0);
  });

  test('the umask in force is left as it was', async () => {
    const old = process.umask(0o027);
    try {
      await server().listen({ socket: path.join(dir, 'umask.sock'), mode: 0o660 });
      expect(process.umask(0o027)).toBe(0o027);
    } finally {
      process.umask(old);
    }
    expect(fs.statSync(path.join(dir, 'umask.sock')).mode & 0o777).toBe(0o660);
  });
});

describe('TCP', () => {
  test.each(['0.0.0.0', '::', '192.0.2.1'])('--bind %s without TLS required is refused before listening', async (host) => {
    const s = server();
    await expect(s.listen({ port: 0, host })).rejects.toMatchObject({
      code: 'COWDISK_E_INSECURE',
      message: expect.stringMatching(/without TLS: .*Use --tls require .* or --insecure-no-tls on a network you trust/),
    });
    expect(s.addresses()).toEqual([]);
  });

  test('loopback addresses and names are served without TLS: 127.0.0.2, localhost', async () => {
    const s = server();
    const [a] = await s.listen({ port: 0, host: '127.0.0.2' });
    const [b] = await s.listen({ port: 0, host: 'localhost' });
    expect(a).toMatch(/^nbd:\/\/127\.0\.0\.2:\d+\/disk$/);
    expect(b).toMatch(/^nbd:\/\/(127\.0\.0\.1|\[::1\]):\d+\/disk$/);
    for (const uri of [a, b]) expect((await run('nbdinfo', ['--size', uri])).stdout.trim()).toBe(String(1024 * 1024));
  });

  test('what counts as loopback', () => {
    expect(['127.0.0.1', '127.255.3.4', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1'].map(isLoopback)).toEqual([true, true, true, true, true]);
    expect(['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', '::ffff:10.0.0.1', '::2', 'localhost'].map(isLoopback)).toEqual([false, false, false, false, false, false, false]);
  });

  test('beyond loopback is allowed with TLS required, or when the network is declared trusted (the decision alone: nothing listens)', () => {
    expect(() => refuseExposure('0.0.0.0', '0.0.0.0', 10809, false, false)).toThrow(expect.objectContaining({ code: 'COWDISK_E_INSECURE' }));
    expect(() => refuseExposure('0.0.0.0', '0.0.0.0', 10809, true, false)).not.toThrow();
    expect(() => refuseExposure('192.0.2.1', 'nbd.example', 10809, false, true)).not.toThrow();
    expect(() => refuseExposure('192.0.2.1', 'nbd.example', 10809, false, false)).toThrow(/nbd\.example \(192\.0\.2\.1\) port 10809/);
  });
});
