/**
 * TLS against a real registry serving a certificate from a CA made in the test: trusted with
 * `caFile`, a clear TLS error without it, and the loopback rule (HTTPS when the registry speaks
 * it, plain HTTP when it does not) never falling back to plain HTTP over a certificate error.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { bufferBlobSource } from '../../src/registry/blob-source.js';
import { RegistryClient, type ClientOptions } from '../../src/registry/client.js';
import { withClient } from './clients.js';
import { makeCa, type TestCa } from './pki.js';
import { startRegistry, type TestRegistry } from './registry-server.js';

let dir: string;
let ca: TestCa;
let registry: TestRegistry;
const retry = { attempts: 1, baseDelayMs: 0, maxDelayMs: 0 };

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowdisk-tls-'));
  ca = await makeCa(dir);
  registry = await startRegistry({ tls: await ca.issue('registry') });
});
afterAll(async () => {
  await registry?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

const using = <T>(options: ClientOptions, body: (c: RegistryClient) => Promise<T>): Promise<T> => withClient(registry.host, { retry, ...options }, body);

describe('TLS', () => {
  test('with the CA as caFile: HTTPS works, push and read back', async () => {
    const bytes = randomBytes(12 * 1024);
    const blob = bufferBlobSource(bytes);
    await using({ caFile: ca.cert }, async (c) => {
      await c.ping();
      expect(await c.pushBlob('secure/disk', blob)).toBe('uploaded');
      expect((await c.readBlob('secure/disk', blob.digest, bytes.length)).equals(bytes)).toBe(true);
    });
  });

  test('without it: a TLS error that says to pass --ca-file, and no fallback to plain HTTP', async () => {
    await using({}, async (c) => {
      const err = (await c.ping().catch((e: unknown) => e)) as Error & { code: string };
      expect(err.code).toBe('COWDISK_E_TLS');
      expect(err.message).toMatch(/127\.0\.0\.1:\d+ presented a certificate this machine does not trust \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\)/);
      expect(err.message).toContain('--ca-file');
    });
  });

  test('a CA that did not sign the certificate is no better than none', async () => {
    const other = await makeCa(dir, 'another CA');
    await using({ caFile: other.cert }, async (c) => {
      await expect(c.ping()).rejects.toMatchObject({ code: 'COWDISK_E_TLS' });
    });
  });

  test('a caFile that cannot be read is an argument error naming it', () => {
    expect(() => new RegistryClient(registry.host, { caFile: path.join(dir, 'missing.pem') })).toThrow(/missing\.pem: cannot read the CA file/);
  });

  test('plain HTTP to a TLS registry is refused by the registry, and said so', async () => {
    await using({ plainHttp: true }, async (c) => {
      await expect(c.ping()).rejects.toMatchObject({ code: 'COWDISK_E_REGISTRY', message: /answered 400/ });
    });
  });
});
