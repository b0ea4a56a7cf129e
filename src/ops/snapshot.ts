/**
 * `snapshot`: seal what an overlay holds into a new sealed layer and carry on, the overlay empty,
 * on top of it: the `docker commit` of a disk. The chain grows by one layer; the disk read through
 * the overlay is the same before and after.
 *
 * 1. The overlay is opened for writing (its lock keeps every server and verb out).
 * 2. The blocks it holds (found from the state-map pages that exist: the cost follows the data
 *    it holds, not the disk size) are read through it and sealed into the new layer, whose
 *    parent is the overlay's parent. A partly written block is completed from below; a zeroed
 *    one becomes a zero block.
 * 3. The overlay is atomically replaced by an empty one on the new layer (see reset.ts).
 *
 * A crash before step 3 completes leaves the old overlay, whole (and perhaps the new layer, which
 * nothing refers to yet); after it, the new chain. Both read the same disk.
 */
import * as path from 'node:path';
import { fileSystemOf } from '../io/real-file.js';
import { heldBlocks } from './layers.js';
import { openOverlayForWriting } from './open-overlay.js';
import { type LifecycleOptions, type SealResult, nextLayerName, sealAndReset } from './seal.js';

export async function snapshotOverlay(overlayFile: string, snapshotFile?: string, options: LifecycleOptions = {}): Promise<SealResult> {
  const fs = fileSystemOf(options);
  const image = await openOverlayForWriting(fs, overlayFile, 'snapshot');
  try {
    const out = path.resolve(snapshotFile ?? (await nextLayerName(fs, image.path)));
    const set = await heldBlocks([image.overlay], image.overlay.file.blocks, image.device.blockSize);
    return await sealAndReset(fs, image, set, out, image.layers[0], options.onProgress);
  } finally {
    await image.close();
  }
}
