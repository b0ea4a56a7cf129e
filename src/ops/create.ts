/**
 * Making new overlays: an empty disk (`create`) or a thin clone of a sealed layer or raw base
 * (`clone`). Either way the cost is a header and a sparse file, whatever the disk size.
 */
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';
import { DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, MAX_SUB_BLOCKS, MIN_BLOCK_SIZE, MIN_SUB_BLOCK_SIZE, defaultSubBlocks, isPowerOfTwo } from '../format/constants.js';
import type { ParentRef } from '../format/header.js';
import { OverlayFile } from '../format/overlay.js';
import { RawFile } from '../format/raw.js';
import { SnapshotFile } from '../format/snapshot.js';
import type { FileSystem } from '../io/file.js';
import { realFileSystem } from '../io/real-file.js';
import { detectKind, openImage } from '../image/open.js';

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

/** Creates an empty overlay with no parent. */
export async function createImage(file: string, options: CreateOptions): Promise<void> {
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  checkBlockSize(blockSize);
  const subBlocks = options.subBlocks ?? defaultSubBlocks(blockSize);
  checkSubBlocks(subBlocks, blockSize);
  if (!Number.isSafeInteger(options.size) || options.size <= 0) {
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `size ${options.size} must be a positive number of bytes (e.g. 10G).`);
  }
  await OverlayFile.create(options.fs ?? realFileSystem, file, { size: options.size, blockSize, subBlocks, parent: { kind: 'none' } });
}

export interface CloneOptions {
  /** For a raw parent only: the overlay's block size (a snapshot parent fixes it). */
  blockSize?: number;
  subBlocks?: number;
  fs?: FileSystem;
}

/** Creates an empty overlay on top of a snapshot layer or raw base. */
export async function cloneImage(parentFile: string, overlayFile: string, options: CloneOptions = {}): Promise<void> {
  const fs = options.fs ?? realFileSystem;
  const parentAbs = path.resolve(parentFile);
  const overlayAbs = path.resolve(overlayFile);
  const kind = await detectKind(parentAbs, fs);
  if (kind === 'overlay') {
    throw new CowdiskError(
      ErrorCode.NOT_SEALED,
      `${parentAbs} is a writable overlay and cannot be a parent: its contents may still change. Seal it first with \`cowdisk snapshot ${parentFile}\`, then clone the snapshot.`,
      { path: parentAbs },
    );
  }
  const relative = path.relative(path.dirname(overlayAbs), parentAbs);
  let parent: ParentRef;
  let blockSize: number;
  if (kind === 'snapshot') {
    const snap = await SnapshotFile.open(fs, parentAbs);
    await snap.close();
    if (options.blockSize !== undefined && options.blockSize !== snap.blockSize) {
      throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `the block size is fixed by the chain: ${parentAbs} uses ${snap.blockSize}.`);
    }
    blockSize = snap.blockSize;
    parent = { kind: 'snapshot', path: relative, size: snap.header.size, digest: snap.header.layerDigest };
  } else {
    blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
    checkBlockSize(blockSize);
    const raw = await RawFile.open(fs, parentAbs);
    await raw.close();
    if (raw.size === 0) throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `${parentAbs} is empty; there is nothing to clone.`, { path: parentAbs });
    parent = { kind: 'raw', path: relative, ...raw.identity };
  }
  const subBlocks = options.subBlocks ?? defaultSubBlocks(blockSize);
  checkSubBlocks(subBlocks, blockSize);
  // The whole chain below must open (and verify) before a child is made on it.
  const check = await openImage(parentAbs, { fs, readOnly: true, rawBlockSize: blockSize });
  await check.close();
  await OverlayFile.create(fs, overlayAbs, { size: parent.size, blockSize, subBlocks, parent });
}
