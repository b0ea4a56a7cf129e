/**
 * What `clone REF` and `pull REF` both do first: fetch the chain's manifest and config, and make
 * sure the layer cache has an entry for each layer (fetching the metadata of those it lacks),
 * checking that the layers' headers link up as the manifest orders them.
 */
import { CowdiskError, ErrorCode } from '../errors.js';
import type { FileSystem } from '../io/file.js';
import { fileSystemOf } from '../io/real-file.js';
import { defaultCacheDir } from '../image/layer-cache.js';
import { type Chain, formatReference, parseReference, type Reference, RegistryClient } from '../registry/index.js';
import { type CachedLayer, cacheLayer } from './cache-entry.js';
import { blobRanges, originOf, type RegistryAccess } from './remote-source.js';

export interface ChainCacheOptions extends RegistryAccess {
  /** The layer cache (default `$XDG_CACHE_HOME/cowdisk`). */
  cache?: string;
  fs?: FileSystem;
}

export interface CachedChain {
  ref: Reference;
  /** `HOST/REPO:TAG` or `HOST/REPO@DIGEST`, for messages. */
  what: string;
  manifestDigest: string;
  chain: Chain;
  /** The cache's entry for each layer, bottom first. */
  layers: CachedLayer[];
  /** Bytes of layer metadata fetched (0 when the cache had every layer). */
  fetched: number;
  /** The client used; the caller closes it. */
  client: RegistryClient;
}

export async function cacheChain(refText: string, options: ChainCacheOptions): Promise<CachedChain> {
  const fs = fileSystemOf(options);
  const ref = parseReference(refText);
  const what = formatReference(ref);
  const cacheDir = options.cache ?? defaultCacheDir();
  const client = RegistryClient.forReference(ref, options);
  try {
    const { chain, manifestDigest } = await client.fetchChain(ref);
    const layers: CachedLayer[] = [];
    for (const [i, layer] of chain.layers.entries()) {
      if (!layer.metadata) {
        throw new CowdiskError(
          ErrorCode.UNSUPPORTED,
          `${what}: layer ${i} (${layer.name}) was pushed without the header and directory digest (org.cowdisk.layer.metadata) that fetching it by ranges needs; push the chain again with this cowdisk.`,
        );
      }
      const blob = { digest: layer.blobDigest, size: layer.blobSize };
      const spec = { layerDigest: layer.layerDigest, blob, formatVersion: layer.version, metadata: layer.metadata, source: `${ref.registry}/${ref.repository}`, origin: originOf(ref, options) };
      const cached = await cacheLayer(fs, cacheDir, spec, blobRanges(client, ref.repository, blob));
      const below = i === 0 ? null : chain.layers[i - 1].layerDigest;
      if ((cached.record.parent?.digest ?? null) !== below) {
        throw new CowdiskError(
          ErrorCode.CORRUPT,
          `${what}: layer ${i} (${layer.layerDigest}) names ${cached.record.parent?.digest ?? 'no parent'} as its parent, but the manifest puts ${below ?? 'nothing'} below it; the chain in the registry is inconsistent.`,
        );
      }
      layers.push(cached);
    }
    return { ref, what, manifestDigest, chain, layers, fetched: layers.reduce((sum, l) => sum + l.fetched, 0), client };
  } catch (err) {
    await client.close();
    throw err;
  }
}
