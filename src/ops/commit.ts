/**
 * `commit`: merge an overlay into its parent, like `qemu-img commit`, or (`into`) into a layer
 * further down, like `qemu-img commit -b`.
 *
 * Sealed layers are never modified in place: other clones may stand on them. So the merge makes a
 * NEW sealed layer holding what the layers from the overlay down to the target read as (every
 * block any of them holds, read through the overlay), whose parent is the target's parent, and
 * the overlay, emptied, is re-pointed at it. The layers merged are left exactly as they were:
 * every other clone of them stays valid, and they are no longer needed by this overlay.
 *
 * Unlike `snapshot`, the chain does not grow: the merged layers are replaced by one. The cost is
 * the data those layers hold. Committing into a raw base (which has no parent) makes a layer that
 * stands alone, holding the base's data too.
 *
 * Crash safety is `snapshot`'s: the new layer is whole before the overlay is switched to it, and
 * the switch is one rename (see reset.ts).
 */
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';
import { fileSystemOf } from '../io/real-file.js';
import type { Layer } from '../image/layer.js';
import { allLayers } from '../image/open.js';
import { heldBlocks } from './layers.js';
import { openOverlayForWriting } from './open-overlay.js';
import { type LifecycleOptions, type SealResult, nextLayerName, sealAndReset } from './seal.js';

export interface CommitOptions extends LifecycleOptions {
  /** The lowest layer merged: a path, or a snapshot's digest (a prefix of at least 12 hex digits). Default: the parent. */
  into?: string;
  /** Where the merged layer goes. Default: next to the overlay, as `snapshot` names layers. */
  output?: string;
}

export interface CommitResult extends SealResult {
  /** The layers merged into the new one, top first: unchanged, and still valid for other clones. */
  merged: string[];
}

export async function commitOverlay(overlayFile: string, options: CommitOptions = {}): Promise<CommitResult> {
  const fs = fileSystemOf(options);
  const image = await openOverlayForWriting(fs, overlayFile, 'commit');
  try {
    const layers = allLayers(image);
    if (layers.length < 2) {
      throw new CowdiskError(
        ErrorCode.INVALID_ARGUMENT,
        `${image.path} has no parent to commit into. \`cowdisk snapshot ${overlayFile}\` seals its contents into a layer of their own.`,
        { path: image.path },
      );
    }
    const target = options.into === undefined ? 1 : findLayer(layers, options.into, image.path);
    const out = path.resolve(options.output ?? (await nextLayerName(fs, image.path)));
    const set = await heldBlocks(layers.slice(0, target + 1), image.overlay.file.blocks, image.device.blockSize);
    // layers[0] is the overlay: the sealed layer below layers[target] is image.layers[target].
    const sealed = await sealAndReset(fs, image, set, out, image.layers[target], options.onProgress);
    return { ...sealed, merged: layers.slice(1, target + 1).map((l) => l.path) };
  } finally {
    await image.close();
  }
}

/** The index (1 or more: a layer below the overlay) of the layer `spec` names. */
function findLayer(layers: readonly Layer[], spec: string, image: string): number {
  const byPath = layers.findIndex((l) => l.path === path.resolve(spec));
  if (byPath > 0) return byPath;
  const hex = spec.replace(/^sha256:/, '').toLowerCase();
  if (/^[0-9a-f]{12,64}$/.test(hex)) {
    const matches = layers.map((l, i) => [l, i] as const).filter(([l]) => l.identity.startsWith(`sha256:${hex}`));
    if (matches.length === 1 && matches[0][1] > 0) return matches[0][1];
    if (matches.length > 1) {
      throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `${spec} matches ${matches.length} layers of ${image}; give more digits or the layer's path.`);
    }
  }
  const list = layers
    .slice(1)
    .map((l) => `  ${l.path}`)
    .join('\n');
  throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `${spec} is not a layer beneath ${image}. Its layers are:\n${list}\n(\`cowdisk info --chain ${image}\` shows their digests.)`);
}
