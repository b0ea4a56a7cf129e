/**
 * The chain manifest codec against the grammar in docs/REGISTRY.md: the exact bytes it writes
 * (spelled out here, not made by the encoder), decoding back, and every refusal: manifests of
 * other kinds as NOT_COWDISK, damaged cowdisk ones and disagreeing configs as CORRUPT, file
 * names that would leave the pull's directory, chains that cannot be described.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import * as codec from '../../src/registry/chain-manifest.js';
import { decodeChainConfig, decodeChainManifest, encodeChain, type Chain } from '../../src/registry/chain-manifest.js';

const d = (c: string): string => `sha256:${c.repeat(64)}`;
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

const chain: Chain = {
  virtualSize: 1073741824,
  blockSize: 65536,
  layers: [
    { blobDigest: d('1'), blobSize: 1000, layerDigest: d('a'), version: 1, name: 'base.snap' },
    { blobDigest: d('2'), blobSize: 20, layerDigest: d('b'), version: 2, name: 'app v2.snap' },
  ],
};

const expectedConfig = {
  virtualSize: 1073741824,
  blockSize: 65536,
  layers: [
    { layerDigest: d('a'), version: 1, name: 'base.snap' },
    { layerDigest: d('b'), version: 2, name: 'app v2.snap' },
  ],
};

function expectedManifest(configBytes: Buffer): object {
  return {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    artifactType: 'application/vnd.cowdisk.chain.v1+json',
    config: { mediaType: 'application/vnd.cowdisk.config.v1+json', digest: sha256(configBytes), size: configBytes.length },
    layers: [
      {
        mediaType: 'application/vnd.cowdisk.layer.v1',
        digest: d('1'),
        size: 1000,
        annotations: { 'org.cowdisk.layer.digest': d('a'), 'org.cowdisk.layer.version': '1', 'org.opencontainers.image.title': 'base.snap' },
      },
      {
        mediaType: 'application/vnd.cowdisk.layer.v1',
        digest: d('2'),
        size: 20,
        annotations: { 'org.cowdisk.layer.digest': d('b'), 'org.cowdisk.layer.version': '2', 'org.opencontainers.image.title': 'app v2.snap' },
      },
    ],
  };
}

const encoded = encodeChain(chain);
const manifestJson = (): Record<string, any> => JSON.parse(encoded.manifest.toString());
const bytes = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));

describe('encodeChain', () => {
  test('writes the documented config and manifest, byte for byte, with their digests', () => {
    const config = bytes(expectedConfig);
    expect(encoded.config.equals(config)).toBe(true);
    expect(encoded.configDigest).toBe(sha256(config));
    expect(encoded.manifest.equals(bytes(expectedManifest(config)))).toBe(true);
    expect(encoded.manifestDigest).toBe(sha256(encoded.manifest));
  });

  test.each<[string, (c: Chain) => void, RegExp]>([
    ['a block size that is not a power of two', (c) => (c.blockSize = 3000), /block size 3000/],
    ['a zero virtual size', (c) => (c.virtualSize = 0), /virtual size/],
    ['no layers', (c) => (c.layers = []), /no layers/],
    ['a layer digest of another form', (c) => (c.layers[0].layerDigest = 'md5:x'), /layer digest/],
    ['version 0', (c) => (c.layers[1].version = 0), /format version/],
    ['a file name with a slash', (c) => (c.layers[0].name = '../etc/passwd'), /not a plain file name/],
    ['two layers of one name', (c) => (c.layers[1].name = 'base.snap'), /both named base.snap/],
  ])('refuses %s', (_, damage, why) => {
    const bad = structuredClone(chain);
    damage(bad);
    expect(() => encodeChain(bad)).toThrow(expect.objectContaining({ code: 'COWDISK_E_INVALID_ARGUMENT', message: expect.stringMatching(why) }));
  });
});

test('docs/REGISTRY.md names every media type and annotation the codec writes', () => {
  const doc = readFileSync(new URL('../../docs/REGISTRY.md', import.meta.url), 'utf8');
  const names = [codec.CHAIN_ARTIFACT_TYPE, codec.CHAIN_CONFIG_TYPE, codec.LAYER_MEDIA_TYPE, codec.ANNOTATION_LAYER_DIGEST, codec.ANNOTATION_LAYER_VERSION, codec.ANNOTATION_METADATA_DIGEST, codec.ANNOTATION_METADATA_RANGES, codec.ANNOTATION_TITLE];
  for (const name of names) expect(doc).toContain(`\`${name}\``);
  for (const key of Object.keys(expectedConfig)) expect(doc).toContain(`| \`${key}\` |`);
});

describe('decoding', () => {
  test('the manifest and config give the chain back', () => {
    const manifest = decodeChainManifest(encoded.manifest, 'h/r:t', 'application/vnd.oci.image.manifest.v1+json');
    expect(manifest.config).toEqual({ digest: encoded.configDigest, size: encoded.config.length });
    expect(manifest.layers.map((l) => l.layerDigest)).toEqual([d('a'), d('b')]);
    expect(decodeChainConfig(encoded.config, manifest, 'h/r:t')).toEqual(chain);
  });

  test.each<[string, unknown, RegExp]>([
    ['a container image', { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json' }, layers: [] }, /is a container image/],
    ['a Docker image', { schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.v2+json', config: { mediaType: 'application/vnd.docker.container.image.v1+json' } }, /is a container image/],
    ['an image index', { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] }, /is an image index/],
    ['a Docker schema 1 manifest', { schemaVersion: 1, name: 'x' }, /schema 1/],
    ['another artifact', { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', artifactType: 'application/vnd.example.sbom', layers: [] }, /artifact of type application\/vnd.example.sbom/],
    ['not JSON', '{"schemaVersion":', /not a JSON object/],
    ['a JSON array', [1, 2], /not a JSON object/],
  ])('refuses %s as NOT_COWDISK', (_, manifest, why) => {
    const raw = typeof manifest === 'string' ? Buffer.from(manifest) : bytes(manifest);
    expect(() => decodeChainManifest(raw, 'h/r:t')).toThrow(expect.objectContaining({ code: 'COWDISK_E_NOT_COWDISK', message: expect.stringMatching(why) }));
  });

  test.each<[string, (m: Record<string, any>) => void, RegExp]>([
    ['a layer of another media type', (m) => (m.layers[0].mediaType = 'application/vnd.oci.image.layer.v1.tar'), /media type/],
    ['a layer without its layer digest', (m) => delete m.layers[1].annotations['org.cowdisk.layer.digest'], /org.cowdisk.layer.digest/],
    ['a version that is not a number', (m) => (m.layers[0].annotations['org.cowdisk.layer.version'] = '1a'), /org.cowdisk.layer.version/],
    ['a negative size', (m) => (m.layers[0].size = -1), /digest and size/],
    ['no layers', (m) => (m.layers = []), /no layers/],
    ['a config of another media type', (m) => (m.config.mediaType = 'application/json'), /config/],
    ['a huge config', (m) => (m.config.size = 1 << 30), /claims/],
  ])('refuses a cowdisk manifest with %s as CORRUPT', (_, damage, why) => {
    const m = manifestJson();
    damage(m);
    expect(() => decodeChainManifest(bytes(m), 'h/r:t')).toThrow(expect.objectContaining({ code: 'COWDISK_E_CORRUPT', message: expect.stringMatching(why) }));
  });

  test.each<[string, (c: Record<string, any>) => void, RegExp]>([
    ['layers swapped', (c) => c.layers.reverse(), /layer 0 is/],
    ['a layer fewer', (c) => c.layers.pop(), /lists 1 layers, the manifest 2/],
    ['a name that climbs out', (c) => (c.layers[0].name = '..'), /not a plain file name/],
    ['a block size that is not a power of two', (c) => (c.blockSize = 1000), /block size/],
  ])('refuses a config with %s as CORRUPT', (_, damage, why) => {
    const c = structuredClone(expectedConfig) as Record<string, any>;
    damage(c);
    const config = bytes(c);
    const manifest = { ...decodeChainManifest(encoded.manifest, 'h/r:t'), config: { digest: sha256(config), size: config.length } };
    expect(() => decodeChainConfig(config, manifest, 'h/r:t')).toThrow(expect.objectContaining({ code: 'COWDISK_E_CORRUPT', message: expect.stringMatching(why) }));
  });

  test('refuses a config that is not the one the manifest names', () => {
    const manifest = decodeChainManifest(encoded.manifest, 'h/r:t');
    expect(() => decodeChainConfig(Buffer.concat([encoded.config, Buffer.from(' ')]), manifest, 'h/r:t')).toThrow(/does not hash to/);
  });
});

describe('layer metadata (what a lazy clone fetches by range)', () => {
  const withMetadata: Chain = structuredClone(chain);
  withMetadata.layers[0].metadata = { digest: d('c'), ranges: [{ offset: 0, length: 400 }, { offset: 900, length: 100 }] };
  const m = (): Record<string, any> => JSON.parse(encodeChain(withMetadata).manifest.toString());

  test('is written as two annotations, before the title, and read back', () => {
    expect(Object.entries(m().layers[0].annotations)).toEqual([
      ['org.cowdisk.layer.digest', d('a')],
      ['org.cowdisk.layer.version', '1'],
      ['org.cowdisk.layer.metadata', d('c')],
      ['org.cowdisk.layer.metadata.ranges', '0+400,900+100'],
      ['org.opencontainers.image.title', 'base.snap'],
    ]);
    const encodedMeta = encodeChain(withMetadata);
    const manifest = decodeChainManifest(encodedMeta.manifest, 'h/r:t');
    expect(manifest.layers.map((l) => l.metadata)).toEqual([withMetadata.layers[0].metadata, undefined]);
    expect(decodeChainConfig(encodedMeta.config, manifest, 'h/r:t')).toEqual(withMetadata);
  });

  test.each<[string, (a: Record<string, string>) => void, RegExp]>([
    ['the digest without the ranges', (a) => delete a['org.cowdisk.layer.metadata.ranges'], /needs both/],
    ['ranges that do not parse', (a) => (a['org.cowdisk.layer.metadata.ranges'] = '0-399'), /needs both/],
    ['ranges out of order', (a) => (a['org.cowdisk.layer.metadata.ranges'] = '900+100,0+400'), /not ascending/],
    ['a range past the blob', (a) => (a['org.cowdisk.layer.metadata.ranges'] = '0+400,900+101'), /past the blob's 1000 bytes/],
    ['an empty range', (a) => (a['org.cowdisk.layer.metadata.ranges'] = '0+0'), /positive length/],
    ['a digest of another form', (a) => (a['org.cowdisk.layer.metadata'] = 'md5:x'), /not sha256/],
  ])('refuses %s as CORRUPT', (_, damage, why) => {
    const manifest = m();
    damage(manifest.layers[0].annotations);
    expect(() => decodeChainManifest(bytes(manifest), 'h/r:t')).toThrow(expect.objectContaining({ code: 'COWDISK_E_CORRUPT', message: expect.stringMatching(why) }));
  });

  test('a chain whose metadata reaches past its blob cannot be encoded', () => {
    const bad = structuredClone(withMetadata);
    bad.layers[0].metadata!.ranges = [{ offset: 990, length: 20 }];
    expect(() => encodeChain(bad)).toThrow(expect.objectContaining({ code: 'COWDISK_E_INVALID_ARGUMENT', message: expect.stringMatching(/metadata range 990\+20/) }));
  });
});
