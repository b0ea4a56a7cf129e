/**
 * What every version of the sealed layer file has in common, written once: a directory with an
 * entry per table page of 1024 blocks (none stored for a page that is all absent or all zero),
 * table pages read on first use into a bounded cache, and the walks over them that the contract
 * (sealed-file.ts) asks for: the kinds of a range of blocks, the disk's bytes, every entry with
 * its digest, where table pages and stored blocks lie.
 *
 * A version says how its directory entries and table pages are laid out and checked, and how a
 * stored block that is not raw is read (version 1: one lz4 block; version 2: frames).
 */
import { CowdiskError, ErrorCode } from '../errors.js';
import type { BlockFile } from '../io/file.js';
import { BlockKind, DIGEST_SIZE, TABLE_ENTRIES_PER_PAGE, blockCount } from './constants.js';
import { PageCache } from './page-cache.js';
import type { FileRange, SealedHeader } from './sealed-file.js';

/** The part of a decoded table page every version has. */
export interface TablePageView {
  readonly index: number;
  readonly kinds: Uint8Array;
  readonly offsets: Float64Array;
  readonly lengths: Uint32Array;
}

export type PageKind = 'absent' | 'zero' | 'stored';

export abstract class SealedTableFile<P extends TablePageView> {
  abstract readonly version: number;
  readonly blocks: number;
  protected readonly pages: PageCache<P>;

  protected constructor(
    readonly file: BlockFile,
    readonly header: SealedHeader & { readonly dirPages: number },
    cachedPages: number,
  ) {
    this.blocks = blockCount(header.size, header.blockSize);
    this.pages = new PageCache((index) => this.loadPage(index), cachedPages);
  }

  get path(): string {
    return this.file.path;
  }

  /** Blocks the layer has (stored or zero) in table page `index`, from its directory entry. */
  protected abstract dirBlocks(index: number): number;
  /** What the directory says of table page `index`: all absent, all zero (no page stored for either), or stored. */
  abstract pageKind(index: number): PageKind;
  /** Where stored table page `index` lies, checked against the file's bounds. */
  protected abstract tableRange(index: number): FileRange;
  abstract checkTable(index: number, bytes: Buffer): void;
  /** An empty decoded page (every block absent). */
  protected abstract newPage(index: number): P;
  /** Decodes a table page's checked bytes into `page`, bounds-checking every entry. */
  protected abstract decodePage(bytes: Buffer, page: P): void;
  /** Where, in a table page, the digest of the block at `slot` is. */
  protected abstract digestAt(slot: number): number;
  /** Fills `view` with the bytes at `inBlock` of block `block`, stored compressed (kind LZ4). */
  protected abstract readCompressed(block: number, page: P, slot: number, inBlock: number, view: Buffer): Promise<void>;
  /** readCompressed at once, from memory only (BlockFile.readNow), or false. */
  protected abstract readCompressedNow(block: number, page: P, slot: number, inBlock: number, view: Buffer): boolean;

  heldBlocks(): number {
    let held = 0;
    for (let index = 0; index < this.header.dirPages; index++) held += this.dirBlocks(index);
    return held;
  }

  /** Blocks covered by table page `index` (the last page may cover fewer than 1024). */
  blocksInPage(index: number): number {
    return Math.min(TABLE_ENTRIES_PER_PAGE, this.blocks - index * TABLE_ENTRIES_PER_PAGE);
  }

  /** Table page `index`, or null when the layer has none of its blocks. */
  page(index: number): P | null | Promise<P | null> {
    if (this.pageKind(index) === 'absent') return null;
    return this.pages.fetch(index);
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
   * (the caller asked `kinds` first). Raw blocks adjacent in the file are read at once.
   */
  read(buf: Buffer, offset: number): Promise<void> {
    // The everyday read (4 KiB, a block whose table page is in memory) goes straight to the one
    // read it needs, without a loop's async frame of its own around it.
    const bs = this.header.blockSize;
    const block = Math.floor(offset / bs);
    const page = this.pages.get(pageOf(block));
    const slot = block % TABLE_ENTRIES_PER_PAGE;
    if (page && offset + buf.length <= (block + 1) * bs) {
      const kind = page.kinds[slot];
      if (kind === BlockKind.RAW) return this.readExactly(buf, page.offsets[slot] + offset - block * bs, block);
      if (kind === BlockKind.LZ4) return this.readCompressed(block, page, slot, offset - block * bs, buf);
    }
    return this.readRuns(buf, offset);
  }

  /**
   * read, at once: when the table pages the range needs are in memory and its stored bytes in the
   * page cache (BlockFile.readNow), and the version can place them without waiting; false
   * otherwise, and then `read` does it (and reports what is wrong, if anything is: a frame that
   * does not decode makes this say false, and read say CORRUPT).
   */
  readNow(buf: Buffer, offset: number): boolean {
    const bs = this.header.blockSize;
    const end = offset + buf.length;
    let pos = offset;
    while (pos < end) {
      const block = Math.floor(pos / bs);
      const index = pageOf(block);
      const runEnd = Math.min(end, (block + 1) * bs);
      const view = buf.subarray(pos - offset, runEnd - offset);
      const page = this.pages.get(index);
      const slot = block % TABLE_ENTRIES_PER_PAGE;
      const kind = page ? page.kinds[slot] : BlockKind.ABSENT;
      if (!page && this.pageKind(index) !== 'absent') return false;
      if (kind === BlockKind.ZERO || kind === BlockKind.ABSENT) view.fill(0);
      else if (kind === BlockKind.RAW) {
        if (!this.file.readNow(view, page!.offsets[slot] + pos - block * bs)) return false;
      } else if (!this.readCompressedNow(block, page!, slot, pos - block * bs, view)) return false;
      pos = runEnd;
    }
    return true;
  }

  private async readRuns(buf: Buffer, offset: number): Promise<void> {
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
      if (!page || kind === BlockKind.ZERO || kind === BlockKind.ABSENT) {
        buf.fill(0, pos - offset, runEnd - offset);
      } else if (kind === BlockKind.RAW) {
        // Following raw blocks of this page that sit right after this one in the file: one read.
        let last = slot;
        while (runEnd < end && last + 1 < TABLE_ENTRIES_PER_PAGE && page.kinds[last + 1] === BlockKind.RAW && page.offsets[last + 1] === page.offsets[last] + bs) {
          last++;
          runEnd = Math.min(end, runEnd + bs);
        }
        await this.readExactly(buf.subarray(pos - offset, runEnd - offset), page.offsets[slot] + inBlock, block);
      } else {
        await this.readCompressed(block, page, slot, inBlock, pos === offset && runEnd === end ? buf : buf.subarray(pos - offset, runEnd - offset));
      }
      pos = runEnd;
    }
  }

