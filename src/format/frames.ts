/**
 * The frames of a version 2 sealed layer: every block is cut into 4 KiB frames, each a zero
 * frame (nothing stored), an lz4 block (when that saves at least 1/16 of it) or raw bytes, so a
 * 4 KiB read decodes one frame and never the whole block. A block whose frames are all raw is
 * stored as it is (and aligned, so a read of it is one pread and no decode).
 *
 * Two codecs write and read the same format:
 * - native (native/src/frames.cc): a whole batch of blocks hashed and compressed in one job on
 *   the thread pool, and a frame decoded straight into the caller's buffer. Measured on this
 *   2-core machine: lz4-napi's asynchronous compress called per 4 KiB frame spends ~3.5 s of CPU
 *   per GiB on thread-pool hops, its compressSync leaks (~5 KiB a call) and takes 19 µs on a
 *   random frame, its uncompressSync allocates a Buffer and costs 3-5 µs per frame; liblz4 does
 *   a random frame in ~1.4 µs and decodes one in ~1 µs.
 * - portable, for a build without the addon: lz4-napi (frames compressed concurrently on the
 *   thread pool) and node:crypto. Slower (150-270 MiB/s importing 3/4 random data here, against
 *   400-530 with the addon), same files: lz4 streams may differ byte for byte between the two,
 *   which nothing depends on (the digests are of the uncompressed bytes).
 */
import { createHash } from 'node:crypto';
import { compress, uncompressSync } from 'lz4-napi';
import { native } from '../native.js';
import { DIGEST_SIZE, FRAME_MAX_LZ4, FRAME_SIZE, FrameCode, LZ4_SIZE_PREFIX, framesPerBlock } from './constants.js';

/** What sealing a batch of blocks gives, per block in batch order. */
export interface SealedBatch {
  /** Bytes stored: the block size for a block stored raw (its bytes are the caller's, not in `packed`). */
  readonly lengths: Uint32Array;
  /** framesPerBlock codes per block (FrameCode; an lz4 frame's code is its length). */
  readonly codes: Uint16Array;
  /** The SHA-256 of each block, DIGEST_SIZE bytes each. */
  readonly digests: Buffer;
  /** The stored frames of every block not stored raw, back to back in batch order. */
  readonly packed: Buffer;
}

export interface FrameCodec {
  readonly name: 'native' | 'portable';
  /** Seals `count` whole blocks laid end to end in `data` (which must not change until this settles). */
  seal(data: Buffer, count: number, blockSize: number): Promise<SealedBatch>;
  /** Decodes the lz4 frame `src` into `dst` (FRAME_SIZE bytes); false unless it decodes to exactly that. */
  decode(src: Buffer, dst: Buffer): boolean;
}

/** Whether block `i` of a batch is stored raw: every frame raw, nothing of it in `packed`. */
export function storedRaw(batch: SealedBatch, i: number, blockSize: number): boolean {
  return batch.lengths[i] === blockSize;
}

function batchArrays(count: number, blockSize: number) {
  return {
    lengths: new Uint32Array(count),
    codes: new Uint16Array(count * framesPerBlock(blockSize)),
    digests: Buffer.allocUnsafe(count * DIGEST_SIZE),
  };
}

const ZERO_FRAME = Buffer.alloc(FRAME_SIZE);

export const portableCodec: FrameCodec = {
  name: 'portable',
  async seal(data, count, blockSize) {
    const frames = framesPerBlock(blockSize);
    const out = batchArrays(count, blockSize);
    const compressed: Array<Promise<Buffer> | null> = [];
    for (let b = 0; b < count; b++) {
      const block = data.subarray(b * blockSize, (b + 1) * blockSize);
      createHash('sha256').update(block).digest().copy(out.digests, b * DIGEST_SIZE);
      for (let f = 0; f < frames; f++) {
        const frame = block.subarray(f * FRAME_SIZE, (f + 1) * FRAME_SIZE);
        compressed.push(frame.equals(ZERO_FRAME) ? null : compress(frame));
      }
    }
    const results = await Promise.all(compressed);
    const pieces: Buffer[] = [];
    for (let b = 0; b < count; b++) {
      const first = pieces.length;
      let stored = 0;
      let allRaw = true;
      for (let f = 0; f < frames; f++) {
        const i = b * frames + f;
        const lz4 = results[i];
        const frame = data.subarray(i * FRAME_SIZE, (i + 1) * FRAME_SIZE);
        // lz4-napi prefixes the uncompressed size; a frame's is always FRAME_SIZE, so it is not stored.
        const body = lz4 && lz4.length - LZ4_SIZE_PREFIX <= FRAME_MAX_LZ4 ? lz4.subarray(LZ4_SIZE_PREFIX) : null;
        const code = lz4 === null ? FrameCode.ZERO : body ? body.length : FrameCode.RAW;
        out.codes[i] = code;
        if (code !== FrameCode.RAW) allRaw = false;
        if (code === FrameCode.ZERO) continue;
        pieces.push(body ?? frame);
        stored += code;
      }
      if (allRaw) pieces.length = first;
      out.lengths[b] = allRaw ? blockSize : stored;
    }
    return { ...out, packed: Buffer.concat(pieces) };
  },
  decode(src, dst) {
    const prefixed = Buffer.allocUnsafe(LZ4_SIZE_PREFIX + src.length);
    prefixed.writeUInt32LE(FRAME_SIZE, 0);
    src.copy(prefixed, LZ4_SIZE_PREFIX);
    let out: Buffer;
    try {
      out = uncompressSync(prefixed);
    } catch {
      return false;
    }
    if (out.length !== FRAME_SIZE) return false;
    out.copy(dst);
    return true;
  },
};

/** The addon's codec, or null when the addon is not built (or predates format version 2). */
export function nativeCodec(): FrameCodec | null {
  const binding = native();
  const seal = binding?.sealFrames;
  const decode = binding?.decodeFrame;
  if (!seal || !decode) return null;
  return {
    name: 'native',
    async seal(data, count, blockSize) {
      const out = batchArrays(count, blockSize);
      const packed = Buffer.allocUnsafe(count * blockSize);
      const bytes = await seal.call(binding, data, count, blockSize, packed, out.codes, out.lengths, out.digests);
      return { ...out, packed: packed.subarray(0, bytes) };
    },
    decode(src, dst) {
      return decode.call(binding, src, dst) === FRAME_SIZE;
    },
  };
}

let chosen: FrameCodec | undefined;

/** The codec every reader and writer uses: the addon's when it is there. */
export function frameCodec(): FrameCodec {
  chosen ??= nativeCodec() ?? portableCodec;
  return chosen;
}
