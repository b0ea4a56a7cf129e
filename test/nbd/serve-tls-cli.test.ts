/**
 * `cowdisk serve` with TLS, as a user runs it (needs dist/ built): what it prints and says, a
 * real client through it, the refusals on stderr, and the argument errors.
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

  test('argument errors: both kinds of credentials, --tls-verify-peer with a PSK and --tls off with credentials are usage errors; --tls require without credentials says what to give', async () => {
    const sock = ['--socket', path.join(chain.dir, 'x.sock')];
    const both = await cowdisk(['serve', chain.snapshot, ...sock, '--tls-psk', pskFile, '--tls-certificates', chain.dir]);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/--tls-certificates <dir>' cannot be used with option '--tls-psk <file>'/);
    const verify = await cowdisk(['serve', chain.snapshot, ...sock, '--tls-psk', pskFile, '--tls-verify-peer']);
    expect(verify.code).toBe(2);
    const off = await cowdisk(['serve', chain.snapshot, ...sock, '--tls', 'off', '--tls-psk', pskFile]);
    expect(off.code).toBe(2);
    expect(off.stderr).toMatch(/--tls off with TLS credentials/);
    const none = await cowdisk(['serve', chain.snapshot, ...sock, '--tls', 'require']);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/--tls require needs credentials: --tls-psk FILE .* or --tls-certificates DIR .*\[COWDISK_E_TLS_CREDENTIALS\]/);
    const bad = await cowdisk(['serve', chain.snapshot, ...sock, '--tls', 'sometimes']);
    expect(bad.code).toBe(2);
  });
});
