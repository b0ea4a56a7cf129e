/**
 * Where the benchmark's writes go, so that a first write really is one.
 *
 * A first write is a write to a block the overlay does not hold yet: it has to change the block's
 * state, and it may have to copy the rest of a sub-block up from the parent. A rewrite of the
 * same bytes is a plain pwrite in place. To measure each cleanly, every measured write gets a
 * block of its own: write i goes to `i * stride + offsetInBlock`, where the stride is a whole
 * number of blocks (one, unless the I/O is larger than a block) and the offset inside the block
 * is a fixed 4 KiB (0 when the I/O would not fit after it). The first pass therefore never
 * touches a block twice, which is why the count may not exceed the blocks the disk has: wrapping
 * around would turn the tail of the first pass into rewrites and report them as first writes.
 *
 * Before any figure is taken, WARMUP_REQUESTS unmeasured requests warm both processes up:
 * measured here, a fresh server's first ~2000 requests take two to four times as long as later
 * ones, while V8 compiles the request path, so a short warm-up would charge the JIT to the first
 * writes (which come first) and flatter the rewrites. The warm-up goes to blocks of its own at the
 * end of the disk, past the measured ones (up to WARMUP_BLOCKS): a first write to each, then
 * rewrites round them. A disk with no block to spare is warmed up with reads of the measured
 * offsets instead, which change nothing.
 *
 * What a first write costs besides its own bytes depends on the overlay's sub-blocks: the part of
 * each sub-block it touches but does not cover is read from the parent and written with it.
 * `copyUpBytes` says how much that is, per first write, for this geometry.
 */
import { CowdiskError, ErrorCode } from '../errors.js';
import { Limit } from '../nbd/constants.js';

export const DEFAULT_COUNT = 2000;
export const WARMUP_REQUESTS = 3000;
export const WARMUP_BLOCKS = 256;
/** A request's bytes must be a multiple of this (the sector size every client can use). */
export const IO_ALIGNMENT = 512;
const IN_BLOCK = 4096;

export interface DiskGeometry {
  size: number;
  blockSize: number;
  /** The copy-on-write unit inside a block (the block size when there are no sub-blocks). */
  subBlockSize: number;
}

export interface WritePlan {
  ioSize: number;
  /** Measured writes per pass. */
  count: number;
  /** Blocks, apart from the measured ones, that take the warm-up writes (0: the warm-up reads). */
  warmupBlocks: number;
  /** Unmeasured requests before the first measured one. */
  warmupRequests: number;
  /** Byte offset of each write inside its block. */
  offsetInBlock: number;
  /** Bytes from one write's block to the next (a whole number of blocks). */
  stride: number;
  /** How many writes of one block each the disk has room for. */
  slots: number;
  /** Bytes each first write reads from the parent to fill the sub-blocks it only partly covers. */
  copyUpBytes: number;
}

/** Plans the writes, or refuses an I/O size or count this disk cannot take with a message saying what fits. */
export function planWrites(disk: DiskGeometry, ioSize: number, count?: number): WritePlan {
  if (!Number.isSafeInteger(ioSize) || ioSize < IO_ALIGNMENT || ioSize % IO_ALIGNMENT !== 0 || ioSize > Limit.MAX_BLOCK) {
    throw new CowdiskError(
      ErrorCode.INVALID_ARGUMENT,
      `--block-size-io ${ioSize} must be a multiple of ${IO_ALIGNMENT} bytes from 512 to 32M (one NBD request), e.g. 4K.`,
    );
  }
  const offsetInBlock = IN_BLOCK + ioSize <= disk.blockSize ? IN_BLOCK : 0;
  const stride = Math.ceil((offsetInBlock + ioSize) / disk.blockSize) * disk.blockSize;
  const slots = Math.floor(disk.size / stride);
  const where = `one per ${stride === disk.blockSize ? `${disk.blockSize}-byte block` : `${stride} bytes`} of a ${disk.size}-byte disk`;
  if (slots === 0) {
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `--block-size-io ${ioSize} does not fit even once, ${where}; use a smaller --block-size-io.`);
  }
  if (count !== undefined && count > slots) {
    throw new CowdiskError(
      ErrorCode.INVALID_ARGUMENT,
      `--count ${count} is more first writes than there are blocks for (${slots}, ${where}); use --count ${slots} or less, so that no first write lands in a block already written.`,
    );
  }
  const measured = count ?? Math.min(DEFAULT_COUNT, slots);
  const sub = disk.subBlockSize;
  const span = Math.ceil((offsetInBlock + ioSize) / sub) * sub - Math.floor(offsetInBlock / sub) * sub;
  return {
    ioSize,
    count: measured,
    warmupBlocks: Math.min(WARMUP_BLOCKS, slots - measured),
    warmupRequests: WARMUP_REQUESTS,
    offsetInBlock,
    stride,
    slots,
    copyUpBytes: span - ioSize,
  };
}

/** The offset of measured write i (0 <= i < count). */
export function measuredOffset(plan: WritePlan, i: number): number {
  return i * plan.stride + plan.offsetInBlock;
}

/** The offset of warm-up block i (0 <= i < warmupBlocks): the last slots of the disk. */
export function warmupOffset(plan: WritePlan, i: number): number {
  return (plan.slots - plan.warmupBlocks + i) * plan.stride + plan.offsetInBlock;
}
