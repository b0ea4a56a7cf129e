/**
 * `flatten`: one self-contained layer, with no parent, that reads exactly as the image does.
 *
 * By default the result is a sealed snapshot layer: it can be cloned, shared, verified, and its
 * digest names its contents, which is what a flattened image is usually for (shipping a golden
 * image, cutting a long chain short). `overlay` gives a writable overlay instead, for a disk that
 * should keep living on its own, detached from its chain. Either way only blocks some layer holds
 * are read (the cost is the chain's data, not the disk size), and blocks that read as zeros are
 * left out: with no parent, absent reads as zeros.
 *
 * The image is only read, so the source may be anything `openImage` opens. An overlay that a
 * `serve` or `attach` has open for writing is refused: its contents change under the copy, and
 * what it has not flushed is not in the file yet. Taking a shared lock keeps writers out while
 * the copy runs (and costs nothing to readers).
 *
 * The output appears whole or not at all: written under a temporary name, synced, renamed.
 */
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';
import { defaultSubBlocks } from '../format/constants.js';
import { OverlayFile } from '../format/overlay.js';
import type { FileSystem } from '../io/file.js';
import { NewFile } from '../io/new-file.js';
import type { BlockDevice } from '../image/device.js';
import { fileSystemOf } from '../io/real-file.js';
import { type Image, type ImageFormat, allLayers, openImage } from '../image/open.js';
import { forEachChunk, isZero } from './chunks.js';
import { heldBlocks } from './layers.js';
import { sealBlocks } from './seal.js';
import type { LifecycleOptions } from './seal.js';

export interface FlattenOptions extends LifecycleOptions {
  /** Produce a writable overlay instead of a sealed layer. */
  overlay?: boolean;
  /** Block size for a bare raw image (it has none of its own). */
  rawBlockSize?: number;
  /** 'raw': take the image as a raw disk whatever its bytes say (see detectKind). */
  format?: ImageFormat;
}

export interface FlattenResult {
  image: string;
  out: string;
  kind: 'snapshot' | 'overlay';
  /** The sealed layer's digest (null for an overlay). */
  digest: string | null;
  /** Layers that were flattened. */
  depth: number;
  /** Blocks the result holds. */
  blocks: number;
}

export async function flattenImage(imageFile: string, outFile: string, options: FlattenOptions = {}): Promise<FlattenResult> {
  const fs = fileSystemOf(options);
  const out = path.resolve(outFile);
  if (await fs.exists(out)) throw new CowdiskError(ErrorCode.EXISTS, `${out} already exists; choose another name or remove it first.`, { path: out });
  const image = await openForCopy(fs, imageFile, options.rawBlockSize, options.format);
  try {
    const layers = allLayers(image);
    const { size, blockSize } = image.device;
    const set = await heldBlocks(layers, Math.ceil(size / blockSize), blockSize);
    const base = { image: image.path, out, depth: layers.length };
    if (!options.overlay) {
      const { header, entries } = await sealBlocks(image.device, set, out, { kind: 'none' }, fs, options.onProgress);
      return { ...base, kind: 'snapshot', digest: `sha256:${header.layerDigest.toString('hex')}`, blocks: entries };
    }
    const subBlocks = image.overlay ? image.overlay.file.header.subBlocks : defaultSubBlocks(blockSize);
    const blocks = await copyToOverlay(fs, image.device, set, out, subBlocks, options);
    return { ...base, kind: 'overlay', digest: null, blocks };
  } finally {
    await image.close();
  }
}

/** Opens an image to copy it whole: read-only, with writers kept out for as long as it is open. */
async function openForCopy(fs: FileSystem, file: string, rawBlockSize?: number, format?: ImageFormat): Promise<Image> {
  const image = await openImage(path.resolve(file), { fs, readOnly: true, rawBlockSize, format });
  if (image.overlay && (await image.overlay.file.file.tryLock(false)) === false) {
    await image.close();
    throw new CowdiskError(
      ErrorCode.LOCKED,
      `${image.path} is open for writing by another process (a \`cowdisk serve\` or \`attach\`): a copy would miss what it has not flushed and catch its writes half-way. Stop it first, or \`cowdisk snapshot\` it after stopping and copy the snapshot.`,
      { path: image.path },
    );
  }
  return image;
}

async function copyToOverlay(fs: FileSystem, image: BlockDevice, set: Parameters<typeof forEachChunk>[1], out: string, subBlocks: number, options: LifecycleOptions): Promise<number> {
  const made = await NewFile.create(fs, out, { tag: 'flatten' });
  let blocks = 0;
  try {
    await OverlayFile.format(made.file, { size: image.size, blockSize: image.blockSize, subBlocks, parent: { kind: 'none' } });
    const target = await openImage(made.tmpPath, { fs });
    try {
      const bs = image.blockSize;
      await forEachChunk(
        image,
        set,
        async (first, data) => {
          for (let i = 0; i * bs < data.length; i++) {
            const at = (first + i) * bs;
            const block = data.subarray(i * bs, i * bs + Math.min(bs, image.size - at));
            if (isZero(block)) continue;
            await target.device.write(block, at);
            blocks++;
          }
        },
        options.onProgress,
      );
    } catch (err) {
      await target.close().catch(() => undefined);
      throw err;
    }
    // Closing flushes what is left: it can fail too (a full disk), and must not leave the copy.
    await target.close();
  } catch (err) {
    await made.discard();
    throw err;
  }
  await made.publish();
  return blocks;
}
