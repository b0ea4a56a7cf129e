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
import { MAP_ENTRIES_PER_PAGE } from '../format/constants.js';
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
  let runStart = -1;
  let supported = true;
  const punch = async (from: number, to: number) => {
    if (to > from && !(await overlay.file.punchHole(overlay.dataPos(0, from), to - from))) supported = false;
  };
  for (let block = 0; block < overlay.blocks; block++) {
    const page = overlay.map.loaded(block) ?? (await overlay.map.page(block));
    const p = page.present(block % MAP_ENTRIES_PER_PAGE);
    for (let sub = 0; sub < overlay.header.subBlocks; sub++) {
      const at = block * bs + sub * sbs;
      const needed = (p & (1 << sub)) !== 0;
      if (needed && runStart !== -1) {
        await punch(runStart, at);
        runStart = -1;
      } else if (!needed && runStart === -1) {
        runStart = at;
      }
    }
    if (!supported) break;
  }
  if (runStart !== -1 && supported) await punch(runStart, overlay.blocks * bs);
  await overlay.file.sync();
  return { before, after: (await overlay.file.stat()).allocated, supported };
}
