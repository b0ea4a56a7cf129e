/**
 * Writing a sealed snapshot layer (format version 1): block by block, in increasing block order,
 * then sealed. Blocks are hashed at once and lz4-compressed on the thread pool while this thread
 * goes on; the table pages and the directory follow the data, and the header is written last.
 *
 * Writing goes to a temporary file renamed into place after everything is synced, so a crash
 * leaves either no layer or a whole one.
 */
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import { compress } from 'lz4-napi';
import { CowdiskError, ErrorCode } from '../errors.js';
import type { BlockFile, FileSystem } from '../io/file.js';
import { NewFile } from '../io/new-file.js';
import {
  BlockKind,
  DIR_ENTRY_SIZE,
  DirEntryField,
  HEADER_SIZE,
  LZ4_MIN_SAVING,
  RAW_BLOCK_ALIGN,
  SEALED_MODE,
  TABLE_ENTRIES_PER_PAGE,
  TABLE_ENTRY_SIZE,
  TABLE_PAGE_HEADER,
  TABLE_PAGE_MAGIC,
  TABLE_PAGE_SIZE,
  TableEntryField,
  TablePageField,
  alignUp,
  blockCount,
} from './constants.js';
import { zlibCrc32 } from './crc.js';
import { type ParentRef, type SnapshotHeaderFields, checkNewGeometry, encodeSnapshotHeader } from './header.js';
import { LayerDigest } from './layer-digest.js';

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
    private readonly out: NewFile,
    private readonly options: SnapshotWriterOptions,
  ) {
    this.blocks = blockCount(options.size, options.blockSize);
    this.directory = Buffer.alloc(Math.ceil(this.blocks / TABLE_ENTRIES_PER_PAGE) * DIR_ENTRY_SIZE);
    this.layer = new LayerDigest(options.size, options.blockSize);
  }

  static async create(fs: FileSystem, finalPath: string, options: SnapshotWriterOptions): Promise<SnapshotWriter> {
    checkNewGeometry(options.size, options.blockSize, path.resolve(finalPath));
    return new SnapshotWriter(await NewFile.create(fs, finalPath), options);
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
      page[entry + TableEntryField.KIND] = BlockKind.ZERO;
      this.layer.zero(block);
      return;
    }
    const bs = this.options.blockSize;
    const compressed = await (item.compressed as Promise<Buffer>);
    const useLz4 = compressed.length <= bs * (1 - LZ4_MIN_SAVING);
    const stored = useLz4 ? compressed : item.data;
    if (!useLz4) this.pos = alignUp(this.pos, RAW_BLOCK_ALIGN);
    await this.file.write(stored, this.pos);
    page.writeBigUInt64LE(BigInt(this.pos), entry + TableEntryField.OFFSET);
    page.writeUInt32LE(stored.length, entry + TableEntryField.STORED_LENGTH);
    page[entry + TableEntryField.KIND] = useLz4 ? BlockKind.LZ4 : BlockKind.RAW;
    (item.digest as Buffer).copy(page, entry + TableEntryField.DIGEST);
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
    this.page.writeUInt32LE(TABLE_PAGE_MAGIC, TablePageField.MAGIC);
    this.page.writeUInt32LE(index, TablePageField.PAGE_INDEX);
  }

  private async finishPage(): Promise<void> {
    if (!this.page || this.pageStored === 0) return;
    const at = this.pageIndex * DIR_ENTRY_SIZE;
    const inPage = Math.min(TABLE_ENTRIES_PER_PAGE, this.blocks - this.pageIndex * TABLE_ENTRIES_PER_PAGE);
    this.directory.writeUInt32LE(this.pageStored, at + DirEntryField.BLOCKS);
    if (this.pageData === 0 && this.pageStored === inPage) {
      // Every block of the page is zero: the directory entry alone says so (offset 0, CRC 0).
      this.page = undefined;
      return;
    }
    this.directory.writeBigUInt64LE(BigInt(this.pos), at + DirEntryField.PAGE_OFFSET);
    this.directory.writeUInt32LE(zlibCrc32(this.page), at + DirEntryField.PAGE_CRC);
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
    await this.out.publish({ mode: SEALED_MODE });
    return header;
  }

  /** Gives up: removes the temporary file. */
  async abort(): Promise<void> {
    this.queue.length = 0;
    await this.out.discard();
  }

  /** Where the layer is published. */
  get finalPath(): string {
    return this.out.path;
  }

  private get file(): BlockFile {
    return this.out.file;
  }
}
