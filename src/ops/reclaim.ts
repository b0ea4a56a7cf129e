/**
 * Giving space back: in an overlay, only present sub-blocks need their bytes. Data under zero or
 * absent sub-blocks (left by a trim whose hole could not be punched, or written before a crash
 * but never recorded in the map) is punched out. Punching a range that is already a hole costs
 * next to nothing, so absent runs are punched whole, without first asking where data is.
 *
 * The caller holds the overlay open for writing (the lock) with no request in flight: a write
 * that needs no fill puts its bytes down before the map says present, and would lose them to a
 * punch made in between. Nothing the map calls present is touched.
 */
import type { OverlayFile } from '../format/overlay.js';

export interface ReclaimResult {
  /** Bytes the file occupies on disk before and after. */
  before: number;
  after: number;
  /** false when the file system (or a build without the native addon) cannot punch holes. */
  supported: boolean;
}

export async function reclaimSpace(overlay: OverlayFile): Promise<ReclaimResult> {
  const before = (await overlay.file.stat()).allocated;
  const bs = overlay.header.blockSize;
  const sbs = overlay.subBlockSize;
  const full = overlay.map.fullMask;
  // The current run of bytes (disk offsets) nothing present needs, or -1.
  let runStart = -1;
  let supported = true;
  const keep = async (at: number) => {
    if (runStart !== -1 && supported && at > runStart) {
      if (!(await overlay.punchData(runStart, at - runStart))) supported = false;
    }
    runStart = -1;
  };
  const drop = (at: number) => {
    if (runStart === -1) runStart = at;
  };
  await overlay.map.visit(async (page, first, count) => {
    if (!page) {
      drop(first * bs);
      return;
    }
    for (let block = first; block < first + count; block++) {
      const blockStart = block * bs;
      const p = page.present(block);
      if (p === 0) drop(blockStart);
      else if (p === full) await keep(blockStart);
      else {
        for (let sub = 0; sub < overlay.header.subBlocks; sub++) {
          if (p & (1 << sub)) await keep(blockStart + sub * sbs);
          else drop(blockStart + sub * sbs);
        }
      }
    }
  });
  await keep(overlay.blocks * bs);
  await overlay.file.sync();
  return { before, after: (await overlay.file.stat()).allocated, supported };
}
