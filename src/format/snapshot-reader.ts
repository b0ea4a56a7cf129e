/**
 * The sealed snapshot layer: a read-only file of fixed-size blocks, written once and never
 * modified, identified by its layer digest.
 *
 * Layout: a 4 KiB header; the stored blocks (uncompressed ones aligned to 4 KiB so partial reads
 * are page-aligned, lz4 ones packed); the block-table pages of the blocks the layer has; last, the
 * directory, one 16-byte entry per table page (offset 0: every block of that page is absent).
 * Opening reads the header and the directory only (16 bytes per 1024 blocks: 256 KiB for 1 TiB at
 * 64 KiB blocks); table pages are read, checked and decoded on first use and kept in a bounded
 * cache. Every table page has a CRC in the directory; every stored block has the SHA-256 of its
 * uncompressed bytes, checked by `cowdisk check` (and by nothing on the read path, which trusts
 * the data the way qcow2 does: hashing every read would cost more than the read).
 *
 * The layer digest is SHA-256 over a fixed prefix, the geometry and, for each block the layer
 * holds in block order, its index, kind and data digest. It does not depend on compression or on
 * where blocks sit in the file, so the same content always has the same identity.
 *
 * Writing goes to a temporary file renamed into place after everything is synced, so a crash
 * leaves either no layer or a whole one.
 */
import { createHash, type Hash } from 'node:crypto';
import * as path from 'node:path';
import { compress, uncompressSync } from 'lz4-napi';
import { CowdiskError, ErrorCode, isCowdiskError } from '../errors.js';
import type { BlockFile, FileSystem } from '../io/file.js';
import {
  BlockKind,
  DIR_ENTRY_SIZE,
  HEADER_SIZE,
  LAYER_DIGEST_PREFIX,
  LZ4_MIN_SAVING,
  MAGIC_LENGTH,
  RAW_BLOCK_ALIGN,
  SNAPSHOT_MAGIC,
  TABLE_ENTRIES_PER_PAGE,
  TABLE_ENTRY_SIZE,
  TABLE_PAGE_HEADER,
  TABLE_PAGE_MAGIC,
  TABLE_PAGE_SIZE,
  alignUp,
  blockCount,
} from './constants.js';
import { zlibCrc32 } from './crc.js';
import { PageCache } from './page-cache.js';
import { type ParentRef, type SnapshotHeaderFields, checkNewGeometry, decodeSnapshotHeader, encodeSnapshotHeader } from './header.js';

/** One decoded table page: kinds, offsets and stored lengths of up to 1024 blocks. */
export interface TablePage {
  readonly index: number;
  readonly kinds: Uint8Array;
  readonly offsets: Float64Array;
  readonly lengths: Uint32Array;
}

const MAX_CACHED_PAGES = 4096;
const MAX_CACHED_BLOCKS = 32;
const LZ4_PREFIX = 4;

export class SnapshotFile {
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

  /** Blocks covered by table page `index` (the last page may cover fewer than 1024). */
  blocksInPage(index: number): number {
    return Math.min(TABLE_ENTRIES_PER_PAGE, this.blocks - index * TABLE_ENTRIES_PER_PAGE);
  }

  /**
   * What the directory says of table page `index`: every block absent, every block zero (no page
   * is stored for either), or a stored page.
   */
  pageKind(index: number): 'absent' | 'zero' | 'stored' {
    const at = index * DIR_ENTRY_SIZE;
    if (this.directory.readBigUInt64LE(at) !== 0n) return 'stored';
    const blocks = this.directory.readUInt32LE(at + 12);
    if (blocks === 0) return 'absent';
    if (blocks === this.blocksInPage(index) && this.directory.readUInt32LE(at + 8) === 0) return 'zero';
    throw this.damaged(`the directory entry of table page ${index} is impossible`, index * TABLE_ENTRIES_PER_PAGE);
  }

  /** Whether the layer has any block of table page `index` (false: all absent, read the parent). */
  hasPage(index: number): boolean {
    return this.pageKind(index) !== 'absent';
  }

