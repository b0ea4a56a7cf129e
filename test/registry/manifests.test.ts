/**
 * Manifests against a real registry: a chain pushed and fetched back through the codec (by tag
 * and by digest), tags resolved, absent tags and repositories as NOT_FOUND, manifests that are
 * not cowdisk's refused by name, a manifest damaged on the way refused as CORRUPT.
 */
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { bufferBlobSource, type BlobSource } from '../../src/registry/blob-source.js';
import { encodeChain, type Chain } from '../../src/registry/chain-manifest.js';
import type { RegistryClient } from '../../src/registry/client.js';
import { parseReference } from '../../src/registry/reference.js';
import { testClient } from './clients.js';
import { startProxy, type TestProxy } from './fault-proxy.js';
import { startRegistry, type TestRegistry } from './registry-server.js';

let registry: TestRegistry;
let proxy: TestProxy;
let client: RegistryClient;
const sha256 = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

/** Two "layer files" (random bytes: the registry and the codec never look inside) and their chain. */
function makeChain(): { chain: Chain; sources: BlobSource[] } {
  const files = [randomBytes(40 * 1024), randomBytes(12 * 1024)];
  const sources = files.map((f) => bufferBlobSource(f));
  const chain: Chain = {
    virtualSize: 64 * 1024 * 1024,
    blockSize: 65536,
    layers: sources.map((s, i) => ({
      blobDigest: s.digest,
      blobSize: s.size,
      layerDigest: sha256(`layer ${i} ${s.digest}`),
      version: i + 1,
      name: ['base.snap', 'app.snap'][i],
    })),
  };
  return { chain, sources };
}

beforeAll(async () => {
  registry = await startRegistry();
  proxy = await startProxy(registry);
  client = testClient(proxy.host);
});
afterAll(async () => {
  await client?.close();
  await proxy?.close();
  await registry?.stop();
});
beforeEach(() => proxy.reset());

describe('a chain through the registry', () => {
  test('pushed under a tag, fetched back by tag and by digest, equal to what was pushed', async () => {
    const { chain, sources } = makeChain();
    const outcomes: string[] = [];
    const digest = await client.pushChain('chains/app', 'v1', chain, sources, { onBlob: (_, o) => outcomes.push(o) });
    expect(outcomes).toEqual(['uploaded', 'uploaded', 'uploaded']);
    expect(digest).toBe(encodeChain(chain).manifestDigest);

    const byTag = await client.fetchChain(parseReference(`${proxy.host}/chains/app:v1`));
    expect(byTag.chain).toEqual(chain);
    expect(byTag.manifestDigest).toBe(digest);
    const byDigest = await client.fetchChain(parseReference(`${proxy.host}/chains/app@${digest}`));
    expect(byDigest.chain).toEqual(chain);
    expect(await client.resolveManifest('chains/app', 'v1')).toMatchObject({ digest, mediaType: OCI_MANIFEST });
    for (const [i, s] of sources.entries()) {
      expect(await client.statBlob('chains/app', chain.layers[i].blobDigest)).toEqual({ size: s.size });
    }
  });

  test('pushing the same chain again sends no blob and keeps the digest', async () => {
    const { chain, sources } = makeChain();
    const first = await client.pushChain('chains/again', 'v1', chain, sources);
    proxy.reset();
    const outcomes: string[] = [];
    expect(await client.pushChain('chains/again', 'v2', chain, sources, { onBlob: (_, o) => outcomes.push(o) })).toBe(first);
    expect(outcomes).toEqual(['present', 'present', 'present']);
    expect(proxy.log.filter((r) => r.method === 'PATCH' || (r.method === 'PUT' && r.path.includes('/blobs/')))).toHaveLength(0);
  });

  test('a manifest damaged on the way is refused as CORRUPT when fetched by digest', async () => {
    const { chain, sources } = makeChain();
    const digest = await client.pushChain('chains/damaged', 'v1', chain, sources);
    proxy.faults = { corrupt: ({ method, path }) => method === 'GET' && path.includes('/manifests/') };
    await expect(client.getManifest('chains/damaged', digest)).rejects.toMatchObject({ code: 'COWDISK_E_CORRUPT', message: new RegExp(digest) });
    // By tag, the Docker-Content-Digest the registry sends is the check.
    await expect(client.getManifest('chains/damaged', 'v1')).rejects.toMatchObject({ code: 'COWDISK_E_CORRUPT' });
  });

  test('a manifest whose blobs the registry lacks is refused by it, and said so', async () => {
    const { chain } = makeChain();
    const { manifest } = encodeChain(chain);
    await expect(client.putManifest('chains/incomplete', 'v1', manifest, OCI_MANIFEST)).rejects.toMatchObject({
      code: 'COWDISK_E_REGISTRY',
      message: /MANIFEST_BLOB_UNKNOWN/,
    });
  });
});

describe('what is not there', () => {
  test('an absent tag is NOT_FOUND naming the tag', async () => {
    const { chain, sources } = makeChain();
    await client.pushChain('chains/tags', 'v1', chain, sources);
    await expect(client.fetchChain(parseReference(`${proxy.host}/chains/tags:v9`))).rejects.toMatchObject({
      code: 'COWDISK_E_NOT_FOUND',
      message: new RegExp(`tag v9 of ${proxy.host}/chains/tags does not exist`),
    });
    await expect(client.resolveManifest('chains/tags', 'v9')).rejects.toMatchObject({ code: 'COWDISK_E_NOT_FOUND' });
  });

  test('an absent repository is NOT_FOUND', async () => {
    await expect(client.fetchChain(parseReference(`${proxy.host}/no/such/repo:v1`))).rejects.toMatchObject({
      code: 'COWDISK_E_NOT_FOUND',
      message: /does not exist/,
    });
  });
});

describe('manifests that are not cowdisk chains', () => {
  async function pushContainerImage(repository: string): Promise<void> {
    const config = bufferBlobSource(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } })));
    const layer = bufferBlobSource(randomBytes(1024));
    await client.pushBlob(repository, config);
    await client.pushBlob(repository, layer);
    const manifest = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config.digest, size: config.size },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layer.digest, size: layer.size }],
    };
    await client.putManifest(repository, 'latest', Buffer.from(JSON.stringify(manifest)), OCI_MANIFEST);
  }

  test('a container image is refused as NOT_COWDISK, saying what it is', async () => {
    await pushContainerImage('images/debian');
    await expect(client.fetchChain(parseReference(`${proxy.host}/images/debian`))).rejects.toMatchObject({
      code: 'COWDISK_E_NOT_COWDISK',
      message: new RegExp(`${proxy.host}/images/debian:latest is a container image, not a cowdisk chain`),
    });
  });

  test('an image index is refused as NOT_COWDISK', async () => {
    await pushContainerImage('images/multi');
    const image = await client.getManifest('images/multi', 'latest');
    const index = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [{ mediaType: OCI_MANIFEST, digest: image.digest, size: image.bytes.length, platform: { architecture: 'amd64', os: 'linux' } }],
    };
    await client.putManifest('images/multi', 'index', Buffer.from(JSON.stringify(index)), 'application/vnd.oci.image.index.v1+json');
    await expect(client.fetchChain(parseReference(`${proxy.host}/images/multi:index`))).rejects.toMatchObject({
      code: 'COWDISK_E_NOT_COWDISK',
      message: /is an image index/,
    });
  });
});
