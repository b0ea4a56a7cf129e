/**
 * Reading a sealed snapshot layer (format version 1): a read-only file of fixed-size blocks,
 * written once and never modified, identified by its layer digest (layer-digest.ts).
 *
 * Layout: a 4 KiB header; the stored blocks (uncompressed ones aligned to 4 KiB so partial reads
 * are page-aligned, lz4 ones packed); the block-table pages of the blocks the layer has; last, the
 * directory, one 16-byte entry per table page (offset 0: no page stored). Opening reads the header
 * and the directory only (16 bytes per 1024 blocks: 256 KiB for 1 TiB at 64 KiB blocks); table
 * pages are read, checked and decoded on first use and kept in a bounded cache. Every table page
 * has a CRC in the directory; every stored block has the SHA-256 of its uncompressed bytes,
 * checked by `cowdisk check` (and by nothing on the read path, which trusts the data the way
 * qcow2 does: hashing every read would cost more than the read).
 *
 * What every version shares (the walks over directory and pages) is sealed-table-file.ts; this
 * file says how version 1 lays out and checks its directory and pages, and reads an lz4 block.
 */
import { createHash } from 'node:crypto';
import { uncompressSync } from 'lz4-napi';
import { CowdiskError, ErrorCode } from '../errors.js';
import type { BlockFile, FileSystem } from '../io/file.js';
import {
  BlockKind,
  DIR_ENTRY_SIZE,
  DirEntryField,
  HEADER_SIZE,
  LZ4_SIZE_PREFIX,
  MAGIC_LENGTH,
  SNAPSHOT_MAGIC,
  TABLE_ENTRIES_PER_PAGE,
  TABLE_ENTRY_SIZE,
  TABLE_PAGE_HEADER,
  TABLE_PAGE_MAGIC,
  TABLE_PAGE_SIZE,
  TableEntryField,
  TablePageField,
} from './constants.js';
import { zlibCrc32 } from './crc.js';
import { type SnapshotHeaderFields, decodeSnapshotHeader } from './header.js';
import type { FileRange, SealedFile } from './sealed-file.js';
import { type PageKind, SealedTableFile, type TablePageView } from './sealed-table-file.js';

/** One decoded table page: kinds, offsets and stored lengths of up to 1024 blocks. */
export type TablePage = TablePageView;

const MAX_CACHED_PAGES = 4096;
const MAX_CACHED_BLOCKS = 32;

export class SnapshotFile extends SealedTableFile<TablePage> implements SealedFile {
  readonly version = 1;
  declare readonly header: SnapshotHeaderFields;
  private readonly decompressed = new Map<number, Buffer>();

  private constructor(
    file: BlockFile,
    header: SnapshotHeaderFields,
    private readonly directory: Buffer,
    readonly fileSize: number,
  ) {
    super(file, header, MAX_CACHED_PAGES);
  }

  get blockSize(): number {
    return this.header.blockSize;
  }

  get digest(): string {
    return `sha256:${this.header.layerDigest.toString('hex')}`;
  }

