/**
 * `rebase`: put an overlay on a different parent, like `qemu-img rebase`.
 *
 * Safe mode (the default) keeps the disk read through the overlay identical. Before the parent
 * changes, every sub-block the overlay leaves to its parent (absent) and where the old and the
 * new parent read differently is written into the overlay with what it reads as now (the old
 * parent's bytes). Where the two chains share their lower layers, only blocks held above the
 * shared part can differ, so the cost is those blocks; with nothing shared (two unrelated bases)
 * every block is compared, and the result says so.
 *
 * Then the new parent reference is written to both header slots in turn. The order is what makes
 * a crash harmless: the copies are flushed (data, then map) before the header changes, and they
 * read the same under either parent, so at every instant the overlay reads the same disk on the
 * old chain or on the new one; a torn header write leaves the other slot's reference.
 *
 * `unsafe` only rewrites the reference (nothing is compared or copied, the old parent is not even
 * opened): for a parent that moved, or one the user knows holds the same contents.
 */
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';
import { OverlayFile } from '../format/overlay.js';
import type { FileSystem } from '../io/file.js';
import { fileSystemOf } from '../io/real-file.js';
import { type Image, detectKind, openImage } from '../image/open.js';
import { forEachChunkOfBoth } from './chunks.js';
import { blocksWhereChainsMayDiffer } from './layers.js';
import { openOverlayForWriting } from './open-overlay.js';
import type { LifecycleOptions } from './seal.js';

export interface RebaseOptions extends LifecycleOptions {
  /** Only rewrite the parent reference. */
  unsafe?: boolean;
}

export interface RebaseResult {
  overlay: string;
  oldParent: string | null;
  newParent: string;
  /** Bytes copied into the overlay to keep its contents (0 with unsafe). */
  copiedBytes: number;
  /** Bytes compared between the two parents. */
  comparedBytes: number;
  /** The chains share no layer, so every block was compared. */
  comparedWholeDisk: boolean;
}

export async function rebaseOverlay(overlayFile: string, newParentFile: string, options: RebaseOptions = {}): Promise<RebaseResult> {
  const fs = fileSystemOf(options);
  return options.unsafe ? rebaseUnsafe(fs, overlayFile, newParentFile) : rebaseSafe(fs, overlayFile, newParentFile, options);
}

async function rebaseSafe(fs: FileSystem, overlayFile: string, newParentFile: string, options: LifecycleOptions): Promise<RebaseResult> {
  const image = await openOverlayForWriting(fs, overlayFile, 'rebase');
  try {
    const overlay = image.overlay.file;
    const device = image.device;
    const next = await openNewParent(fs, newParentFile, overlay);
    try {
      const oldLayers = image.layers;
      const newLayers = next.layers;
      const { set, whole } = await blocksWhereChainsMayDiffer(oldLayers, newLayers, device.size, device.blockSize, next.device.blockSize);
      const bs = device.blockSize;
      const sbs = overlay.subBlockSize;
      let copied = 0;
      let compared = 0;
      await forEachChunkOfBoth(
        device,
        next.device,
        set,
        async (first, data, theirs, inside) => {
          const from = first * bs;
          compared += inside;
          // Runs of differing absent sub-blocks, written as the overlay reads them now.
          let runStart = -1;
          const flushRun = async (end: number) => {
            if (runStart === -1) return;
            const stop = Math.min(end, inside);
            if (stop > runStart) {
              await device.write(data.subarray(runStart, stop), from + runStart);
              copied += stop - runStart;
            }
            runStart = -1;
          };
          for (let i = 0; i * bs < data.length; i++) {
            const block = first + i;
            const page = await overlay.map.page(block);
            const held = (page.present(block) | page.zero(block)) >>> 0;
            for (let sub = 0; sub < overlay.header.subBlocks; sub++) {
              const at = i * bs + sub * sbs;
              const differs = (held & (1 << sub)) === 0 && !data.subarray(at, at + sbs).equals(theirs.subarray(at, at + sbs));
              if (differs && runStart === -1) runStart = at;
              else if (!differs) await flushRun(at);
            }
          }
          await flushRun(data.length);
        },
        options.onProgress,
      );
      await device.flush();
      await overlay.writeHeader({ ...overlay.header, parent: newLayers[0].reference(image.path) }, true);
      return { overlay: image.path, oldParent: oldLayers[0]?.path ?? null, newParent: newLayers[0].path, copiedBytes: copied, comparedBytes: compared, comparedWholeDisk: whole };
    } finally {
      await next.close();
    }
  } finally {
    await image.close();
  }
}

async function rebaseUnsafe(fs: FileSystem, overlayFile: string, newParentFile: string): Promise<RebaseResult> {
  const abs = path.resolve(overlayFile);
  if ((await detectKind(abs, fs)) !== 'overlay') {
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `\`cowdisk rebase\` works on a writable overlay; ${abs} is not one.`, { path: abs });
  }
  const overlay = await OverlayFile.open(fs, abs);
  try {
    const next = await openNewParent(fs, newParentFile, overlay);
    try {
      const oldParent = overlay.header.parent.kind === 'none' ? null : path.resolve(path.dirname(abs), overlay.header.parent.path);
      const top = next.layers[0];
      await overlay.writeHeader({ ...overlay.header, parent: top.reference(abs) }, true);
      return { overlay: abs, oldParent, newParent: top.path, copiedBytes: 0, comparedBytes: 0, comparedWholeDisk: false };
    } finally {
      await next.close();
    }
  } finally {
    await overlay.close();
  }
}

/** Opens the chain of the new parent, refusing one that cannot be the overlay's parent. */
async function openNewParent(fs: FileSystem, file: string, overlay: OverlayFile): Promise<Image> {
  const abs = path.resolve(file);
  if ((await detectKind(abs, fs)) === 'overlay') {
    throw new CowdiskError(
      ErrorCode.NOT_SEALED,
      `${abs} is a writable overlay and cannot be a parent: its contents may still change. Seal it first with \`cowdisk snapshot ${file}\`, then rebase onto the snapshot.`,
      { path: abs },
    );
  }
  const next = await openImage(abs, { fs, readOnly: true, rawBlockSize: overlay.header.blockSize });
  const problems: string[] = [];
  const { size, blockSize } = next.device;
  if (size !== overlay.header.size) problems.push(`it presents ${size} bytes where the overlay presents ${overlay.header.size}`);
  if (blockSize !== overlay.header.blockSize) problems.push(`its block size is ${blockSize}, the overlay's ${overlay.header.blockSize}`);
  if (problems.length > 0) {
    await next.close();
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `${abs} cannot be the parent of ${overlay.path}: ${problems.join('; ')}. A chain keeps one size and one block size.`, { path: abs });
  }
  return next;
}