  /** Blocks this layer stores or zeroes, from the directory (no page reads). */
  storedInPage(index: number): number {
    return this.directory.readUInt32LE(index * DIR_ENTRY_SIZE + 12);
  }

  /** Table page `index`, or null when the layer has none of its blocks. */
  page(index: number): TablePage | null | Promise<TablePage | null> {
    if (!this.hasPage(index)) return null;
    return this.pages.fetch(index);
  }

  /** Reads a table page and checks it; the raw bytes come back too (check needs the digests). */
  async readPageBytes(index: number): Promise<Buffer> {
    const at = index * DIR_ENTRY_SIZE;
    const offset = Number(this.directory.readBigUInt64LE(at));
    const crc = this.directory.readUInt32LE(at + 8);
    if (offset < HEADER_SIZE || offset + TABLE_PAGE_SIZE > this.fileSize) {
      throw this.damaged(`block table page ${index} lies outside the file`, index * TABLE_ENTRIES_PER_PAGE);
    }
    const bytes = Buffer.alloc(TABLE_PAGE_SIZE);
    if ((await this.file.read(bytes, offset)) !== TABLE_PAGE_SIZE) {
      throw this.damaged(`block table page ${index} is cut short`, index * TABLE_ENTRIES_PER_PAGE);
    }
    if (zlibCrc32(bytes) !== crc || bytes.readUInt32LE(0) !== TABLE_PAGE_MAGIC || bytes.readUInt32LE(4) !== index) {
      throw this.damaged(`block table page ${index} fails its checksum`, index * TABLE_ENTRIES_PER_PAGE);
    }
    return bytes;
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
      const offset = Number(bytes.readBigUInt64LE(at));
      const length = bytes.readUInt32LE(at + 8);
      const kind = bytes[at + 12];
      const block = first + slot;
      const bad = (why: string) => this.damaged(`the table entry of block ${block} ${why}`, block);
      if (kind === BlockKind.ABSENT || kind === BlockKind.ZERO) {
        if (offset !== 0 || length !== 0) throw bad('has data for a block without any');
        if (kind === BlockKind.ZERO && block >= this.blocks) throw bad('lies past the end');
      } else if (kind === BlockKind.RAW || kind === BlockKind.LZ4) {
        if (block >= this.blocks) throw bad('lies past the end');
        const maxLength = kind === BlockKind.RAW ? bs : bs - 1;
        if (kind === BlockKind.RAW ? length !== bs : length <= LZ4_PREFIX || length > maxLength) {
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

  /** The whole uncompressed block `block`, stored as `kind` at `offset` (`length` bytes). lz4 blocks are cached. */
  async readStoredBlock(block: number, kind: number, offset: number, length: number): Promise<Buffer> {
    const bs = this.header.blockSize;
    if (kind === BlockKind.RAW) {
      const out = Buffer.alloc(bs);
      if ((await this.file.read(out, offset)) !== bs) throw this.damaged(`block ${block} is cut short`, block);
      return out;
    }
    if (kind !== BlockKind.LZ4) return Buffer.alloc(bs);
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
  decompress(stored: Buffer, block: number): Buffer {
    // lz4-napi allocates what the prefix claims: check it before handing the bytes over.
    if (stored.length <= LZ4_PREFIX || stored.readUInt32LE(0) !== this.header.blockSize) {
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

/**
 * The layer digest, fed in block order: SHA-256 over the prefix, the geometry, and for each block
 * the layer holds its index, kind (zero, or data whether compressed or not) and data digest.
 */
export class LayerDigest {
  private readonly hash: Hash = createHash('sha256');
  private readonly record = Buffer.alloc(5);

  constructor(size: number, blockSize: number) {
    const geometry = Buffer.alloc(12);
    geometry.writeBigUInt64LE(BigInt(size), 0);
    geometry.writeUInt32LE(blockSize, 8);
    this.hash.update(LAYER_DIGEST_PREFIX).update(geometry);
  }

  zero(block: number): void {
    this.record.writeUInt32LE(block, 0);
    this.record[4] = BlockKind.ZERO;
    this.hash.update(this.record);
  }

  data(block: number, digest: Buffer): void {
    this.record.writeUInt32LE(block, 0);
    this.record[4] = BlockKind.RAW;
    this.hash.update(this.record).update(digest);
  }

  digest(): Buffer {
    return this.hash.digest();
  }
}

export interface SnapshotWriterOptions {
  size: number;
  blockSize: number;
  parent: ParentRef;
}

/** A block on its way into the layer: hashed at once, compressed on the thread pool. */
interface QueuedBlock {
  block: number;
  /** null: a zero block. */
  data: Buffer | null;
  digest?: Buffer;
  compressed?: Promise<Buffer>;
}

/** Blocks hashed and compressing at once: enough to keep the thread pool busy while this thread hashes. */
const IN_FLIGHT = 16;

/**
 * Writes a sealed layer block by block, in increasing block order, then seals it. Blocks not
 * given are absent (read the parent). A table page whose blocks are all zero is not stored: its
 * directory entry says so.
 */
export class SnapshotWriter {
  private pos = HEADER_SIZE;
  private readonly directory: Buffer;
  private page: Buffer | undefined;
  private pageIndex = -1;
  private pageStored = 0;
  private pageData = 0;
  private lastBlock = -1;
  private storedBlocks = 0;
  private dataBytes = 0;
  private readonly layer: LayerDigest;
  private readonly queue: QueuedBlock[] = [];
  readonly blocks: number;

  private constructor(
    private readonly fs: FileSystem,
    private readonly file: BlockFile,
    private readonly tmpPath: string,
    readonly finalPath: string,
    private readonly options: SnapshotWriterOptions,
  ) {
    this.blocks = blockCount(options.size, options.blockSize);
    this.directory = Buffer.alloc(Math.ceil(this.blocks / TABLE_ENTRIES_PER_PAGE) * DIR_ENTRY_SIZE);
    this.layer = new LayerDigest(options.size, options.blockSize);
  }

  static async create(fs: FileSystem, finalPath: string, options: SnapshotWriterOptions): Promise<SnapshotWriter> {
    const abs = path.resolve(finalPath);
    checkNewGeometry(options.size, options.blockSize, abs);
    if (await fs.exists(abs)) {
      throw new CowdiskError(ErrorCode.EXISTS, `${abs} already exists; choose another name or remove it first.`, { path: abs });
    }
    const tmpPath = `${abs}.partial-${process.pid}`;
    const file = await fs.create(tmpPath, { exclusive: false });
    return new SnapshotWriter(fs, file, tmpPath, abs, options);
  }

  /**
   * Adds block `block`: its bytes (exactly one block; the last block zero-padded) or null for a
   * zero block. The bytes are copied: the caller may reuse its buffer when this returns.
   */
  async add(block: number, data: Buffer | null): Promise<void> {
    if (block <= this.lastBlock || block >= this.blocks) {
      throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `snapshot blocks must be added once each, in order (got ${block} after ${this.lastBlock}).`);
    }
    const bs = this.options.blockSize;
    if (data !== null && data.length !== bs) {
      throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `block ${block} has ${data.length} bytes, not ${bs}.`);
    }
    this.lastBlock = block;
    if (data === null) {
      this.queue.push({ block, data: null });
    } else {
      const copy = Buffer.from(data);
      // lz4-napi's compressSync leaks its output whenever it is large (measured: ~125 KiB per call
      // on incompressible blocks, in every release up to 2.10.0); the asynchronous compress does
      // not, and runs on the thread pool while this thread computes the digest.
      const compressed = compress(copy);
      compressed.catch(() => undefined);
      this.queue.push({ block, data: copy, compressed, digest: createHash('sha256').update(copy).digest() });
    }
    if (this.queue.length >= IN_FLIGHT) await this.store(this.queue.shift() as QueuedBlock);
  }

  /** Writes one queued block and its table entry (blocks leave the queue in order). */
  private async store(item: QueuedBlock): Promise<void> {
    const { block } = item;
    const pageIndex = Math.floor(block / TABLE_ENTRIES_PER_PAGE);
    if (pageIndex !== this.pageIndex) await this.startPage(pageIndex);
    const entry = TABLE_PAGE_HEADER + (block % TABLE_ENTRIES_PER_PAGE) * TABLE_ENTRY_SIZE;
    const page = this.page as Buffer;
    this.pageStored++;
    if (item.data === null) {
      page[entry + 12] = BlockKind.ZERO;
      this.layer.zero(block);
      return;
    }
    const bs = this.options.blockSize;
    const compressed = await (item.compressed as Promise<Buffer>);
    const useLz4 = compressed.length <= bs * (1 - LZ4_MIN_SAVING);
    const stored = useLz4 ? compressed : item.data;
    if (!useLz4) this.pos = alignUp(this.pos, RAW_BLOCK_ALIGN);
    await this.file.write(stored, this.pos);
    page.writeBigUInt64LE(BigInt(this.pos), entry);
    page.writeUInt32LE(stored.length, entry + 8);
    page[entry + 12] = useLz4 ? BlockKind.LZ4 : BlockKind.RAW;
    (item.digest as Buffer).copy(page, entry + 16);
    this.pos += stored.length;
    this.storedBlocks++;
    this.pageData++;
    this.dataBytes += stored.length;
    this.layer.data(block, item.digest as Buffer);
  }

  private async startPage(index: number): Promise<void> {
    await this.finishPage();
    this.pageIndex = index;
    this.pageStored = 0;
    this.pageData = 0;
    this.page = Buffer.alloc(TABLE_PAGE_SIZE);
    this.page.writeUInt32LE(TABLE_PAGE_MAGIC, 0);
    this.page.writeUInt32LE(index, 4);
  }

  private async finishPage(): Promise<void> {
    if (!this.page || this.pageStored === 0) return;
    const at = this.pageIndex * DIR_ENTRY_SIZE;
    const inPage = Math.min(TABLE_ENTRIES_PER_PAGE, this.blocks - this.pageIndex * TABLE_ENTRIES_PER_PAGE);
    this.directory.writeUInt32LE(this.pageStored, at + 12);
    if (this.pageData === 0 && this.pageStored === inPage) {
      // Every block of the page is zero: the directory entry alone says so (offset 0, CRC 0).
      this.page = undefined;
      return;
    }
    this.directory.writeBigUInt64LE(BigInt(this.pos), at);
    this.directory.writeUInt32LE(zlibCrc32(this.page), at + 8);
    await this.file.write(this.page, this.pos);
    this.pos += this.page.length;
    this.page = undefined;
  }

  /** Writes the tables and header, syncs, and renames the layer into place (read-only). */
  async finish(): Promise<SnapshotHeaderFields> {
    while (this.queue.length > 0) await this.store(this.queue.shift() as QueuedBlock);
    await this.finishPage();
    const header: SnapshotHeaderFields = {
      size: this.options.size,
      blockSize: this.options.blockSize,
      dirPages: this.directory.length / DIR_ENTRY_SIZE,
      dirOffset: this.pos,
      dirCrc: zlibCrc32(this.directory),
      storedBlocks: this.storedBlocks,
      dataBytes: this.dataBytes,
      layerDigest: this.layer.digest(),
      createdNs: BigInt(Date.now()) * 1_000_000n,
      parent: this.options.parent,
    };
    await this.file.write(this.directory, this.pos);
    await this.file.write(encodeSnapshotHeader(header), 0);
    await this.file.sync();
    await this.file.close();
    await this.fs.chmod(this.tmpPath, 0o444);
    try {
      await this.fs.publish(this.tmpPath, this.finalPath);
    } catch (err) {
      if (!isCowdiskError(err, ErrorCode.EXISTS)) throw err;
      await this.fs.unlink(this.tmpPath);
      throw new CowdiskError(ErrorCode.EXISTS, `${this.finalPath} appeared while the layer was written; the new layer was discarded.`, {
        path: this.finalPath,
      });
    }
    await this.fs.syncDir(path.dirname(this.finalPath));
    return header;
  }

  /** Gives up: removes the temporary file. */
  async abort(): Promise<void> {
    this.queue.length = 0;
    await this.file.close().catch(() => undefined);
    await this.fs.unlink(this.tmpPath).catch(() => undefined);
  }
}
