/**
 * Faults between cowdisk and a real registry, injected by the proxy in front of it: 5xx and 429
 * retried with backoff then success, and a bounded failure when they persist; a reset connection
 * retried; 4xx and uploads never retried; corrupted bytes refused, never handed out; a stall
 * bounded by the timeout; an unreachable registry named in the error.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { bufferBlobSource } from '../../src/registry/blob-source.js';
import type { RegistryClient } from '../../src/registry/client.js';
import { QUICK_RETRY, testClient } from './clients.js';
import { blobGets, startProxy, type TestProxy } from './fault-proxy.js';
import { startRegistry, type TestRegistry } from './registry-server.js';
import { freePort } from './tools.js';

let registry: TestRegistry;
let proxy: TestProxy;
let client: RegistryClient;
const bytes = randomBytes(48 * 1024);
const blob = bufferBlobSource(bytes);

beforeAll(async () => {
  registry = await startRegistry();
  proxy = await startProxy(registry);
  client = testClient(proxy.host);
  await client.pushBlob('faults/blob', blob);
});
afterAll(async () => {
  await client?.close();
  await proxy?.close();
  await registry?.stop();
});
beforeEach(() => proxy.reset());

const blobRequests = (): number => proxy.log.filter((r) => blobGets(r)).length;

async function drain(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('retries', () => {
  test.each([503, 502, 500, 429])('GET answered %i twice is retried, and the third try succeeds', async (status) => {
    proxy.faults = { fail: { count: 2, status, match: blobGets } };
    expect((await client.readBlob('faults/blob', blob.digest, bytes.length)).equals(bytes)).toBe(true);
    expect(blobRequests()).toBe(3);
  });

  test('a range read is retried the same way', async () => {
    proxy.faults = { fail: { count: 1, status: 503, match: blobGets } };
    expect((await client.readBlobRange('faults/blob', blob.digest, 100, 200)).equals(bytes.subarray(100, 300))).toBe(true);
    expect(blobRequests()).toBe(2);
  });

  test('a connection cut before the answer is retried', async () => {
    proxy.faults = { reset: { count: 1, match: blobGets } };
    expect((await client.readBlob('faults/blob', blob.digest, bytes.length)).equals(bytes)).toBe(true);
    expect(blobRequests()).toBe(2);
  });

  test("a fault that persists fails after the policy's tries, saying so", async () => {
    proxy.faults = { fail: { count: 100, status: 503, match: blobGets } };
    await expect(client.readBlob('faults/blob', blob.digest, bytes.length)).rejects.toMatchObject({
      code: 'COWDISK_E_REGISTRY',
      message: /answered 503.*tried 3 times/,
    });
    expect(blobRequests()).toBe(3);
  });

  test('a 4xx is not retried', async () => {
    proxy.faults = { fail: { count: 100, status: 404, match: blobGets } };
    await expect(client.readBlob('faults/blob', blob.digest, bytes.length)).rejects.toMatchObject({ code: 'COWDISK_E_NOT_FOUND' });
    expect(blobRequests()).toBe(1);
  });

  test('an upload PUT is not retried: it is not idempotent', async () => {
    proxy.faults = { fail: { count: 1, status: 503, match: ({ method }) => method === 'PUT' } };
    const fresh = bufferBlobSource(randomBytes(1024));
    await expect(client.pushBlob('faults/upload', fresh)).rejects.toMatchObject({ code: 'COWDISK_E_REGISTRY', message: /503/ });
    expect(proxy.log.filter((r) => r.method === 'PUT')).toHaveLength(1);
    expect(await client.statBlob('faults/upload', fresh.digest)).toBeUndefined();
  });
});

describe('damaged answers', () => {
  test('a blob whose bytes were changed on the way is refused as CORRUPT, read whole', async () => {
    proxy.faults = { corrupt: blobGets };
    await expect(client.readBlob('faults/blob', blob.digest, bytes.length)).rejects.toMatchObject({ code: 'COWDISK_E_CORRUPT', message: new RegExp(blob.digest) });
  });

  test('a streamed blob whose bytes were changed fails at its end, as CORRUPT', async () => {
    proxy.faults = { corrupt: blobGets };
    const { stream } = await client.openBlob('faults/blob', blob.digest);
    await expect(drain(stream)).rejects.toMatchObject({ code: 'COWDISK_E_CORRUPT' });
  });

  test('an intact stream ends normally', async () => {
    const { stream } = await client.openBlob('faults/blob', blob.digest);
    expect((await drain(stream)).equals(bytes)).toBe(true);
  });
});

describe('a registry that stalls or is gone', () => {
  test('an answer slower than the timeout is retried, then fails, bounded', async () => {
    // undici checks this timeout about once a second, so the stall must outlast that.
    const impatient = testClient(proxy.host, { retry: { ...QUICK_RETRY, attempts: 2 }, idleTimeoutMs: 100 });
    try {
      proxy.faults = { delayMs: 2000 };
      await expect(impatient.statBlob('faults/blob', blob.digest)).rejects.toMatchObject({
        code: 'COWDISK_E_REGISTRY',
        message: /UND_ERR_HEADERS_TIMEOUT.*tried 2 times/,
      });
      expect(blobRequests()).toBe(0);
      expect(proxy.log.filter((r) => r.method === 'HEAD')).toHaveLength(2);
    } finally {
      await impatient.close();
    }
  });

  test('a slow answer within the timeout is just slow', async () => {
    proxy.faults = { delayMs: 50 };
    expect(await client.statBlob('faults/blob', blob.digest)).toEqual({ size: bytes.length });
  });

  test('a registry that is not there: an error naming it and what was tried', async () => {
    const port = await freePort();
    const gone = testClient(`127.0.0.1:${port}`);
    try {
      const err = await gone.ping().catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'COWDISK_E_REGISTRY' });
      expect((err as Error).message).toContain(`registry 127.0.0.1:${port} is unreachable: GET https://127.0.0.1:${port}/v2/`);
      expect((err as Error).message).toMatch(/ECONNREFUSED.*tried 3 times/);
    } finally {
      await gone.close();
    }
  });
});
