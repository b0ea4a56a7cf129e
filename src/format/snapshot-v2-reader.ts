/**
 * Reading a sealed snapshot layer, format version 2 (docs/FORMAT.md): the same blocks, kinds and
 * layer digest as version 1, stored so that a read of 4 KiB decodes 4 KiB.
 *
 * Layout: a 4 KiB header; the directory (one 48-byte entry per table page, its size fixed by the
 * geometry); the stored blocks; the table pages. A stored block is whole frames of 4 KiB, each a
 * zero frame, an lz4 block or raw bytes, packed; its table entry holds a u16 code per frame (its
 * stored length, 0 for zero, 4096 for raw) from which a frame's place is a prefix sum. A block
 * whose frames are all raw is stored as it is, aligned (one pread, no decode).
 *
 * Integrity is a chain of SHA-256: the header (itself under its CRC) holds the directory's, each
 * directory entry its table page's, each table entry its uncompressed block's. Opening reads the
 * header and the directory, checked; a table page is read, checked and decoded on first use and
 * kept in a cache bounded by bytes. Reads trust stored data as version 1 does (`check` and the
 * range-access checks hash it); every offset, length and frame code is bounds-checked when its
 * page is decoded, and a frame that does not decode to exactly 4 KiB is CORRUPT.
 *
 * What every version shares (the walks over directory and pages) is sealed-table-file.ts; this
 * file says how version 2 lays out and checks its directory and pages, and reads frames.
 */
import { createHash } from 'node:crypto';
import { CowdiskError, ErrorCode } from '../errors.js';
import type { BlockFile, FileSystem } from '../io/file.js';
import {
  BlockKind,
  DIGEST_SIZE,
  FRAME_SIZE,
  FrameCode,
  HEADER_SIZE,
  MAGIC_LENGTH,
  SNAPSHOT_MAGIC,
  TABLE_ENTRIES_PER_PAGE,
  TABLE_PAGE_HEADER,
  TablePageField,
  V2DirEntryField,
  V2TableEntryField,
  V2_DIR_ENTRY_SIZE,
  V2_TABLE_PAGE_MAGIC,
  framesPerBlock,
  v2DataOffset,
  v2TableEntrySize,
  v2TablePageSize,
} from './constants.js';
import { type FrameCodec, frameCodec } from './frames.js';
import { type SnapshotV2HeaderFields, decodeSnapshotV2Header } from './header.js';
import type { FileRange, SealedFile } from './sealed-file.js';
import { type PageKind, SealedTableFile, type TablePageView } from './sealed-table-file.js';

/** One decoded table page: kinds, offsets, stored lengths and frame codes of up to 1024 blocks. */
export interface V2TablePage extends TablePageView {
  /** framesPerBlock codes per block. */
  readonly codes: Uint16Array;
}

/** Decoded table pages kept per layer, in bytes: 45 KiB a page at 64 KiB blocks, ~1400 pages. */
const MAX_CACHED_TABLE_BYTES = 64 * 1024 * 1024;
const MIN_CACHED_PAGES = 16;
const FRAME_SHIFT = Math.log2(FRAME_SIZE);
/** Block-sized buffers kept for reuse (a sequential reader has a few reads in flight). */
const MAX_SPARE_BLOCKS = 8;

export class SnapshotV2File extends SealedTableFile<V2TablePage> implements SealedFile {
  readonly version = 2;
  declare readonly header: SnapshotV2HeaderFields;
  private readonly frames: number;
  private readonly entrySize: number;
  private readonly pageSize: number;
  private readonly dataOffset: number;
  /** Stored frames on their way to readCompressedNow's decode (nothing else runs meanwhile). */
  private nowStored: Buffer | undefined;
  /** Where a frame read in part is decoded (decoding is synchronous: one buffer serves every read). */
  private readonly scratch = Buffer.alloc(FRAME_SIZE);
  /**
   * Buffers for stored frames between their pread and their decode, reused: as many as reads have
   * been in flight at once (allocating one per read cost ~1 µs of a 4 KiB read, and ~3 µs of a
   * block's frames read at once, measured). Frame-sized ones for reads within a frame, a few of a
   * block's size for the others.
   */
  private readonly spare: Buffer[] = [];
  private readonly spareBlocks: Buffer[] = [];

