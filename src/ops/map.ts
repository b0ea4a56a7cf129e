/**
 * Where every byte of a disk comes from (`cowdisk map`, like `qemu-img map`): the disk as
 * consecutive extents, each with its kind (data, zero, hole) and the layer that serves it.
 *
 * A device's `extents` answers for any range, but a 1 TiB disk asked in one call would build its
 * answer block by block in memory. The disk is walked in windows instead and the extents are
 * handed out as they are found, neighbours with the same kind and layer joined across windows,
 * so the output is the same as one call would give and memory stays bounded.
 */
import { continues, type BlockDevice, type Extent } from '../image/device.js';

export interface MappedExtent extends Extent {
  /** The serving layer's file, or null for a hole no layer answers for (layer -1). */
  path: string | null;
}

/** Blocks asked per `extents` call. */
const WINDOW_BLOCKS = 64 * 1024;

export async function* mapExtents(device: BlockDevice): AsyncGenerator<MappedExtent> {
  const window = WINDOW_BLOCKS * device.blockSize;
  let pending: MappedExtent | undefined;
  for (let at = 0; at < device.size; at += window) {
    for (const e of await device.extents(at, Math.min(window, device.size - at))) {
      if (continues(pending, e)) {
        pending.length += e.length;
        continue;
      }
      if (pending) yield pending;
      pending = { offset: e.offset, length: e.length, kind: e.kind, layer: e.layer, path: e.layer === -1 ? null : device.chain[e.layer].path };
    }
  }
  if (pending) yield pending;
}
