/**
 * `gc`: give back the space an overlay holds for nothing.
 *
 * Two kinds of waste, both invisible to readers:
 * - zeros stored as data: sub-blocks written with zero bytes (a guest zeroing a file, `dd` from
 *   /dev/zero without discard). They become the zero state, which reads the same and stores
 *   nothing (and hides the parent just as stored zeros did);
 * - bytes under sub-blocks the map does not call present: data written before a crash but never
 *   recorded in the map (orphans), or left under a zeroed or trimmed range whose hole could not be
 *   punched. `reclaimSpace` (shared with `check --repair`) punches everything not present.
 *
 * The first pass reads what the overlay holds (the cost of its data); the second walks the state
 * map of the whole disk. The overlay is opened for writing, so `gc` refuses (LOCKED) while a
 * `serve` or `attach` has it. Sealed layers are never modified: they have nothing to collect.
 */
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';
import { fileSystemOf } from '../io/real-file.js';
import { detectKind } from '../image/open.js';
import { reclaimSpace } from './reclaim.js';
import { forEachChunk, isZero } from './chunks.js';
import { heldBlocks } from './layers.js';
import { openOverlayForWriting } from './open-overlay.js';
import type { LifecycleOptions } from './seal.js';

export interface GcResult {
  image: string;
  /** Bytes the overlay file occupied on disk before and after (what `du` says). */
  before: number;
  after: number;
  /** Bytes of stored zeros turned into the zero state. */
  zerosReleased: number;
  /** false when this file system (or a build without the native addon) cannot punch holes. */
  supported: boolean;
}

export async function gcImage(file: string, options: LifecycleOptions = {}): Promise<GcResult> {
  const fs = fileSystemOf(options);
  const abs = path.resolve(file);
  const kind = await detectKind(abs, fs);
  if (kind !== 'overlay') {
    throw new CowdiskError(
      ErrorCode.INVALID_ARGUMENT,
      `${abs} is a ${kind === 'snapshot' ? 'sealed snapshot layer' : 'raw image'}, which cowdisk never modifies: there is nothing to collect. \`cowdisk gc\` works on overlays.`,
      { path: abs },
    );
  }
  const image = await openOverlayForWriting(fs, abs, 'gc');
  try {
    const overlay = image.overlay.file;
    const device = image.device;
    const before = (await overlay.file.stat()).allocated;
    const bs = device.blockSize;
    const sbs = overlay.subBlockSize;
    const set = await heldBlocks([image.overlay], overlay.blocks, bs);
    const zeroRuns: Array<[number, number]> = [];
    await forEachChunk(
      device,
      set,
      async (first, data) => {
        for (let i = 0; i * bs < data.length; i++) {
          const block = first + i;
          const present = (await overlay.map.page(block)).present(block);
          for (let sub = 0; sub < overlay.header.subBlocks; sub++) {
            const at = i * bs + sub * sbs;
            if ((present & (1 << sub)) === 0 || !isZero(data.subarray(at, at + sbs))) continue;
            const offset = first * bs + at;
            const last = zeroRuns[zeroRuns.length - 1];
            if (last && last[0] + last[1] === offset) last[1] += sbs;
            else zeroRuns.push([offset, sbs]);
          }
        }
      },
      options.onProgress,
    );
    let zerosReleased = 0;
    for (const [offset, length] of zeroRuns) {
      // The last sub-block may reach past the end of the disk.
      const inside = Math.min(length, device.size - offset);
      await device.zero(offset, inside);
      zerosReleased += inside;
    }
    await device.flush();
    const { supported } = await reclaimSpace(overlay);
    return { image: abs, before, after: (await overlay.file.stat()).allocated, zerosReleased, supported };
  } finally {
    await image.close();
  }
}
