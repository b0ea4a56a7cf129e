/**
 * The bearer-token flow end to end: a real registry in `auth: token` mode trusting a test CA,
 * and the test's token server signing ES256 JWTs with a certificate that CA issued. Covers the
 * challenge, the token request (service, scopes, Basic or anonymous), caching per scope until
 * expiry, push scope, mount scope, and refusals as AUTH errors.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { Authenticator } from '../../src/registry/auth.js';
import { bufferBlobSource } from '../../src/registry/blob-source.js';
import { RegistryClient, type ClientOptions } from '../../src/registry/client.js';
import { Credentials } from '../../src/registry/credentials.js';
import { Transport } from '../../src/registry/http.js';
import { withClient } from './clients.js';
import { makeCa } from './pki.js';
import { startRegistry, type TestRegistry } from './registry-server.js';
import { startTokenServer, type TestTokenServer } from './token-server.js';

const SERVICE = 'cowdisk-test-registry';
const ISSUER = 'cowdisk-test-issuer';
let dir: string;
let tokens: TestTokenServer;
let registry: TestRegistry;
const alice = new Credentials('alice', 'alice-secret');
const reader = new Credentials('reader', 'reader-secret');

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowdisk-token-'));
  const ca = await makeCa(dir, 'token CA');
  const signer = await ca.issue('token signer');
  tokens = await startTokenServer({
    signer,
    issuer: ISSUER,
    service: SERVICE,
    users: { alice: 'alice-secret', reader: 'reader-secret' },
    grants: { reader: ['pull'] },
    anonymous: ['pull'],
  });
  registry = await startRegistry({ token: { realm: tokens.realm, service: SERVICE, issuer: ISSUER, rootCertBundle: ca.cert } });
});
afterAll(async () => {
  await registry?.stop();
  await tokens?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => {
  tokens.requests.length = 0;
});

const using = <T>(options: ClientOptions, body: (c: RegistryClient) => Promise<T>): Promise<T> =>
  withClient(registry.host, { retry: { attempts: 1, baseDelayMs: 0, maxDelayMs: 0 }, ...options }, body);

describe('bearer tokens', () => {
  test('push then pull: the token server is asked for pull,push with Basic credentials, then the token is reused', async () => {
    const bytes = randomBytes(20 * 1024);
    const blob = bufferBlobSource(bytes);
    await using({ credentials: alice }, async (c) => {
      expect(await c.pushBlob('tok/disk', blob, { monolithicLimit: 8 * 1024, chunkSize: 8 * 1024 })).toBe('uploaded');
      expect((await c.readBlob('tok/disk', blob.digest, bytes.length)).equals(bytes)).toBe(true);
      expect((await c.readBlobRange('tok/disk', blob.digest, 5, 10)).equals(bytes.subarray(5, 15))).toBe(true);
    });
    // One token per set of scopes: the HEAD's pull token, the upload's push token (every PATCH
    // and the PUT reuse it); the reads reuse the pull one.
    expect(tokens.requests).toEqual([
      { user: 'alice', scopes: ['repository:tok/disk:pull'], service: SERVICE },
      { user: 'alice', scopes: ['repository:tok/disk:pull,push'], service: SERVICE },
    ]);
  });

  test('anonymous pull works when the token service grants it, without credentials', async () => {
    const blob = bufferBlobSource(randomBytes(1024));
    await using({ credentials: alice }, (c) => c.pushBlob('tok/public', blob));
    tokens.requests.length = 0;
    await using({}, async (c) => {
      expect(await c.statBlob('tok/public', blob.digest)).toEqual({ size: 1024 });
    });
    expect(tokens.requests).toEqual([{ user: undefined, scopes: ['repository:tok/public:pull'], service: SERVICE }]);
  });

  test('anonymous push is refused as AUTH, saying how to log in', async () => {
    await using({}, async (c) => {
      await expect(c.pushBlob('tok/public', bufferBlobSource(randomBytes(10)))).rejects.toMatchObject({
        code: 'COWDISK_E_AUTH',
        message: /refused anonymous access.*docker login/,
      });
    });
  });

  test('a user the token service grants only pull cannot push: AUTH, naming the scope not granted', async () => {
    await using({ credentials: reader }, async (c) => {
      await expect(c.pushBlob('tok/disk', bufferBlobSource(randomBytes(10)))).rejects.toMatchObject({
        code: 'COWDISK_E_AUTH',
        message: /user 'reader'.*did not grant repository:tok\/disk:pull,push/,
      });
    });
  });

  test('a wrong password is refused by the token service: AUTH', async () => {
    await using({ credentials: new Credentials('alice', 'nope') }, async (c) => {
      await expect(c.ping()).rejects.toMatchObject({ code: 'COWDISK_E_AUTH', message: /refused the credentials of user 'alice'/ });
    });
  });

  test('a mount asks for pull on the source and pull,push on the target, in one token', async () => {
    const blob = bufferBlobSource(randomBytes(4096));
    await using({ credentials: alice }, async (c) => {
      await c.pushBlob('tok/base', blob);
      tokens.requests.length = 0;
      expect(await c.pushBlob('tok/app', blob, { mountFrom: ['tok/base'] })).toBe('mounted');
    });
    expect(tokens.requests.map((r) => r.scopes)).toContainEqual(['repository:tok/app:pull,push', 'repository:tok/base:pull']);
  });
});

describe('token cache', () => {
  test('a token is reused within its lifetime and fetched again after it', async () => {
    let now = Date.now();
    const transport = new Transport(registry.host);
    try {
      const auth = new Authenticator(registry.host, { credentials: alice, source: 'test' }, transport, () => now);
      const challenge = `Bearer realm="${tokens.realm}",service="${SERVICE}",scope="repository:tok/disk:pull"`;
      const first = await auth.answer(challenge, [], undefined);
      expect(first).toMatch(/^Bearer [\w-]+\.[\w-]+\.[\w-]+$/);
      expect(await auth.authorization(['repository:tok/disk:pull'])).toBe(first);
      expect(tokens.requests).toHaveLength(1);
      now += 200 * 1000; // the token server's tokens live 300 s
      expect(await auth.authorization(['repository:tok/disk:pull'])).toBe(first);
      now += 100 * 1000;
      await auth.authorization(['repository:tok/disk:pull']);
      expect(tokens.requests).toHaveLength(2);
      await auth.authorization(['repository:tok/other:pull']);
      expect(tokens.requests).toHaveLength(3);
    } finally {
      await transport.close();
    }
  });
});