  protected async readExactly(buf: Buffer, at: number, block: number): Promise<void> {
    if ((await this.file.read(buf, at)) !== buf.length) throw this.damaged(`block ${block} is cut short`, block);
  }

  /** The whole uncompressed block `block` (zeros for a zero or absent block). */
  async readBlock(block: number): Promise<Buffer> {
    const out = Buffer.alloc(this.header.blockSize);
    await this.read(out, block * this.header.blockSize);
    return out;
  }

  /**
   * Calls `fn` for every block the layer holds, in block order, with its kind and (for stored
   * blocks) the SHA-256 its bytes must have. A table page that cannot be read goes to `onError`
   * and its blocks are skipped; the walk goes on (`check` reports every damaged page).
   */
  async forEachEntry(fn: (block: number, kind: number, digest: Buffer | null) => void | Promise<void>, onError: (err: CowdiskError) => void): Promise<void> {
    for (let index = 0; index < this.header.dirPages; index++) {
      const first = index * TABLE_ENTRIES_PER_PAGE;
      let bytes: Buffer;
      let page: P | null;
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
        const at = this.digestAt(slot);
        await fn(first + slot, kind, kind === BlockKind.ZERO ? null : bytes.subarray(at, at + DIGEST_SIZE));
      }
    }
  }

  /** Table page `index` decoded: read and checked, or made from its directory entry for a page of zeros. */
  private async loadPage(index: number): Promise<P> {
    const page = this.newPage(index);
    if (this.pageKind(index) === 'zero') page.kinds.fill(BlockKind.ZERO, 0, this.blocksInPage(index));
    else this.decodePage(await this.readPageBytes(index), page);
    return page;
  }

  /** Reads a stored table page and checks it; the raw bytes come back (they hold the digests). */
  async readPageBytes(index: number): Promise<Buffer> {
    const { offset, length } = this.tableRange(index);
    const bytes = Buffer.alloc(length);
    if ((await this.file.read(bytes, offset)) !== length) throw this.damaged(`block table page ${index} is cut short`, index * TABLE_ENTRIES_PER_PAGE);
    this.checkTable(index, bytes);
    return bytes;
  }

  tableRanges(first: number, count: number): Array<FileRange & { index: number }> {
    const out: Array<FileRange & { index: number }> = [];
    for (let index = pageOf(first); index * TABLE_ENTRIES_PER_PAGE < first + count; index++) {
      if (this.pageKind(index) === 'stored') out.push({ index, ...this.tableRange(index) });
    }
    return out;
  }

  async storedRange(block: number): Promise<FileRange | null> {
    const page = await this.page(pageOf(block));
    const slot = block % TABLE_ENTRIES_PER_PAGE;
    if (!page || (page.kinds[slot] !== BlockKind.RAW && page.kinds[slot] !== BlockKind.LZ4)) return null;
    return { offset: page.offsets[slot], length: page.lengths[slot] };
  }

  /**
   * The stored block's table page, slot and the digest its bytes must have, for `checkStored`:
   * CORRUPT unless `bytes` have the block's stored length.
   */
  protected async storedEntry(block: number, bytes: Buffer): Promise<{ page: P; slot: number; digest: Buffer }> {
    const page = await this.page(pageOf(block));
    const slot = block % TABLE_ENTRIES_PER_PAGE;
    if (!page || (page.kinds[slot] !== BlockKind.RAW && page.kinds[slot] !== BlockKind.LZ4) || bytes.length !== page.lengths[slot]) {
      throw this.damaged(`block ${block} has the wrong stored length`, block);
    }
    // The digest sits in the table page, which is in the file by now (storedRange needed it).
    const digest = Buffer.alloc(DIGEST_SIZE);
    if ((await this.file.read(digest, this.tableRange(pageOf(block)).offset + this.digestAt(slot))) !== DIGEST_SIZE) {
      throw this.damaged(`the table entry of block ${block} is cut short`, block);
    }
    return { page, slot, digest };
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

export function pageOf(block: number): number {
  return Math.floor(block / TABLE_ENTRIES_PER_PAGE);
}
