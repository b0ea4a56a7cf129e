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
 * Outside this file the layer is asked in blocks, never in pages: the kind of each block of a
 * range (`kinds`), the bytes of the blocks it stores (`read`), every block it holds with its
 * digest, in order (`forEachEntry`).
 */
import { createHash } from 'node:crypto';
import { uncompressSync } from 'lz4-napi';
import { CowdiskError, ErrorCode } from '../errors.js';
import type { BlockFile, FileSystem } from '../io/file.js';
import {
  BlockKind,
  DIGEST_SIZE,
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
  blockCount,
} from './constants.js';
import { zlibCrc32 } from './crc.js';
import { PageCache } from './page-cache.js';
import { type SnapshotHeaderFields, decodeSnapshotHeader } from './header.js';
import type { FileRange, SealedFile } from './sealed-file.js';

/** One decoded table page: kinds, offsets and stored lengths of up to 1024 blocks. */
export interface TablePage {
  readonly index: number;
  readonly kinds: Uint8Array;
  readonly offsets: Float64Array;
  readonly lengths: Uint32Array;
}

const MAX_CACHED_PAGES = 4096;
const MAX_CACHED_BLOCKS = 32;

export class SnapshotFile implements SealedFile {
  readonly version = 1;
  readonly blocks: number;
  private readonly pages = new PageCache<TablePage>((index) => this.loadPage(index), MAX_CACHED_PAGES);
  private readonly decompressed = new Map<number, Buffer>();

  private constructor(
    readonly file: BlockFile,
    readonly header: SnapshotHeaderFields,
    private readonly directory: Buffer,
    readonly fileSize: number,
  ) {
    this.blocks = blockCount(header.size, header.blockSize);
  }

