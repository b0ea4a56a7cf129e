/**
 * fio's nbd engine writes random blocks at queue depth 16 into a served overlay whose parent holds
 * data (so most first writes copy up from the snapshot), then reads everything back and verifies it.
 */
import * as fs from 'node:fs';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { makeChain, type Chain } from '../helpers/nbd-images.js';
import type { TestServer } from '../helpers/nbd-server.js';
import { serveImages } from '../helpers/nbd-images.js';
import { run } from '../helpers/nbd-tools.js';

let chain: Chain;
let srv: TestServer;

beforeAll(async () => {
  chain = await makeChain();
  srv = await serveImages([{ name: 'disk', file: chain.overlay }]);
});
afterAll(async () => {
  await srv.close();
  fs.rmSync(chain.dir, { recursive: true, force: true });
});

async function fio(...args: string[]): Promise<void> {
  const { stdout } = await run('fio', [
    '--name=verify',
    '--ioengine=nbd',
    `--uri=${srv.uri('disk')}`,
    '--rw=randwrite',
    '--iodepth=16',
    '--size=16m',
    '--verify=crc32c',
    '--do_verify=1',
    '--verify_fatal=1',
    '--verify_state_save=0',
    '--output-format=json',
    ...args,
  ]);
  const job = JSON.parse(stdout.slice(stdout.indexOf('{'))).jobs[0];
  expect(job.error).toBe(0);
  expect(job.write.io_bytes).toBe(16 * 1024 * 1024);
  expect(job.read.io_bytes).toBe(16 * 1024 * 1024);
}

test('random 4 KiB writes at queue depth 16 read back and verify', async () => {
  await fio('--bs=4k');
});

test('random writes of mixed sizes (4 KiB to 256 KiB) at queue depth 16 read back and verify', async () => {
  await fio('--bsrange=4k-256k', '--offset=16m');
});
