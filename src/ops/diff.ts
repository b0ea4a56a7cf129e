/**
 * `diff`: the byte ranges in which an image reads differently from its parent, or from another
 * image (`against`: usually a layer beneath it, but any image of the same size will do), each
 * with its state: `written` (the image stores data there) or `zeroed` (it reads as zeros because
 * a layer says so: the overlay's zero state, a zero block, trimmed space).
 *
 * What differs is decided by the bytes, not by allocation: a block written with what the parent
 * already held is not a change. Only blocks held above the point where the two chains meet are
 * read (see layers.ts), at 4 KiB granularity, so the cost is the data the upper layers hold.
 * Without a parent the image is compared with an empty disk (zeros).
 *
 * The image is opened read-only, which takes no lock, so `diff` runs while the image is served;
 * it then sees the image as of its last flush.
 */
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';
import type { FileSystem } from '../io/file.js';
import { realFileSystem } from '../io/real-file.js';
import type { BlockDevice, Extent } from '../image/device.js';
import { type Image, openImage } from '../image/open.js';
import { OverlayDevice } from '../image/overlay-device.js';
import { SealedChain } from '../image/sealed-chain.js';
import type { BlockSet } from './block-set.js';
import { type Progress, forEachChunkOfBoth } from './chunks.js';
import { blocksWhereChainsMayDiffer, heldBlocks, layersOf } from './layers.js';

/** Granularity of the comparison: the page size every client writes in. */
export const DIFF_UNIT = 4096;

export type DiffState = 'written' | 'zeroed';

export interface DiffRange {
  offset: number;
  length: number;
  state: DiffState;
}

export interface DiffResult {
  image: string;
  /** The image compared with (its top layer), or null for an empty disk. */
  against: string | null;
  size: number;
  ranges: DiffRange[];
  writtenBytes: number;
  zeroedBytes: number;
  /** Bytes read from each side. */
  comparedBytes: number;
  /** The two share no layer, so the whole disk was compared. */
  comparedWholeDisk: boolean;
}

export interface DiffOptions {
  /** Compare with this image instead of the parent. */
  against?: string;
  rawBlockSize?: number;
  fs?: FileSystem;
  onProgress?: Progress;
}

/** The two sides of a diff, open; `close` releases what `openDiff` opened. */
export interface DiffSides {
  image: Image;
  /** What the image is compared with; null: an empty disk. */
  base: BlockDevice | null;
  basePath: string | null;
  candidates: BlockSet;
  whole: boolean;
  close(): Promise<void>;
}

export async function openDiff(imageFile: string, options: DiffOptions = {}): Promise<DiffSides> {
  const fs = options.fs ?? realFileSystem;
  const image = await openImage(path.resolve(imageFile), { fs, readOnly: true, rawBlockSize: options.rawBlockSize });
  try {
    const layers = layersOf(image);
    const blocks = Math.ceil(image.size / image.blockSize);
    if (options.against === undefined) {
      const candidates = await heldBlocks([layers[0]], blocks, image.blockSize);
      // The parent's device shares the image's open files: closing the image closes it.
      let base: BlockDevice | null = null;
      if (image instanceof OverlayDevice) base = image.parent;
      else if (image instanceof SealedChain && image.layers.length > 1) base = new SealedChain(image.layers.slice(1), image.size, image.blockSize);
      return { image, base, basePath: layers[1]?.path ?? null, candidates, whole: false, close: () => image.close() };
    }
    const other = await openImage(path.resolve(options.against), { fs, readOnly: true, rawBlockSize: image.blockSize });
    try {
      if (other.size !== image.size) {
        throw new CowdiskError(
          ErrorCode.INVALID_ARGUMENT,
          `${other.path} presents ${other.size} bytes and ${image.path} ${image.size}: only disks of the same size can be compared.`,
          { path: other.path },
        );
      }
      const { set, whole } = await blocksWhereChainsMayDiffer(layers, layersOf(other), image.size, image.blockSize, other.blockSize);
      return {
        image,
        base: other,
        basePath: other.path,
        candidates: set,
        whole,
        close: async () => {
          await other.close();
          await image.close();
        },
      };
    } catch (err) {
      await other.close();
      throw err;
    }
  } catch (err) {
    await image.close();
    throw err;
  }
}

/** Compares the two sides over their candidate blocks. */
export async function diffRanges(sides: DiffSides, onProgress?: Progress): Promise<DiffResult> {
  const { image } = sides;
  const ranges: DiffRange[] = [];
  let compared = 0;
  const push = (offset: number, length: number, state: DiffState) => {
    const last = ranges[ranges.length - 1];
    if (last && last.state === state && last.offset + last.length === offset) last.length += length;
    else ranges.push({ offset, length, state });
  };
  await forEachChunkOfBoth(
    image,
    sides.base,
    sides.candidates,
    async (first, data, theirs, inside) => {
      const from = first * image.blockSize;
      compared += inside;
      let extents: Extent[] | undefined;
      let e = 0;
      for (let at = 0; at < inside; at += DIFF_UNIT) {
        const end = Math.min(inside, at + DIFF_UNIT);
        if (data.subarray(at, end).equals(theirs.subarray(at, end))) continue;
        extents ??= await image.extents(from, inside);
        while (extents[e].offset + extents[e].length <= from + at) e++;
        push(from + at, end - at, extents[e].kind === 'data' ? 'written' : 'zeroed');
      }
    },
    onProgress,
  );
  let writtenBytes = 0;
  let zeroedBytes = 0;
  for (const r of ranges) {
    if (r.state === 'written') writtenBytes += r.length;
    else zeroedBytes += r.length;
  }
  return { image: image.path, against: sides.basePath, size: image.size, ranges, writtenBytes, zeroedBytes, comparedBytes: compared, comparedWholeDisk: sides.whole };
}

/** Opens, compares, closes. */
export async function diffImage(imageFile: string, options: DiffOptions = {}): Promise<DiffResult> {
  const sides = await openDiff(imageFile, options);
  try {
    return await diffRanges(sides, options.onProgress);
  } finally {
    await sides.close();
  }
}