  get path(): string {
    return this.file.path;
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

  /** Blocks this layer holds (stored or zero), from the directory alone: no table page is read. */
  heldBlocks(): number {
    let held = 0;
    for (let index = 0; index < this.header.dirPages; index++) held += this.dirBlocks(index);
    return held;
  }

  /**
   * The kind (BlockKind) of each block of [first, first + count), or null when the layer has none
   * of them (every one absent: read the parent), which the directory alone tells.
   */
  async kinds(first: number, count: number): Promise<Uint8Array | null> {
    let out: Uint8Array | null = null;
    const end = first + count;
    for (let index = pageOf(first); index * TABLE_ENTRIES_PER_PAGE < end; index++) {
      const page = await this.page(index);
      if (!page) continue;
      out ??= new Uint8Array(count);
      const pageFirst = index * TABLE_ENTRIES_PER_PAGE;
      const from = Math.max(first, pageFirst);
      const to = Math.min(end, pageFirst + TABLE_ENTRIES_PER_PAGE);
      out.set(page.kinds.subarray(from - pageFirst, to - pageFirst), from - first);
    }
    return out;
  }

  /**
   * Fills `buf` with the disk's bytes at `offset`, which lie in blocks this layer stores or zeroes
   * (the caller asked `kinds` first). Uncompressed blocks adjacent in the file are read at once.
   */
  async read(buf: Buffer, offset: number): Promise<void> {
    const bs = this.header.blockSize;
    const end = offset + buf.length;
    let pos = offset;
    while (pos < end) {
      const block = Math.floor(pos / bs);
      const page = this.pages.get(pageOf(block)) ?? (await this.page(pageOf(block)));
      const slot = block % TABLE_ENTRIES_PER_PAGE;
      const kind = page ? page.kinds[slot] : BlockKind.ABSENT;
      const inBlock = pos - block * bs;
      let runEnd = Math.min(end, (block + 1) * bs);
      const view = () => buf.subarray(pos - offset, runEnd - offset);
      if (!page || kind === BlockKind.ZERO || kind === BlockKind.ABSENT) {
        view().fill(0);
      } else if (kind === BlockKind.RAW) {
        // Following raw blocks of this page that sit right after this one in the file: one read.
        let last = slot;
        while (runEnd < end && last + 1 < TABLE_ENTRIES_PER_PAGE && page.kinds[last + 1] === BlockKind.RAW && page.offsets[last + 1] === page.offsets[last] + bs) {
          last++;
          runEnd = Math.min(end, runEnd + bs);
        }
        const v = view();
        if ((await this.file.read(v, page.offsets[slot] + inBlock)) !== v.length) throw this.damaged(`block ${block} is cut short`, block);
      } else {
        const whole = await this.readLz4(block, page.offsets[slot], page.lengths[slot]);
        const v = view();
        whole.copy(v, 0, inBlock, inBlock + v.length);
      }
      pos = runEnd;
    }
  }

  /**
   * Calls `fn` for every block the layer holds, in block order, with its kind and (for stored
   * blocks) the SHA-256 its bytes must have. A table page that cannot be read goes to `onError`
   * and its blocks are skipped; the walk goes on (`check` reports every damaged page).
   */
  async forEachEntry(
    fn: (block: number, kind: number, digest: Buffer | null) => void | Promise<void>,
    onError: (err: CowdiskError) => void,
  ): Promise<void> {
    for (let index = 0; index < this.header.dirPages; index++) {
      const first = index * TABLE_ENTRIES_PER_PAGE;
      let bytes: Buffer | null;
      let page: TablePage | null;
      try {
        const kind = this.pageKind(index);
        if (kind === 'absent') continue;
        if (kind === 'zero') {
          for (let block = first; block < first + this.blocksInPage(index); block++) await fn(block, BlockKind.ZERO, null);
          continue;
        }
        bytes = await this.readPageBytes(index);
        page = await this.page(index);
      } catch (err) {
        if (!(err instanceof CowdiskError)) throw err;
        onError(err);
        continue;
      }
      if (!page) continue;
      for (let slot = 0; slot < TABLE_ENTRIES_PER_PAGE; slot++) {
        const kind = page.kinds[slot];
        if (kind === BlockKind.ABSENT) continue;
        const at = TABLE_PAGE_HEADER + slot * TABLE_ENTRY_SIZE + TableEntryField.DIGEST;
        await fn(first + slot, kind, kind === BlockKind.ZERO ? null : bytes.subarray(at, at + DIGEST_SIZE));
      }
    }
  }

  /** The whole uncompressed block `block` (zeros for a zero or absent block). */
  async readBlock(block: number): Promise<Buffer> {
    const out = Buffer.alloc(this.header.blockSize);
    await this.read(out, block * this.header.blockSize);
    return out;
  }

  /** Blocks covered by table page `index` (the last page may cover fewer than 1024). */
  blocksInPage(index: number): number {
    return Math.min(TABLE_ENTRIES_PER_PAGE, this.blocks - index * TABLE_ENTRIES_PER_PAGE);
  }

  /** Blocks the layer has (stored or zero) in table page `index`, from its directory entry. */
  private dirBlocks(index: number): number {
    return this.directory.readUInt32LE(index * DIR_ENTRY_SIZE + DirEntryField.BLOCKS);
  }

  /**
   * What the directory says of table page `index`: every block absent, every block zero (no page
   * is stored for either), or a stored page.
   */
  pageKind(index: number): 'absent' | 'zero' | 'stored' {
    const at = index * DIR_ENTRY_SIZE;
    if (this.directory.readBigUInt64LE(at + DirEntryField.PAGE_OFFSET) !== 0n) return 'stored';
    const blocks = this.dirBlocks(index);
    if (blocks === 0) return 'absent';
    if (blocks === this.blocksInPage(index) && this.directory.readUInt32LE(at + DirEntryField.PAGE_CRC) === 0) return 'zero';
    throw this.damaged(`the directory entry of table page ${index} is impossible`, index * TABLE_ENTRIES_PER_PAGE);
  }

  /** Table page `index`, or null when the layer has none of its blocks. */
  page(index: number): TablePage | null | Promise<TablePage | null> {
    if (this.pageKind(index) === 'absent') return null;
    return this.pages.fetch(index);
  }

  /** Reads a table page and checks it; the raw bytes come back too (they hold the digests). */
  async readPageBytes(index: number): Promise<Buffer> {
    const { offset } = this.tableRange(index);
    const bytes = Buffer.alloc(TABLE_PAGE_SIZE);
    if ((await this.file.read(bytes, offset)) !== TABLE_PAGE_SIZE) {
      throw this.damaged(`block table page ${index} is cut short`, index * TABLE_ENTRIES_PER_PAGE);
    }
    this.checkTable(index, bytes);
    return bytes;
  }

  directoryRange(): FileRange {
    return { offset: this.header.dirOffset, length: this.header.dirPages * DIR_ENTRY_SIZE };
  }

  tableRanges(first: number, count: number): Array<FileRange & { index: number }> {
    const out: Array<FileRange & { index: number }> = [];
    for (let index = pageOf(first); index * TABLE_ENTRIES_PER_PAGE < first + count; index++) {
      if (this.pageKind(index) === 'stored') out.push({ index, ...this.tableRange(index) });
    }
    return out;
  }

  /** Where stored table page `index` lies, checked against the file's bounds. */
  private tableRange(index: number): FileRange {
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

  async storedRange(block: number): Promise<FileRange | null> {
    const page = await this.page(pageOf(block));
    const slot = block % TABLE_ENTRIES_PER_PAGE;
    if (!page || (page.kinds[slot] !== BlockKind.RAW && page.kinds[slot] !== BlockKind.LZ4)) return null;
    return { offset: page.offsets[slot], length: page.lengths[slot] };
  }

  async checkStored(block: number, bytes: Buffer): Promise<void> {
    const page = await this.page(pageOf(block));
    const slot = block % TABLE_ENTRIES_PER_PAGE;
    if (!page || bytes.length !== page.lengths[slot]) throw this.damaged(`block ${block} has the wrong stored length`, block);
    // The digest sits in the table page, which is in the file by now (storedRange needed it).
    const digest = Buffer.alloc(DIGEST_SIZE);
    const at = this.tableRange(pageOf(block)).offset + TABLE_PAGE_HEADER + slot * TABLE_ENTRY_SIZE + TableEntryField.DIGEST;
    if ((await this.file.read(digest, at)) !== DIGEST_SIZE) throw this.damaged(`the table entry of block ${block} is cut short`, block);
    const data = page.kinds[slot] === BlockKind.LZ4 ? this.decompress(bytes, block) : bytes;
    if (!createHash('sha256').update(data).digest().equals(digest)) throw this.damaged(`block ${block} does not match its SHA-256 digest`, block);
  }

  private async loadPage(index: number): Promise<TablePage> {
    const page: TablePage = {
      index,
      kinds: new Uint8Array(TABLE_ENTRIES_PER_PAGE),
      offsets: new Float64Array(TABLE_ENTRIES_PER_PAGE),
      lengths: new Uint32Array(TABLE_ENTRIES_PER_PAGE),
    };
    if (this.pageKind(index) === 'zero') {
      page.kinds.fill(BlockKind.ZERO, 0, this.blocksInPage(index));
      return page;
    }
    const bytes = await this.readPageBytes(index);
    const first = index * TABLE_ENTRIES_PER_PAGE;
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
    return page;
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

  damaged(what: string, block: number): CowdiskError {
    return new CowdiskError(ErrorCode.CORRUPT, `${this.path}: ${what}. The layer is damaged; restore it from a copy (\`cowdisk check\` lists every bad block).`, {
      path: this.path,
      block,
    });
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}

function pageOf(block: number): number {
  return Math.floor(block / TABLE_ENTRIES_PER_PAGE);
}