  static async open(fs: FileSystem, file: string): Promise<SnapshotFile> {
    const handle = await fs.open(file, { readOnly: true });
    try {
      const fileSize = await handle.size();
      const head = Buffer.alloc(HEADER_SIZE);
      const n = await handle.read(head, 0);
      if (n < HEADER_SIZE) {
        if (n >= MAGIC_LENGTH && head.subarray(0, MAGIC_LENGTH).equals(SNAPSHOT_MAGIC)) {
          throw new CowdiskError(ErrorCode.TRUNCATED, `${handle.path} is truncated: ${n} bytes, shorter than its header. Restore it from a copy.`, {
            path: handle.path,
          });
        }
      }
      const header = decodeSnapshotHeader(head, handle.path, fileSize);
      const directory = Buffer.alloc(header.dirPages * DIR_ENTRY_SIZE);
      await handle.read(directory, header.dirOffset);
      if (zlibCrc32(directory) !== header.dirCrc) {
        throw new CowdiskError(
          ErrorCode.CORRUPT,
          `${handle.path}: the block directory is damaged (checksum mismatch). Restore the layer from a copy.`,
          { path: handle.path },
        );
      }
      return new SnapshotFile(handle, header, directory, fileSize);
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  protected dirBlocks(index: number): number {
    return this.directory.readUInt32LE(index * DIR_ENTRY_SIZE + DirEntryField.BLOCKS);
  }

  pageKind(index: number): PageKind {
    const at = index * DIR_ENTRY_SIZE;
    if (this.directory.readBigUInt64LE(at + DirEntryField.PAGE_OFFSET) !== 0n) return 'stored';
    const blocks = this.dirBlocks(index);
    if (blocks === 0) return 'absent';
    if (blocks === this.blocksInPage(index) && this.directory.readUInt32LE(at + DirEntryField.PAGE_CRC) === 0) return 'zero';
    throw this.damaged(`the directory entry of table page ${index} is impossible`, index * TABLE_ENTRIES_PER_PAGE);
  }

  directoryRange(): FileRange {
    return { offset: this.header.dirOffset, length: this.header.dirPages * DIR_ENTRY_SIZE };
  }

  protected tableRange(index: number): FileRange {
    const offset = Number(this.directory.readBigUInt64LE(index * DIR_ENTRY_SIZE + DirEntryField.PAGE_OFFSET));
    if (offset < HEADER_SIZE || offset + TABLE_PAGE_SIZE > this.fileSize) {
      throw this.damaged(`block table page ${index} lies outside the file`, index * TABLE_ENTRIES_PER_PAGE);
    }
    return { offset, length: TABLE_PAGE_SIZE };
  }

  checkTable(index: number, bytes: Buffer): void {
    const crc = this.directory.readUInt32LE(index * DIR_ENTRY_SIZE + DirEntryField.PAGE_CRC);
    const whole = bytes.length === TABLE_PAGE_SIZE;
    if (!whole || zlibCrc32(bytes) !== crc || bytes.readUInt32LE(TablePageField.MAGIC) !== TABLE_PAGE_MAGIC || bytes.readUInt32LE(TablePageField.PAGE_INDEX) !== index) {
      throw this.damaged(`block table page ${index} fails its checksum`, index * TABLE_ENTRIES_PER_PAGE);
    }
  }

  protected digestAt(slot: number): number {
    return TABLE_PAGE_HEADER + slot * TABLE_ENTRY_SIZE + TableEntryField.DIGEST;
  }

  async checkStored(block: number, bytes: Buffer): Promise<void> {
    const { page, slot, digest } = await this.storedEntry(block, bytes);
    const data = page.kinds[slot] === BlockKind.LZ4 ? this.decompress(bytes, block) : bytes;
    if (!createHash('sha256').update(data).digest().equals(digest)) throw this.damaged(`block ${block} does not match its SHA-256 digest`, block);
  }

  protected newPage(index: number): TablePage {
    return { index, kinds: new Uint8Array(TABLE_ENTRIES_PER_PAGE), offsets: new Float64Array(TABLE_ENTRIES_PER_PAGE), lengths: new Uint32Array(TABLE_ENTRIES_PER_PAGE) };
  }

  protected decodePage(bytes: Buffer, page: TablePage): void {
    const first = page.index * TABLE_ENTRIES_PER_PAGE;
    const bs = this.header.blockSize;
    for (let slot = 0; slot < TABLE_ENTRIES_PER_PAGE; slot++) {
      const at = TABLE_PAGE_HEADER + slot * TABLE_ENTRY_SIZE;
      const offset = Number(bytes.readBigUInt64LE(at + TableEntryField.OFFSET));
      const length = bytes.readUInt32LE(at + TableEntryField.STORED_LENGTH);
      const kind = bytes[at + TableEntryField.KIND];
      const block = first + slot;
      const bad = (why: string) => this.damaged(`the table entry of block ${block} ${why}`, block);
      if (kind === BlockKind.ABSENT || kind === BlockKind.ZERO) {
        if (offset !== 0 || length !== 0) throw bad('has data for a block without any');
        if (kind === BlockKind.ZERO && block >= this.blocks) throw bad('lies past the end');
      } else if (kind === BlockKind.RAW || kind === BlockKind.LZ4) {
        if (block >= this.blocks) throw bad('lies past the end');
        const maxLength = kind === BlockKind.RAW ? bs : bs - 1;
        if (kind === BlockKind.RAW ? length !== bs : length <= LZ4_SIZE_PREFIX || length > maxLength) {
          throw bad(`has an impossible stored length ${length}`);
        }
        if (offset < HEADER_SIZE || offset + length > this.header.dirOffset) throw bad('points outside the data region');
      } else {
        throw bad(`has unknown kind ${kind}`);
      }
      page.kinds[slot] = kind;
      page.offsets[slot] = offset;
      page.lengths[slot] = length;
    }
  }

  /** Version 1 compresses a whole block: it is decompressed, and the part asked for copied out. */
  protected async readCompressed(block: number, page: TablePage, slot: number, inBlock: number, view: Buffer): Promise<void> {
    const whole = await this.readLz4(block, page.offsets[slot], page.lengths[slot]);
    whole.copy(view, 0, inBlock, inBlock + view.length);
  }

  /** Only a block decompressed a moment ago (kept by readLz4) is answered at once. */
  protected readCompressedNow(block: number, _page: TablePage, _slot: number, inBlock: number, view: Buffer): boolean {
    const whole = this.decompressed.get(block);
    if (!whole) return false;
    whole.copy(view, 0, inBlock, inBlock + view.length);
    return true;
  }

  /** An lz4 block, decompressed; the last few are kept, since a run of small reads often hits one block. */
  private async readLz4(block: number, offset: number, length: number): Promise<Buffer> {
    const hit = this.decompressed.get(block);
    if (hit) return hit;
    const stored = Buffer.alloc(length);
    if ((await this.file.read(stored, offset)) !== length) throw this.damaged(`block ${block} is cut short`, block);
    const out = this.decompress(stored, block);
    if (this.decompressed.size >= MAX_CACHED_BLOCKS) this.decompressed.delete(this.decompressed.keys().next().value as number);
    this.decompressed.set(block, out);
    return out;
  }

  /** Decompresses one stored block, refusing a size prefix that is not the block size. */
  private decompress(stored: Buffer, block: number): Buffer {
    // lz4-napi allocates what the prefix claims: check it before handing the bytes over.
    if (stored.length <= LZ4_SIZE_PREFIX || stored.readUInt32LE(0) !== this.header.blockSize) {
      throw this.damaged(`compressed block ${block} has a bad size prefix`, block);
    }
    let out: Buffer;
    try {
      out = uncompressSync(stored);
    } catch {
      throw this.damaged(`compressed block ${block} does not decompress`, block);
    }
    if (out.length !== this.header.blockSize) throw this.damaged(`compressed block ${block} decompresses to the wrong size`, block);
    return out;
  }
}
