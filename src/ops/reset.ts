/**
 * Re-pointing an overlay at a new sealed layer, emptied: the last step of `snapshot` and `commit`.
 *
 * The switch must be atomic: at any instant of a crash the overlay file is either the old one
 * (old data on the old parent) or the new one (empty, on the new layer that now holds that data),
 * and both read the same disk. Emptying the old file in place cannot be atomic (its map pages and
 * data would be cleared one by one), so a fresh empty overlay is made under a temporary name
 * beside it (whole and synced before it gets that name, see OverlayFile.create), renamed over the
 * old one, and the directory synced; it keeps the old file's permission bits. Whoever still has the
 * old file open (a read-only reader) keeps reading the old inode, which stays a valid view of the
 * same disk until it is closed.
 *
 * The caller holds the old overlay open for writing (its lock keeps every other writer out) and
 * closes it afterwards; its handle then refers to the replaced file, which nothing else reaches.
 */
import type { ParentRef } from '../format/header.js';
import { OverlayFile } from '../format/overlay.js';
import type { FileSystem } from '../io/file.js';

export async function resetOverlay(fs: FileSystem, overlay: OverlayFile, parent: ParentRef): Promise<void> {
  const { size, blockSize, subBlocks } = overlay.header;
  // The new file takes the old one's permissions: a private (0600) disk stays private.
  const { mode } = await fs.stat(overlay.path);
  await OverlayFile.create(fs, overlay.path, { size, blockSize, subBlocks, parent, mode }, { replace: true, tag: 'next' });
}
