/**
 * `clone REF OVERLAY`: a thin overlay on a chain that lives in a registry, lazily. Only the
 * manifest, the config and each layer's header and directory move (a few hundred KiB for a
 * 1 GiB layer); the layers land in the layer cache as sparse copies, and the overlay names the
 * top one as it names any parent (a relative path and its digest). Blocks are fetched when
 * something reads them (image/remote-layer.ts), by whatever opens the overlay.
 */
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';
import { fileSystemOf } from '../io/real-file.js';
import { type CloneResult, cloneImage } from './create.js';
import { type ChainCacheOptions, cacheChain } from './registry-chain.js';

export interface RemoteCloneOptions extends ChainCacheOptions {
  subBlocks?: number;
  /** Refused unless it is the chain's (which fixes it). */
  blockSize?: number;
}

export interface RemoteCloneResult extends CloneResult {
  /** The chain cloned, as `HOST/REPO:TAG` or `HOST/REPO@DIGEST`, and its manifest's digest. */
  reference: string;
  manifestDigest: string;
  /** The cached copy of each layer, bottom first. */
  layers: string[];
  /** Bytes of layer metadata fetched (the manifest and config aside). */
  fetched: number;
}

export async function cloneFromRegistry(refText: string, overlayFile: string, options: RemoteCloneOptions = {}): Promise<RemoteCloneResult> {
  const fs = fileSystemOf(options);
  const overlay = path.resolve(overlayFile);
  // Before anything is fetched: the overlay would be refused at the end anyway.
  if (await fs.exists(overlay)) throw new CowdiskError(ErrorCode.EXISTS, `${overlay} already exists; choose another name or remove it first.`, { path: overlay });
  const cached = await cacheChain(refText, options);
  try {
    const top = cached.layers[cached.layers.length - 1].copy;
    const made = await cloneImage(top, overlay, { fs, subBlocks: options.subBlocks, blockSize: options.blockSize });
    if (made.size !== cached.chain.virtualSize || made.blockSize !== cached.chain.blockSize) {
      await fs.unlink(overlay);
      throw new CowdiskError(
        ErrorCode.CORRUPT,
        `${cached.what}: its config says ${cached.chain.virtualSize} bytes in ${cached.chain.blockSize}-byte blocks, its top layer ${made.size} in ${made.blockSize}; the chain in the registry is inconsistent.`,
      );
    }
    return { ...made, reference: cached.what, manifestDigest: cached.manifestDigest, layers: cached.layers.map((l) => l.copy), fetched: cached.fetched };
  } finally {
    await cached.client.close();
  }
}
