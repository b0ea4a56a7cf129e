/**
 * `cowdisk serve` as a user runs it (needs dist/ built): what it prints, where it listens, several
 * exports, --read-only, --max-connections, argument errors, and a clean stop on SIGTERM.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { OverlayFile } from '../../src/format/overlay.js';
import { openImage } from '../../src/image/open.js';
import { realFileSystem } from '../../src/io/real-file.js';
import { startServe, type ServeProcess } from '../helpers/nbd-cli.js';
import { makeChain, makeEmpty, MiB, type Chain } from '../helpers/nbd-images.js';
import { python, run, SYSTEM_PYTHON } from '../helpers/nbd-tools.js';
import { RawClient } from '../helpers/nbd-wire.js';
import { cowdisk } from '../helpers/cli.js';

let chain: Chain;
beforeAll(async () => {
  chain = await makeChain({ size: 8 * MiB });
});
afterAll(() => fs.rmSync(chain.dir, { recursive: true, force: true }));

async function withServe(args: string[], exports: number, body: (s: ServeProcess) => Promise<void>, cwd?: string): Promise<void> {
  const s = await startServe(args, { exports, cwd, env: { ...process.env, XDG_RUNTIME_DIR: '' } });
  try {
    await body(s);
  } finally {
    if (s.child.exitCode === null) expect(await s.stop()).toBe(0);
  }
}

describe('cowdisk serve', () => {
  test('prints the default export first, then each export by name; all reachable', async () => {
    const socket = path.join(chain.dir, 'multi.sock');
    await withServe([chain.snapshot, `second=${chain.raw}`, '--socket', socket], 2, async (s) => {
      expect(s.uris).toEqual([`nbd+unix:///?socket=${socket}`, `nbd+unix:///base?socket=${socket}`, `nbd+unix:///second?socket=${socket}`]);
      const { stdout } = await run('nbdinfo', ['--list', '--json', s.uris[0]]);
      expect(JSON.parse(stdout).exports.map((e: { 'export-name': string }) => e['export-name'])).toEqual(['base', 'second']);
      for (const uri of s.uris) {
        const out = path.join(chain.dir, 'out.raw');
        await run('nbdcopy', [uri, out]);
        expect(fs.readFileSync(out).equals(chain.contents)).toBe(true);
      }
    });
  });

  test('listens on ./NAME.sock by default', async () => {
    await withServe([chain.snapshot], 1, async (s) => {
      expect(s.uris[0]).toBe(`nbd+unix:///?socket=${chain.dir}/base.sock`);
      expect(fs.statSync(path.join(chain.dir, 'base.sock')).isSocket()).toBe(true);
    }, chain.dir);
    expect(fs.existsSync(path.join(chain.dir, 'base.sock'))).toBe(false);
  });

  test('--port 0 listens on 127.0.0.1 and prints nbd:// URIs', async () => {
    await withServe([chain.snapshot, '--port', '0'], 1, async (s) => {
      expect(s.uris[0]).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/$/);
      const { stdout } = await run('qemu-img', ['info', '--output=json', '-f', 'raw', s.uris[1]]);
      expect(JSON.parse(stdout)['virtual-size']).toBe(chain.size);
    });
  });

  test('--read-only refuses writes with EPERM', async () => {
    const socket = path.join(chain.dir, 'ro.sock');
    await withServe([chain.overlay, '--read-only', '--socket', socket], 1, async (s) => {
      const { stdout } = await python(
        `import nbd, sys
h = nbd.NBD(); h.set_strict_mode(0); h.connect_uri(sys.argv[1])
try:
    h.pwrite(b'x' * 512, 0); print('written')
except nbd.Error as e:
    print(h.is_read_only(), e.errnum)`,
        [s.uris[0]],
      );
      expect(stdout.trim()).toBe('True 1');
    });
  });

  test('--max-connections 1 closes a second connection at once', async () => {
    const socket = path.join(chain.dir, 'max.sock');
    await withServe([chain.snapshot, '--max-connections', '1', '--socket', socket], 1, async () => {
      const first = await RawClient.greeted(socket);
      const second = await RawClient.connect(socket);
      expect(await second.closedByServer()).toBe(true);
      first.close();
    });
  });

  test('SIGTERM with a client connected: the written data is kept, the image is closed clean, exit 0', async () => {
    const image = await makeEmpty(chain.dir, 4 * MiB, 'sigterm.cow');
    const socket = path.join(chain.dir, 'term.sock');
    const s = await startServe([image, '--socket', socket]);
    // A client that writes, waits for the answer, and stays connected.
    const client = spawn(SYSTEM_PYTHON, ['-c', `import nbd, sys, time
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(b'Q' * 65536, 65536)
print('written', flush=True)
time.sleep(60)`, s.uris[0]], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      client.stdout!.on('data', (d: Buffer) => d.toString().includes('written') && resolve());
      client.once('exit', (code) => reject(new Error(`the python client exited with ${code}`)));
    });
    expect(await s.stop('SIGTERM')).toBe(0);
    expect(s.stderr()).toMatch(/every image closed cleanly/);
    const overlay = await OverlayFile.open(realFileSystem, image, { readOnly: true });
    expect(overlay.header.dirty).toBe(false);
    await overlay.close();
    const reopened = (await openImage(image, { readOnly: true })).device;
    const buf = Buffer.alloc(65536);
    await reopened.read(buf, 65536);
    await reopened.close();
    expect(buf.equals(Buffer.alloc(65536, 0x51))).toBe(true);
    client.kill();
  });

  test('argument errors: --socket with --port is a usage error; a missing image names the file', async () => {
    const both = await cowdisk(['serve', chain.snapshot, '--socket', 'x.sock', '--port', '1']);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/either --socket or --port/);
    const missing = await cowdisk(['serve', path.join(chain.dir, 'nope.cow'), '--socket', path.join(chain.dir, 'n.sock')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/nope\.cow/);
  });
});
