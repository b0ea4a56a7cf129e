/**
 * fio's nbd engine through TLS-PSK: random writes of mixed sizes at queue depth 16 into a served
 * overlay, read back and verified, every byte through TLS. fio's engine does not let libnbd read
 * the URI's tls-psk-file, so fio runs with bench/compare's shim preloaded (tls-uri-shim.c, built
 * here with cc), which only lifts that restriction.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { loadTlsCredentials } from '../../src/nbd/index.js';
import { makeChain, serveImages, type Chain } from '../helpers/nbd-images.js';
import type { TestServer } from '../helpers/nbd-server.js';
import { makePsk } from '../helpers/nbd-tls.js';
import { run } from '../helpers/nbd-tools.js';

const SHIM = fileURLToPath(new URL('../../bench/compare/tls-uri-shim.c', import.meta.url));
let chain: Chain;
let srv: TestServer;
let pskFile: string;
let shim: string;

beforeAll(async () => {
  chain = await makeChain();
  pskFile = await makePsk(path.join(chain.dir, 'psk'), ['fio']);
  shim = path.join(chain.dir, 'tls-uri-shim.so');
  await run('cc', ['-shared', '-fPIC', '-O2', '-o', shim, SHIM, '-ldl']);
  srv = await serveImages([{ name: 'disk', file: chain.overlay }], { tls: loadTlsCredentials({ mode: 'require', pskFile }) });
});
afterAll(async () => {
  await srv?.close();
  fs.rmSync(chain.dir, { recursive: true, force: true });
});

test('random writes of 4 KiB to 256 KiB at queue depth 16 over TLS-PSK read back and verify', async () => {
  const { stdout } = await run(
    'fio',
    [
      '--name=verify-tls',
      '--ioengine=nbd',
      `--uri=nbds+unix://fio@/disk?socket=${srv.socket}&tls-psk-file=${pskFile}`,
      '--rw=randwrite',
      '--bsrange=4k-256k',
      '--iodepth=16',
      '--size=16m',
      '--verify=crc32c',
      '--do_verify=1',
      '--verify_fatal=1',
      '--verify_state_save=0',
      '--output-format=json',
    ],
    { env: { ...process.env, LD_PRELOAD: shim } },
  );
  const job = JSON.parse(stdout.slice(stdout.indexOf('{'))).jobs[0];
  expect(job.error).toBe(0);
  expect(job.write.io_bytes).toBe(16 * 1024 * 1024);
  expect(job.read.io_bytes).toBe(16 * 1024 * 1024);
});