  private constructor(
    file: BlockFile,
    header: SnapshotV2HeaderFields,
    private readonly directory: Buffer,
    private readonly codec: FrameCodec,
  ) {
    const frames = framesPerBlock(header.blockSize);
    const decodedBytes = TABLE_ENTRIES_PER_PAGE * (1 + 8 + 4 + 2 * frames);
    super(file, header, Math.max(MIN_CACHED_PAGES, Math.floor(MAX_CACHED_TABLE_BYTES / decodedBytes)));
    this.frames = frames;
    this.entrySize = v2TableEntrySize(header.blockSize);
    this.pageSize = v2TablePageSize(header.blockSize);
    this.dataOffset = v2DataOffset(header.dirPages);
  }

  static async open(fs: FileSystem, file: string, codec: FrameCodec = frameCodec()): Promise<SnapshotV2File> {
    const handle = await fs.open(file, { readOnly: true });
    try {
      const fileSize = await handle.size();
      const head = Buffer.alloc(HEADER_SIZE);
      const n = await handle.read(head, 0);
      if (n < HEADER_SIZE && n >= MAGIC_LENGTH && head.subarray(0, MAGIC_LENGTH).equals(SNAPSHOT_MAGIC)) {
        throw new CowdiskError(ErrorCode.TRUNCATED, `${handle.path} is truncated: ${n} bytes, shorter than its header. Restore it from a copy.`, { path: handle.path });
      }
      const header = decodeSnapshotV2Header(head, handle.path, fileSize);
      // The header checked that the file is as long as it says, so the directory lies inside it.
      const directory = Buffer.alloc(header.dirPages * V2_DIR_ENTRY_SIZE);
      await handle.read(directory, HEADER_SIZE);
      if (!createHash('sha256').update(directory).digest().equals(header.dirSha256)) {
        throw new CowdiskError(ErrorCode.CORRUPT, `${handle.path}: the block directory is damaged (its SHA-256 does not match the header's). Restore the layer from a copy.`, {
          path: handle.path,
        });
      }
      return new SnapshotV2File(handle, header, directory, codec);
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  /** Of a framed block, only the frames `view` covers are read (one pread) and decoded, whole frames straight into `view`. */
  protected readCompressed(block: number, page: V2TablePage, slot: number, inBlock: number, view: Buffer): Promise<void> {
    const codes = page.codes;
    const base = slot * this.frames;
    const first = inBlock >>> FRAME_SHIFT;
    const last = (inBlock + view.length - 1) >>> FRAME_SHIFT;
    const start = page.offsets[slot] + storedBytes(codes, base, 0, first);
    if (first === last) return this.readFrame(block, first, codes[base + first], start, inBlock - (first << FRAME_SHIFT), view);
    return this.readFrames(block, codes, base, first, last, start, inBlock, view);
  }

  /**
   * readCompressed at once: the frames' stored bytes from the page cache (one readNow) into a
   * buffer only this synchronous path uses, then placed as readFrames places them.
   */
  protected readCompressedNow(block: number, page: V2TablePage, slot: number, inBlock: number, view: Buffer): boolean {
    const codes = page.codes;
    const base = slot * this.frames;
    const first = inBlock >>> FRAME_SHIFT;
    const last = (inBlock + view.length - 1) >>> FRAME_SHIFT;
    const start = page.offsets[slot] + storedBytes(codes, base, 0, first);
    if (first === last && codes[base + first] === FrameCode.RAW) return this.file.readNow(view, start + inBlock - (first << FRAME_SHIFT));
    const span = storedBytes(codes, base, first, last + 1);
    const stored = (this.nowStored ??= Buffer.allocUnsafeSlow(this.header.blockSize)).subarray(0, span);
    if (span > 0 && !this.file.readNow(stored, start)) return false;
    try {
      this.placeFrames(stored, codes, base, first, last, inBlock, view, block);
    } catch {
      return false;
    }
    return true;
  }

  /** Puts frames first..last of a block, stored one after the other in `stored`, into `view`. */
  private placeFrames(stored: Buffer, codes: Uint16Array, base: number, first: number, last: number, inBlock: number, view: Buffer, block: number): void {
    let at = 0;
    let out = 0;
    for (let f = first; f <= last; f++) {
      const frameStart = f << FRAME_SHIFT;
      const from = Math.max(inBlock, frameStart) - frameStart;
      const to = Math.min(inBlock + view.length, frameStart + FRAME_SIZE) - frameStart;
      this.placeFrame(stored.subarray(at, at + codes[base + f]), view.subarray(out, out + to - from), from, block, f);
      at += codes[base + f];
      out += to - from;
    }
  }

  /** Frames first..last of a block, in one pread of their stored bytes. */
  private async readFrames(block: number, codes: Uint16Array, base: number, first: number, last: number, start: number, inBlock: number, view: Buffer): Promise<void> {
    const span = storedBytes(codes, base, first, last + 1);
    const buffer = this.spareBlocks.pop() ?? Buffer.allocUnsafeSlow(this.header.blockSize);
    try {
      const stored = buffer.subarray(0, span);
      if (span > 0) await this.readExactly(stored, start, block);
      this.placeFrames(stored, codes, base, first, last, inBlock, view, block);
    } finally {
      if (this.spareBlocks.length < MAX_SPARE_BLOCKS) this.spareBlocks.push(buffer);
    }
  }

  /**
   * The part of one frame a read covers (the common case: a 4 KiB read is one frame): a raw
   * frame is read into place, an lz4 frame into a buffer kept for the purpose and decoded.
   */
  private async readFrame(block: number, frame: number, code: number, at: number, from: number, view: Buffer): Promise<void> {
    if (code === FrameCode.ZERO) {
      view.fill(0);
      return;
    }
    if (code === FrameCode.RAW) return this.readExactly(view, at + from, block);
    const stored = this.spare.pop() ?? Buffer.allocUnsafeSlow(FRAME_SIZE);
    try {
      const src = stored.subarray(0, code);
      if ((await this.file.read(src, at)) !== code) throw this.damaged(`block ${block} is cut short`, block);
      this.placeFrame(src, view, from, block, frame);
    } finally {
      this.spare.push(stored);
    }
  }

  /** Puts the bytes of frame `frame` (stored as `stored`) from offset `from` into `part`. */
  private placeFrame(stored: Buffer, part: Buffer, from: number, block: number, frame: number): void {
    const code = stored.length;
    if (code === FrameCode.ZERO) part.fill(0);
    else if (code === FrameCode.RAW) stored.copy(part, 0, from, from + part.length);
    else if (part.length === FRAME_SIZE) this.decodeFrame(stored, part, block, frame);
    else {
      this.decodeFrame(stored, this.scratch, block, frame);
      this.scratch.copy(part, 0, from, from + part.length);
    }
  }

  private decodeFrame(src: Buffer, dst: Buffer, block: number, frame: number): void {
    if (!this.codec.decode(src, dst)) throw this.damaged(`frame ${frame} of block ${block} does not decode to ${FRAME_SIZE} bytes`, block);
  }

  protected dirBlocks(index: number): number {
    return this.directory.readUInt32LE(index * V2_DIR_ENTRY_SIZE + V2DirEntryField.BLOCKS);
  }

  private dirDigest(index: number): Buffer {
    const at = index * V2_DIR_ENTRY_SIZE + V2DirEntryField.PAGE_SHA256;
    return this.directory.subarray(at, at + DIGEST_SIZE);
  }

  pageKind(index: number): PageKind {
    if (this.directory.readBigUInt64LE(index * V2_DIR_ENTRY_SIZE + V2DirEntryField.PAGE_OFFSET) !== 0n) return 'stored';
    const blocks = this.dirBlocks(index);
    const noDigest = this.dirDigest(index).every((b) => b === 0);
    if (blocks === 0 && noDigest) return 'absent';
    if (blocks === this.blocksInPage(index) && noDigest) return 'zero';
    throw this.damaged(`the directory entry of table page ${index} is impossible`, index * TABLE_ENTRIES_PER_PAGE);
  }

  directoryRange(): FileRange {
    return { offset: HEADER_SIZE, length: this.directory.length };
  }

  protected tableRange(index: number): FileRange {
    const offset = Number(this.directory.readBigUInt64LE(index * V2_DIR_ENTRY_SIZE + V2DirEntryField.PAGE_OFFSET));
    const blocks = this.dirBlocks(index);
    if (offset < this.header.tableOffset || offset + this.pageSize > this.header.fileLength || blocks === 0 || blocks > this.blocksInPage(index)) {
      throw this.damaged(`block table page ${index} lies outside the table region, or holds an impossible ${blocks} blocks`, index * TABLE_ENTRIES_PER_PAGE);
    }
    return { offset, length: this.pageSize };
  }

  checkTable(index: number, bytes: Buffer): void {
    if (
      bytes.length !== this.pageSize ||
      !createHash('sha256').update(bytes).digest().equals(this.dirDigest(index)) ||
      bytes.readUInt32LE(TablePageField.MAGIC) !== V2_TABLE_PAGE_MAGIC ||
      bytes.readUInt32LE(TablePageField.PAGE_INDEX) !== index
    ) {
      throw this.damaged(`block table page ${index} fails its SHA-256`, index * TABLE_ENTRIES_PER_PAGE);
    }
  }

  protected digestAt(slot: number): number {
    return TABLE_PAGE_HEADER + slot * this.entrySize + V2TableEntryField.DIGEST;
  }

  async checkStored(block: number, bytes: Buffer): Promise<void> {
    const { page, slot, digest } = await this.storedEntry(block, bytes);
    const data = page.kinds[slot] === BlockKind.RAW ? bytes : this.decodeBlock(bytes, page, slot, block);
    if (!createHash('sha256').update(data).digest().equals(digest)) throw this.damaged(`block ${block} does not match its SHA-256 digest`, block);
  }

  /** A framed block's stored bytes, decoded whole. */
  private decodeBlock(stored: Buffer, page: V2TablePage, slot: number, block: number): Buffer {
    const out = Buffer.alloc(this.header.blockSize);
    let at = 0;
    for (let f = 0; f < this.frames; f++) {
      const code = page.codes[slot * this.frames + f];
      const frame = out.subarray(f * FRAME_SIZE, (f + 1) * FRAME_SIZE);
      if (code === FrameCode.RAW) stored.copy(frame, 0, at, at + FRAME_SIZE);
      else if (code !== FrameCode.ZERO) this.decodeFrame(stored.subarray(at, at + code), frame, block, f);
      at += code;
    }
    return out;
  }

  protected newPage(index: number): V2TablePage {
    return {
      index,
      kinds: new Uint8Array(TABLE_ENTRIES_PER_PAGE),
      offsets: new Float64Array(TABLE_ENTRIES_PER_PAGE),
      lengths: new Uint32Array(TABLE_ENTRIES_PER_PAGE),
      codes: new Uint16Array(TABLE_ENTRIES_PER_PAGE * this.frames),
    };
  }

  protected decodePage(bytes: Buffer, page: V2TablePage): void {
    const index = page.index;
    const first = index * TABLE_ENTRIES_PER_PAGE;
    const bs = this.header.blockSize;
    let held = 0;
    for (let slot = 0; slot < TABLE_ENTRIES_PER_PAGE; slot++) {
      const at = TABLE_PAGE_HEADER + slot * this.entrySize;
      const offset = Number(bytes.readBigUInt64LE(at + V2TableEntryField.OFFSET));
      const length = bytes.readUInt32LE(at + V2TableEntryField.STORED_LENGTH);
      const kind = bytes[at + V2TableEntryField.KIND];
      const block = first + slot;
      const bad = (why: string) => this.damaged(`the table entry of block ${block} ${why}`, block);
      let sum = 0;
      for (let f = 0; f < this.frames; f++) {
        const code = bytes.readUInt16LE(at + V2TableEntryField.FRAMES + 2 * f);
        if (code > FRAME_SIZE) throw bad(`has an impossible code ${code} for frame ${f}`);
        page.codes[slot * this.frames + f] = code;
        sum += code;
      }
      if (kind === BlockKind.ABSENT || kind === BlockKind.ZERO) {
        if (offset !== 0 || length !== 0 || sum !== 0) throw bad('has data for a block without any');
      } else if (kind === BlockKind.RAW || kind === BlockKind.LZ4) {
        if (kind === BlockKind.RAW ? length !== bs || sum !== 0 : length !== sum) throw bad(`has a stored length ${length} its frames do not add up to`);
        if (offset < this.dataOffset || offset + length > this.header.tableOffset) throw bad('points outside the data region');
      } else {
        throw bad(`has unknown kind ${kind}`);
      }
      if (kind !== BlockKind.ABSENT && block >= this.blocks) throw bad('lies past the end');
      if (kind !== BlockKind.ABSENT) held++;
      page.kinds[slot] = kind;
      page.offsets[slot] = offset;
      page.lengths[slot] = length;
    }
    if (held !== this.dirBlocks(index)) throw this.damaged(`block table page ${index} holds ${held} blocks, its directory entry says ${this.dirBlocks(index)}`, first);
  }
}

/** Stored bytes of frames [from, to) of the block whose codes start at `base` (a frame's code is its stored length). */
function storedBytes(codes: Uint16Array, base: number, from: number, to: number): number {
  let n = 0;
  for (let f = from; f < to; f++) n += codes[base + f];
  return n;
}
