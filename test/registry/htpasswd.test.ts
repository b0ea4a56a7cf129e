/**
 * Basic auth against a real registry with htpasswd (`htpasswd -B`): good credentials, from the
 * command line or from a Docker config as `docker login` writes it; wrong or missing ones as AUTH
 * errors that say how to log in. And redirects: Authorization follows a redirect that stays on
 * the registry's origin and is dropped when one leaves it for object storage.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { bufferBlobSource } from '../../src/registry/blob-source.js';
import { Credentials } from '../../src/registry/credentials.js';
import { withClient } from './clients.js';
import { blobGets, startProxy, type TestProxy } from './fault-proxy.js';
import { startObjectStore, type TestObjectStore } from './object-store.js';
import { startRegistry, type TestRegistry } from './registry-server.js';
import { freePort } from './tools.js';

let registry: TestRegistry;
let proxy: TestProxy;
let store: TestObjectStore;
let configDir: string;
const alice = new Credentials('alice', 'correct horse');
const blob = bufferBlobSource(randomBytes(16 * 1024));

beforeAll(async () => {
  registry = await startRegistry({ htpasswd: { alice: 'correct horse', bob: 'battery staple' } });
  proxy = await startProxy(registry);
  store = await startObjectStore();
  configDir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowdisk-docker-config-'));
  await withClient(registry.host, { credentials: alice }, (c) => c.pushBlob('private/disk', blob));
});
afterAll(async () => {
  await proxy?.close();
  await store?.close();
  await registry?.stop();
  fs.rmSync(configDir, { recursive: true, force: true });
});
beforeEach(() => proxy.reset());

describe('htpasswd', () => {
  test('good credentials from the command line push and read', async () => {
    await withClient(registry.host, { credentials: alice }, async (c) => {
      await c.ping();
      expect(await c.statBlob('private/disk', blob.digest)).toEqual({ size: blob.size });
    });
  });

  test('credentials from a Docker config, as docker login writes them (auth: base64 user:password)', async () => {
    const dir = path.join(configDir, 'logged-in');
    fs.mkdirSync(dir, { recursive: true });
    const auth = Buffer.from('bob:battery staple').toString('base64');
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ auths: { [`http://${registry.host}`]: { auth } } }));
    await withClient(registry.host, { dockerConfigDir: dir }, async (c) => {
      expect(await c.statBlob('private/disk', blob.digest)).toEqual({ size: blob.size });
    });
  });

  test('once the registry has asked for Basic, later requests carry it from the start', async () => {
    await withClient(proxy.host, { credentials: alice }, async (c) => {
      await c.statBlob('private/disk', blob.digest);
      await c.statBlob('private/disk', blob.digest);
    });
    expect(proxy.log.map((r) => [r.status, r.headers.authorization !== undefined])).toEqual([
      [401, false],
      [200, true],
      [200, true],
    ]);
  });

  test('a wrong password is an AUTH error naming the registry, the user, and how to log in', async () => {
    await withClient(registry.host, { credentials: new Credentials('alice', 'wrong') }, async (c) => {
      const err = (await c.ping().catch((e: unknown) => e)) as Error & { code: string };
      expect(err.code).toBe('COWDISK_E_AUTH');
      expect(err.message).toContain(`${registry.host} refused the credentials of user 'alice'`);
      expect(err.message).toContain(`docker login ${registry.host}`);
      expect(err.message).toContain('--password-stdin');
      expect(err.message).not.toContain('wrong');
    });
  });

  test('no credentials at all is an AUTH error that says none were found and where it looked', async () => {
    await withClient(registry.host, {}, async (c) => {
      await expect(c.statBlob('private/disk', blob.digest)).rejects.toMatchObject({
        code: 'COWDISK_E_AUTH',
        message: new RegExp(`requires credentials and none were found \\(no .*config\\.json\\)`),
      });
    });
  });
});

describe('redirects', () => {
  test('a redirect that stays on the registry origin keeps Authorization', async () => {
    proxy.faults = { redirect: { match: (r) => blobGets(r) && !r.path.includes('hop'), to: (p) => `${p}?hop=1` } };
    await withClient(proxy.host, { credentials: alice }, async (c) => {
      await c.ping();
      expect((await c.readBlob('private/disk', blob.digest, blob.size)).length).toBe(blob.size);
    });
    const blobRequests = proxy.log.filter((r) => blobGets(r));
    expect(blobRequests.map((r) => [r.status, r.headers.authorization?.startsWith('Basic ')])).toEqual([
      [307, true],
      [200, true],
    ]);
  });

  test('a redirect to another origin (object storage) drops Authorization there', async () => {
    const bytes = randomBytes(8 * 1024);
    const stored = bufferBlobSource(bytes);
    store.objects.set(`/bucket/${stored.digest}`, bytes);
    proxy.faults = { redirect: { match: blobGets, to: (p) => `${store.origin}/bucket/${p.split('/blobs/')[1]}` } };
    await withClient(proxy.host, { credentials: alice }, async (c) => {
      await c.ping();
      expect((await c.readBlob('private/disk', stored.digest, bytes.length)).equals(bytes)).toBe(true);
    });
    const redirected = proxy.log.filter((r) => blobGets(r));
    expect(redirected.map((r) => [r.status, r.headers.authorization?.startsWith('Basic ')])).toEqual([[307, true]]);
    expect(store.requests).toHaveLength(1);
    expect(store.requests[0].headers.authorization).toBeUndefined();
  });

  test('an error after a redirect to presigned storage does not show the signature', async () => {
    const down = `http://127.0.0.1:${await freePort()}`;
    proxy.faults = { redirect: { match: blobGets, to: () => `${down}/bucket/blob?X-Amz-Signature=s3cr3t-signature` } };
    await withClient(proxy.host, { credentials: alice }, async (c) => {
      const err = (await c.readBlob('private/disk', blob.digest, blob.size).catch((e: unknown) => e)) as Error;
      expect(err).toMatchObject({ code: 'COWDISK_E_REGISTRY' });
      expect(err.message).toContain(`GET ${down}/bucket/blob?… failed (ECONNREFUSED)`);
      expect(err.message).not.toContain('s3cr3t');
    });
  });

  test('a chain of redirects is bounded', async () => {
    proxy.faults = { redirect: { match: blobGets, to: (p) => p } };
    await withClient(proxy.host, { credentials: alice }, async (c) => {
      await expect(c.readBlob('private/disk', blob.digest, blob.size)).rejects.toMatchObject({ code: 'COWDISK_E_REGISTRY', message: /more than 5 redirects/ });
    });
  });
});
