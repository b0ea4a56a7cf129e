/**
 * Blobs against a real registry (docker-registry, no auth) behind the counting proxy: monolithic
 * and chunked uploads, HEAD and GET with digests, exact byte ranges, cross-repository mounts.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { bufferBlobSource, fileBlobSource } from '../../src/registry/blob-source.js';
import type { RegistryClient } from '../../src/registry/client.js';
import { testClient } from './clients.js';
import { startProxy, type TestProxy } from './fault-proxy.js';
import { startRegistry, type TestRegistry } from './registry-server.js';

let registry: TestRegistry;
let proxy: TestProxy;
let client: RegistryClient;
let tmp: string;

beforeAll(async () => {
  registry = await startRegistry();
  proxy = await startProxy(registry);
  client = testClient(proxy.host);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cowdisk-blobs-'));
});
afterAll(async () => {
  await client?.close();
  await proxy?.close();
  await registry?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});
beforeEach(() => proxy.reset());

const KiB = 1024;
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const requests = (method: string): number => proxy.log.filter((r) => r.method === method).length;

async function streamed(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('upload', () => {
  test('a small blob goes up in one PUT; HEAD and GET give back its size, bytes and digest', async () => {
    const bytes = randomBytes(100 * KiB);
    const source = bufferBlobSource(bytes);
    expect(source.digest).toBe(sha256(bytes));
    expect(await client.pushBlob('disks/mono', source)).toBe('uploaded');
    expect(requests('PATCH')).toBe(0);
    expect(requests('PUT')).toBe(1);
    expect(await client.statBlob('disks/mono', source.digest)).toEqual({ size: bytes.length });
    expect((await client.readBlob('disks/mono', source.digest, bytes.length)).equals(bytes)).toBe(true);
    const { size, stream } = await client.openBlob('disks/mono', source.digest);
    expect(size).toBe(bytes.length);
    expect((await streamed(stream)).equals(bytes)).toBe(true);
  });

  test('a blob the repository holds is not sent again', async () => {
    const source = bufferBlobSource(randomBytes(10 * KiB));
    await client.pushBlob('disks/again', source);
    proxy.reset();
    expect(await client.pushBlob('disks/again', source)).toBe('present');
    expect(proxy.log.map((r) => r.method)).toEqual(['HEAD']);
  });

  test('a large blob goes up in PATCHes of the chunk size, streamed from its file, then a closing PUT', async () => {
    const bytes = randomBytes(300 * KiB + 7);
    const file = path.join(tmp, 'layer.snap');
    fs.writeFileSync(file, bytes);
    const source = await fileBlobSource(file);
    expect(source).toMatchObject({ digest: sha256(bytes), size: bytes.length });
    expect(await client.pushBlob('disks/chunked', source, { monolithicLimit: 64 * KiB, chunkSize: 64 * KiB })).toBe('uploaded');
    const patches = proxy.log.filter((r) => r.method === 'PATCH');
    expect(patches.map((r) => r.headers['content-range'])).toEqual(['0-65535', '65536-131071', '131072-196607', '196608-262143', '262144-307206']);
    expect(requests('PUT')).toBe(1);
    expect(proxy.log.find((r) => r.method === 'PUT')!.headers['content-length']).toBe('0');
    expect((await client.readBlob('disks/chunked', source.digest, bytes.length)).equals(bytes)).toBe(true);
  });

  test('an empty blob uploads and reads back', async () => {
    const source = bufferBlobSource(Buffer.alloc(0));
    expect(await client.pushBlob('disks/empty', source)).toBe('uploaded');
    expect(await client.statBlob('disks/empty', source.digest)).toEqual({ size: 0 });
  });

  test('a source whose bytes are not its digest is refused by the registry, and the session is cancelled', async () => {
    const honest = bufferBlobSource(randomBytes(4 * KiB));
    const lying = { ...honest, stream: () => bufferBlobSource(randomBytes(4 * KiB)).stream(0, 4 * KiB) };
    await expect(client.pushBlob('disks/lying', lying)).rejects.toMatchObject({ code: 'COWDISK_E_REGISTRY', message: /DIGEST_INVALID/ });
    expect(requests('DELETE')).toBe(1);
    expect(await client.statBlob('disks/lying', honest.digest)).toBeUndefined();
  });
});

describe('ranges', () => {
  const bytes = randomBytes(200 * KiB);
  const source = bufferBlobSource(bytes);
  beforeAll(async () => {
    await client.pushBlob('disks/ranges', source);
  });

  test.each([
    [0, 1],
    [4096, 4096],
    [65536 + 13, 70000],
    [bytes.length - 1, 1],
    [0, bytes.length],
  ])('bytes at %i, length %i, come back exactly, from a 206', async (offset, length) => {
    const got = await client.readBlobRange('disks/ranges', source.digest, offset, length);
    expect(got.equals(bytes.subarray(offset, offset + length))).toBe(true);
    expect(proxy.log.map((r) => [r.headers.range, r.status])).toEqual([[`bytes=${offset}-${offset + length - 1}`, 206]]);
  });

  test('only the range crosses the wire, not the blob', async () => {
    await client.readBlobRange('disks/ranges', source.digest, 100 * KiB, 4 * KiB);
    expect(proxy.bytes).toBe(4 * KiB);
  });

  test('a range past the end of the blob is OUT_OF_RANGE', async () => {
    await expect(client.readBlobRange('disks/ranges', source.digest, bytes.length, 10)).rejects.toMatchObject({ code: 'COWDISK_E_OUT_OF_RANGE' });
    await expect(client.readBlobRange('disks/ranges', source.digest, bytes.length - 5, 10)).rejects.toMatchObject({ code: 'COWDISK_E_OUT_OF_RANGE' });
  });

  test('a proxy that ignores Range (200, the whole blob) is an error, never handed out as the range', async () => {
    proxy.faults = { ignoreRange: true };
    await expect(client.readBlobRange('disks/ranges', source.digest, 4096, 4096)).rejects.toMatchObject({
      code: 'COWDISK_E_REGISTRY',
      message: /ignores Range/,
    });
    expect(proxy.log.map((r) => r.status)).toEqual([200]);
  });

  test('a 206 for other bytes than asked (a Content-Range that does not match) is an error', async () => {
    proxy.faults = { shiftRange: true };
    await expect(client.readBlobRange('disks/ranges', source.digest, 4096, 4096)).rejects.toMatchObject({
      code: 'COWDISK_E_REGISTRY',
      message: /Content-Range: bytes 4097-8192/,
    });
  });
});

describe('cross-repository mount', () => {
  test('a blob in another repository of the registry is mounted: no bytes sent', async () => {
    const source = bufferBlobSource(randomBytes(64 * KiB));
    await client.pushBlob('team/base', source);
    proxy.reset();
    expect(await client.pushBlob('team/app', source, { mountFrom: ['team/base'] })).toBe('mounted');
    const post = proxy.log.find((r) => r.method === 'POST')!;
    expect(post.path).toMatch(new RegExp(`mount=${source.digest.replace(':', '(:|%3A)')}&from=team(/|%2F)base`));
    expect(requests('PUT') + requests('PATCH')).toBe(0);
    expect((await client.readBlob('team/app', source.digest, 64 * KiB)).length).toBe(64 * KiB);
  });

  test('a mount the registry refuses (the source repository lacks the blob) falls back to an upload', async () => {
    const bytes = randomBytes(8 * KiB);
    const source = bufferBlobSource(bytes);
    expect(await client.pushBlob('team/other', source, { mountFrom: ['team/nothing-here'] })).toBe('uploaded');
    expect(requests('POST')).toBe(1);
    expect(requests('PUT')).toBe(1);
    expect((await client.readBlob('team/other', source.digest, bytes.length)).equals(bytes)).toBe(true);
  });


  test('of several repositories to mount from, the first refusal is closed and the next one tried', async () => {
    const source = bufferBlobSource(randomBytes(8 * KiB));
    await client.pushBlob('team/holder', source);
    proxy.reset();
    expect(await client.pushBlob('team/target', source, { mountFrom: ['team/empty', 'team/holder'] })).toBe('mounted');
    expect(proxy.log.map((r) => r.method)).toEqual(['HEAD', 'POST', 'DELETE', 'POST']);
    expect(proxy.log.map((r) => r.status)).toEqual([404, 202, 204, 201]);
  });
});

describe('absent blobs', () => {
  test('HEAD says absent; GET is NOT_FOUND naming the blob', async () => {
    const digest = sha256(Buffer.from('never pushed'));
    expect(await client.statBlob('disks/mono', digest)).toBeUndefined();
    await expect(client.readBlob('disks/mono', digest, 100)).rejects.toMatchObject({ code: 'COWDISK_E_NOT_FOUND', message: new RegExp(digest) });
  });
});
