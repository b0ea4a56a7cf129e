/**
 * `cowdisk serve` on a network, as a user runs it (needs dist/ built): TLS (what it prints and
 * says, a real client through it, the refusals on stderr, the argument errors), the refusal of
 * --bind beyond loopback without --tls require (asserted; nothing listens beyond loopback), and
 * the Unix socket's mode.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cowdisk } from '../helpers/cli.js';
import { startServe } from '../helpers/nbd-cli.js';
import { makeChain, MiB, type Chain } from '../helpers/nbd-images.js';
import { makePsk } from '../helpers/nbd-tls.js';
import { run } from '../helpers/nbd-tools.js';

let chain: Chain;
let pskFile: string;
beforeAll(async () => {
  chain = await makeChain({ size: 4 * MiB });
  pskFile = await makePsk(path.join(chain.dir, 'psk'), ['alice']);
});
afterAll(() => fs.rmSync(chain.dir, { recursive: true, force: true }));

/** Waits (up to 2 s) for the server's stderr to say something. */
async function says(stderr: () => string, what: RegExp): Promise<string> {
  for (let i = 0; i < 100 && !what.test(stderr()); i++) await new Promise((r) => setTimeout(r, 20));
  return stderr();
}

describe('cowdisk serve --tls', () => {
  test('--tls require --tls-psk: nbds+unix URIs, nbdinfo gets in with the key, a plaintext client is refused with a line on stderr', async () => {
    const socket = path.join(chain.dir, 'tls.sock');
    const s = await startServe([chain.snapshot, '--tls', 'require', '--tls-psk', pskFile, '--socket', socket]);
    try {
      expect(s.uris[0]).toBe(`nbds+unix:///?socket=${socket}`);
      expect(await says(s.stderr, /serving/)).toMatch(/TLS required \(1 PSK identity in .*keys\.psk\)/);
      const info = JSON.parse((await run('nbdinfo', ['--json', `nbds+unix://alice@/?socket=${socket}&tls-psk-file=${pskFile}`])).stdout);
      expect([info.TLS, info.exports[0]['export-size']]).toEqual([true, chain.size]);
      const plain = await run('qemu-img', ['info', `nbd+unix:///?socket=${socket}`], { allowFailure: true });
      expect(plain.code).not.toBe(0);
      expect(await says(s.stderr, /COWDISK_E_TLS_REQUIRED/)).toMatch(/negotiated without TLS .* and was refused.*\[COWDISK_E_TLS_REQUIRED\]/);
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });

  test('argument errors: both kinds of credentials, --tls-verify-peer with a PSK or alone, and --tls off with credentials are usage errors; --tls require without credentials says what to give', async () => {
    const sock = ['--socket', path.join(chain.dir, 'x.sock')];
    const both = await cowdisk(['serve', chain.snapshot, ...sock, '--tls-psk', pskFile, '--tls-certificates', chain.dir]);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/--tls-certificates <dir>' cannot be used with option '--tls-psk <file>'/);
    const verify = await cowdisk(['serve', chain.snapshot, ...sock, '--tls-psk', pskFile, '--tls-verify-peer']);
    expect(verify.code).toBe(2);
    const off = await cowdisk(['serve', chain.snapshot, ...sock, '--tls', 'off', '--tls-psk', pskFile]);
    expect(off.code).toBe(2);
    expect(off.stderr).toMatch(/--tls off with TLS credentials/);
    const alone = await cowdisk(['serve', chain.snapshot, ...sock, '--tls-verify-peer']);
    expect(alone.code).toBe(2);
    expect(alone.stderr).toMatch(/--tls-verify-peer goes with --tls-certificates DIR/);
    const none = await cowdisk(['serve', chain.snapshot, ...sock, '--tls', 'require']);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/--tls require needs credentials: --tls-psk FILE .* or --tls-certificates DIR .*\[COWDISK_E_TLS_CREDENTIALS\]/);
    const bad = await cowdisk(['serve', chain.snapshot, ...sock, '--tls', 'sometimes']);
    expect(bad.code).toBe(2);
  });
});

describe('cowdisk serve: who can reach it', () => {
  test('--bind beyond loopback without --tls require is refused, naming --tls require and --insecure-no-tls; --tls on is not enough', async () => {
    for (const extra of [[], ['--tls', 'on', '--tls-psk', pskFile]]) {
      const r = await cowdisk(['serve', chain.snapshot, '--port', '0', '--bind', '0.0.0.0', ...extra]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/Refusing to serve on 0\.0\.0\.0 .*without TLS.*--tls require.*--insecure-no-tls.*\[COWDISK_E_INSECURE\]/);
    }
  });

  test('--bind on another loopback address needs nothing more', async () => {
    const s = await startServe([chain.snapshot, '--port', '0', '--bind', '127.0.0.2']);
    try {
      expect(s.uris[0]).toMatch(/^nbd:\/\/127\.0\.0\.2:\d+\/$/);
      expect((await run('nbdinfo', ['--size', s.uris[0]])).stdout.trim()).toBe(String(chain.size));
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });

  test('the Unix socket is 0600 unless --socket-mode says otherwise', async () => {
    for (const [args, mode] of [[[], 0o600], [['--socket-mode', '0660'], 0o660]] as [string[], number][]) {
      const socket = path.join(chain.dir, `mode-${mode.toString(8)}.sock`);
      const s = await startServe([chain.snapshot, '--socket', socket, ...args]);
      try {
        expect(fs.statSync(socket).mode & 0o777).toBe(mode);
      } finally {
        expect(await s.stop()).toBe(0);
      }
    }
  });

  test('argument errors: --socket-mode that is not octal bits or goes with --port, --insecure-no-tls without --port', async () => {
    const sock = ['--socket', path.join(chain.dir, 'y.sock')];
    for (const args of [[...sock, '--socket-mode', '999'], [...sock, '--socket-mode', '4755'], ['--port', '0', '--socket-mode', '0600'], [...sock, '--insecure-no-tls']]) {
      const r = await cowdisk(['serve', chain.snapshot, ...args]);
      expect(r.code, args.join(' ')).toBe(2);
    }
  });
});
