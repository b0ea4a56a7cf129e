/**
 * Making new overlays: an empty disk (`create`) or a thin clone of a sealed layer or raw base
 * (`clone`). Either way the cost is a header and a sparse file, whatever the disk size.
 */
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';
import { DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, MAX_SUB_BLOCKS, MIN_BLOCK_SIZE, MIN_SUB_BLOCK_SIZE, defaultSubBlocks, isPowerOfTwo } from '../format/constants.js';
import { OverlayFile } from '../format/overlay.js';
import type { FileSystem } from '../io/file.js';
import { fileSystemOf } from '../io/real-file.js';
import { type ImageFormat, detectKind, openImage } from '../image/open.js';

export interface CreateOptions {
  size: number;
  blockSize?: number;
  /** Copy-on-write granularity inside a block; 1 copies up whole blocks. */
  subBlocks?: number;
  fs?: FileSystem;
}

export function checkBlockSize(blockSize: number): void {
  if (!isPowerOfTwo(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE) {
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `block size ${blockSize} must be a power of two from 4K to 2M (the default is 64K).`);
  }
}

function checkSubBlocks(subBlocks: number, blockSize: number): void {
  if (!isPowerOfTwo(subBlocks) || subBlocks > MAX_SUB_BLOCKS || blockSize / subBlocks < MIN_SUB_BLOCK_SIZE) {
    throw new CowdiskError(
      ErrorCode.INVALID_ARGUMENT,
      `${subBlocks} sub-blocks per ${blockSize}-byte block: use a power of two up to ${Math.min(MAX_SUB_BLOCKS, blockSize / MIN_SUB_BLOCK_SIZE)} (sub-blocks of at least 4K).`,
    );
  }
}

/** What `create` and `clone` made. */
export interface CreateResult {
  /** The new overlay (absolute path). */
  path: string;
  size: number;
  blockSize: number;
  subBlocks: number;
}

export interface CloneResult extends CreateResult {
  /** The parent's file (absolute path). */
  parent: string;
  /** Layers in the new chain, the overlay included. */
  depth: number;
}

/** Creates an empty overlay with no parent. */
export async function createImage(file: string, options: CreateOptions): Promise<CreateResult> {
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  checkBlockSize(blockSize);
  const subBlocks = options.subBlocks ?? defaultSubBlocks(blockSize);
  checkSubBlocks(subBlocks, blockSize);
  if (!Number.isSafeInteger(options.size) || options.size <= 0) {
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `size ${options.size} must be a positive number of bytes (e.g. 10G).`);
  }
  await OverlayFile.create(fileSystemOf(options), file, { size: options.size, blockSize, subBlocks, parent: { kind: 'none' } });
  return { path: path.resolve(file), size: options.size, blockSize, subBlocks };
}

export interface CloneOptions {
  /** For a raw parent only: the overlay's block size (a snapshot parent fixes it). */
  blockSize?: number;
  subBlocks?: number;
  /** 'raw': take the parent as a raw disk whatever its bytes say (see detectKind). */
  format?: ImageFormat;
  fs?: FileSystem;
}

/** Creates an empty overlay on top of a snapshot layer or raw base. */
export async function cloneImage(parentFile: string, overlayFile: string, options: CloneOptions = {}): Promise<CloneResult> {
  const fs = fileSystemOf(options);
  const parentAbs = path.resolve(parentFile);
  const overlayAbs = path.resolve(overlayFile);
  const kind = await detectKind(parentAbs, fs, options.format);
  if (kind === 'overlay') {
    throw new CowdiskError(
      ErrorCode.NOT_SEALED,
      `${parentAbs} is a writable overlay and cannot be a parent: its contents may still change. Seal it first with \`cowdisk snapshot ${parentFile}\`, then clone the snapshot.`,
      { path: parentAbs },
    );
  }
  // The whole chain below must open (and verify) before a child is made on it.
  const rawBlockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  if (kind === 'raw') checkBlockSize(rawBlockSize);
  const below = await openImage(parentAbs, { fs, readOnly: true, rawBlockSize, format: options.format });
  const top = below.layers[0];
  const blockSize = below.device.blockSize;
  const depth = below.layers.length + 1;
  const parent = top.reference(overlayAbs);
  await below.close();
  if (options.blockSize !== undefined && options.blockSize !== blockSize) {
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `the block size is fixed by the chain: ${parentAbs} uses ${blockSize}.`);
  }
  const subBlocks = options.subBlocks ?? defaultSubBlocks(blockSize);
  checkSubBlocks(subBlocks, blockSize);
  await OverlayFile.create(fs, overlayAbs, { size: top.size, blockSize, subBlocks, parent });
  return { path: overlayAbs, parent: parentAbs, size: top.size, blockSize, subBlocks, depth };
}
