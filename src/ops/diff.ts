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
import { fileSystemOf } from '../io/real-file.js';
import type { BlockDevice, Extent } from '../image/device.js';
import { type Image, type ImageFormat, allLayers, openImage } from '../image/open.js';
import { SealedChain } from '../image/sealed-chain.js';
import type { BlockSet } from './block-set.js';
import { type Progress, forEachChunkOfBoth } from './chunks.js';
import { blocksWhereChainsMayDiffer, heldBlocks } from './layers.js';

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
  /** 'raw': take the image (not the one compared with) as a raw disk whatever its bytes say. */
  format?: ImageFormat;
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
  const fs = fileSystemOf(options);
  const image = await openImage(path.resolve(imageFile), { fs, readOnly: true, rawBlockSize: options.rawBlockSize, format: options.format });
  try {
    const layers = allLayers(image);
    const { size, blockSize } = image.device;
    const blocks = Math.ceil(size / blockSize);
    if (options.against === undefined) {
      const candidates = await heldBlocks([layers[0]], blocks, blockSize);
      // The parent's device shares the image's open files: closing the image closes it.
      const below = image.overlay ? image.layers : image.layers.slice(1);
      const base = image.overlay ? image.overlay.parent : below.length > 0 ? new SealedChain(below, size, blockSize) : null;
      return { image, base, basePath: layers[1]?.path ?? null, candidates, whole: false, close: () => image.close() };
    }
    const other = await openImage(path.resolve(options.against), { fs, readOnly: true, rawBlockSize: blockSize });
    try {
      if (other.device.size !== size) {
        throw new CowdiskError(
          ErrorCode.INVALID_ARGUMENT,
          `${other.path} presents ${other.device.size} bytes and ${image.path} ${size}: only disks of the same size can be compared.`,
          { path: other.path },
        );
      }
      const { set, whole } = await blocksWhereChainsMayDiffer(layers, allLayers(other), size, blockSize, other.device.blockSize);
      return {
        image,
        base: other.device,
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
  const device = image.device;
  const ranges: DiffRange[] = [];
  let compared = 0;
  const push = (offset: number, length: number, state: DiffState) => {
    const last = ranges[ranges.length - 1];
    if (last && last.state === state && last.offset + last.length === offset) last.length += length;
    else ranges.push({ offset, length, state });
  };
  await forEachChunkOfBoth(
    device,
    sides.base,
    sides.candidates,
    async (first, data, theirs, inside) => {
      const from = first * device.blockSize;
      compared += inside;
      let extents: Extent[] | undefined;
      let e = 0;
      for (let at = 0; at < inside; at += DIFF_UNIT) {
        const end = Math.min(inside, at + DIFF_UNIT);
        if (data.subarray(at, end).equals(theirs.subarray(at, end))) continue;
        extents ??= await device.extents(from, inside);
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
  return { image: image.path, against: sides.basePath, size: device.size, ranges, writtenBytes, zeroedBytes, comparedBytes: compared, comparedWholeDisk: sides.whole };
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
