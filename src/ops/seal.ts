/**
 * Sealing: writing a new snapshot layer that holds a set of blocks exactly as a device reads them.
 *
 * `snapshot`, `commit` and `flatten` are all this one step with different inputs: which blocks
 * (those the overlay holds; those held by every layer down to the one committed into; every
 * block), read through the image itself (so a block partly written in the overlay comes out
 * whole, completed from the layers below, and a zeroed block comes out as zeros), over which
 * parent (the overlay's parent; the parent of the layer committed into; none).
 *
 * A block that reads as zeros becomes a zero entry (no data; it hides the parent as the
 * overlay's zero state or zero bytes did), or, with no parent, is left out: absent already reads
 * as zeros there.
 *
 * The layer is written under a temporary name and renamed into place after a sync (the
 * snapshot writer does that), so a crash leaves no layer or a whole one, and nothing yet refers
 * to it.
 */
import * as path from 'node:path';
import type { ParentRef } from '../format/header.js';
import type { SealedHeader } from '../format/sealed-file.js';
import { SnapshotV2Writer } from '../format/snapshot-v2-writer.js';
import type { FileSystem } from '../io/file.js';
import type { BlockDevice } from '../image/device.js';
import type { BlockSet } from './block-set.js';
import { type Progress, forEachChunk, isZero } from './chunks.js';
import type { SealedLayer } from '../image/layer.js';
import type { OpenOverlay } from './open-overlay.js';
import { resetOverlay } from './reset.js';

export interface LifecycleOptions {
  fs?: FileSystem;
  onProgress?: Progress;
}

export interface SealResult {
  overlay: string;
  /** The new sealed layer. */
  layer: string;
  /** Its identity, sha256:... */
  digest: string;
  /** The new layer's parent, or null when it stands alone. */
  parent: string | null;
  /** Blocks the new layer holds (stored or zero). */
  blocks: number;
  /** Bytes of block data stored in it, after compression. */
  dataBytes: number;
}

/**
 * `snapshot` and `commit`: seals `set` as the overlay reads it into `out` over `below` (or no
 * parent), then re-points the overlay, emptied, at the new layer.
 */
export async function sealAndReset(fs: FileSystem, image: OpenOverlay, set: BlockSet, out: string, below: SealedLayer | undefined, onProgress?: Progress): Promise<SealResult> {
  const parent = below ? below.reference(out) : ({ kind: 'none' } as const);
  const { header, entries } = await sealBlocks(image.device, set, out, parent, fs, onProgress);
  await resetOverlay(fs, image.overlay.file, { kind: 'snapshot', path: path.relative(path.dirname(image.path), out), size: header.size, digest: header.layerDigest });
  return {
    overlay: image.path,
    layer: out,
    digest: `sha256:${header.layerDigest.toString('hex')}`,
    parent: below?.path ?? null,
    blocks: entries,
    dataBytes: header.dataBytes,
  };
}

export async function sealBlocks(
  source: BlockDevice,
  set: BlockSet,
  out: string,
  parent: ParentRef,
  fs: FileSystem,
  onProgress?: Progress,
): Promise<{ header: SealedHeader; entries: number }> {
  const bs = source.blockSize;
  let entries = 0;
  const writer = await SnapshotV2Writer.create(fs, out, { size: source.size, blockSize: bs, parent });
  try {
    await forEachChunk(
      source,
      set,
      async (first, data) => {
        for (let i = 0; i * bs < data.length; i++) {
          const block = data.subarray(i * bs, (i + 1) * bs);
          const zero = isZero(block);
          if (zero && parent.kind === 'none') continue;
          await writer.add(first + i, zero ? null : block);
          entries++;
        }
      },
      onProgress,
    );
    return { header: await writer.finish(), entries };
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

/**
 * The name a new layer made from `overlay` gets when none is given: next to it, its name without
 * the extension, then the first unused number: `vm1.cow` gives `vm1.1.snap`, then `vm1.2.snap`.
 */
export async function nextLayerName(fs: FileSystem, overlay: string): Promise<string> {
  const abs = path.resolve(overlay);
  const stem = path.join(path.dirname(abs), path.basename(abs, path.extname(abs)));
  for (let n = 1; ; n++) {
    const candidate = `${stem}.${n}.snap`;
    if (!(await fs.exists(candidate))) return candidate;
  }
}
