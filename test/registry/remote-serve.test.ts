/**
 * Lazy clones served by the real `cowdisk serve` to real NBD clients (nbdcopy, qemu-io), with a
 * real registry behind the fault proxy: what clients see when blocks arrive damaged (EIO, never
 * wrong bytes), when the registry restarts mid-serve (failed reads for a while, nothing else),
 * when two servers fill one cached layer at once (both right, the cache verifies), and
 * `--prefetch` (the layers become whole, then the registry is not needed).
 */
import * as fs from 'node:fs';
import { afterEach, expect, test } from 'vitest';
import { cowdisk } from '../helpers/cli.js';
import { startServe, type ServeProcess } from '../helpers/nbd-cli.js';
import { run } from '../helpers/nbd-tools.js';
import { blobGets } from './fault-proxy.js';
import { startRegistry } from './registry-server.js';
import { CLI_ENV, useRemoteFixture } from './remote-fixture.js';

const f = useRemoteFixture();
const { fresh } = f;
const env = CLI_ENV;
const servers: ServeProcess[] = [];
afterEach(async () => {
  while (servers.length) await servers.pop()!.stop();
});

/** `cowdisk clone --plain-http REF` into a fresh overlay (with `cache`, a fresh one by default). */
async function cliClone(cache = fresh('cache')): Promise<{ overlay: string; cache: string }> {
  const overlay = fresh('vm.cow');
  const r = await cowdisk(['clone', '--plain-http', '--cache', cache, f.ref, overlay], { env });
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout).toMatch(/lazily \(2 layers, .* fetched; cache /);
  return { overlay, cache };
}

async function serve(image: string, extra: string[] = []): Promise<ServeProcess> {
  const server = await startServe(['--socket', fresh('nbd.sock'), ...extra, image], { env });
  servers.push(server);
  return server;
}

/** The whole disk through nbdcopy; resolves with the bytes. */
async function copyAll(uri: string): Promise<Buffer> {
  const out = fresh('copy.raw');
  await run('nbdcopy', [uri, out]);
  return fs.readFileSync(out);
}

/** One qemu-io read of `length` bytes at `offset`: its output (it reports a failed read, not exits). */
async function qemuRead(uri: string, offset: number, length: number): Promise<string> {
  const r = await run('qemu-io', ['-f', 'raw', '-r', '-c', `read ${offset} ${length}`, uri], { allowFailure: true });
  return r.stdout + r.stderr;
}

test('a lazy clone served over NBD reads exactly as the chain it was cloned from', async () => {
  const { overlay } = await cliClone();
  const server = await serve(overlay);
  expect((await copyAll(server.uris[0])).equals(f.chain.contents)).toBe(true);
});

test('blocks damaged on the way: the client gets EIO, never wrong bytes; the server stays up; once the fault is gone the disk reads right', async () => {
  const { overlay } = await cliClone();
  const server = await serve(overlay);
  const bs = f.chain.blockSize;
  expect(await qemuRead(server.uris[0], 2 * bs, bs)).toMatch(/read 65536\/65536 bytes/); // a zero block: table pages only
  f.proxy.faults = { corrupt: blobGets };
  expect(await qemuRead(server.uris[0], 9 * bs, bs)).toMatch(/read failed: Input\/output error/);
  expect(await qemuRead(server.uris[0], 12 * bs, 2 * bs)).toMatch(/read failed: Input\/output error/);
  expect(server.child.exitCode).toBe(null);
  f.proxy.faults = {};
  expect((await copyAll(server.uris[0])).equals(f.chain.contents)).toBe(true);
});

test('the registry restarted mid-serve costs failed reads while it is down, and nothing else', async () => {
  const { overlay } = await cliClone();
  const server = await serve(overlay);
  const bs = f.chain.blockSize;
  expect(await qemuRead(server.uris[0], 0, bs)).toMatch(/read 65536\/65536 bytes/);
  const port = f.registry.port;
  await f.registry.stop();
  expect(await qemuRead(server.uris[0], 9 * bs, bs)).toMatch(/read failed: Input\/output error/);
  f.registry = await startRegistry({ dir: f.storage, port });
  expect(server.child.exitCode).toBe(null);
  expect((await copyAll(server.uris[0])).equals(f.chain.contents)).toBe(true);
});

test('two servers filling one cached layer at once both read right, and the cache verifies afterwards', async () => {
  const first = await cliClone();
  const second = await cliClone(first.cache);
  const [a, b] = await Promise.all([serve(first.overlay), serve(second.overlay)]);
  const [copyA, copyB] = await Promise.all([copyAll(a.uris[0]), copyAll(b.uris[0])]);
  expect(copyA.equals(f.chain.contents)).toBe(true);
  expect(copyB.equals(f.chain.contents)).toBe(true);
  await Promise.all([a.stop(), b.stop()]);
  const check = await cowdisk(['check', first.overlay], { env });
  expect(check.code, check.stdout + check.stderr).toBe(0);
  expect(check.stdout).toMatch(/no problems found \(3 layers/);
});

test('--prefetch fills the cache in the background until every layer is whole; then the registry is not needed', async () => {
  const { overlay } = await cliClone();
  const server = await serve(overlay, ['--prefetch', '--prefetch-rate', '64M']);
  const deadline = Date.now() + 20_000;
  while (!/every lazily cloned layer is whole/.test(server.stderr()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  expect(server.stderr()).toMatch(/prefetch: sha256:[0-9a-f]{64} is whole in the cache/);
  expect(server.stderr()).toMatch(/every lazily cloned layer is whole/);
  f.proxy.reset();
  f.proxy.faults = { fail: { count: 1000, status: 503 } };
  expect((await copyAll(server.uris[0])).equals(f.chain.contents)).toBe(true);
  expect(f.proxy.log).toEqual([]);
});
