/**
 * Writing a sealed snapshot layer, format version 2 (docs/FORMAT.md): block by block, in
 * increasing block order, then sealed.
 *
 * Blocks are gathered into batches of about 1 MiB; each batch is hashed and cut into compressed
 * frames by the frame codec (frames.ts) on the thread pool while this thread goes on reading the
 * next ones, with a few batches in flight so both cores work; batches are written in order as
 * they come back, adjacent pieces in one write. Memory stays bounded: the batches in flight, one
 * table page, the directory.
 *
 * The file is laid out for a reader that can only fetch ranges: header and directory first, the
 * data, the table pages last. The directory's size follows from the geometry, so its place is
 * kept while the data is written. Table pages fill as the data goes, but their place is only
 * known when the data ends, and holding them all could take a gigabyte for a large disk: each
 * finished page goes to a side file beside the layer and is copied behind the data at the end
 * (0.12% of the data at 64 KiB blocks). The header, the directory's SHA-256 in it, comes last.
 *
 * Writing goes to a temporary file published under the layer's name after everything is synced
 * (io/new-file.ts), so a crash leaves either no layer or a whole one; with `replace` it takes the
 * name of a layer that is there (`upgrade`).
 */
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';
import type { BlockFile, FileSystem } from '../io/file.js';
import { NewFile } from '../io/new-file.js';
import {
  BlockKind,
  DIGEST_SIZE,
  HEADER_SIZE,
  RAW_BLOCK_ALIGN,
  SEALED_MODE,
  TABLE_ENTRIES_PER_PAGE,
  TABLE_PAGE_HEADER,
  TablePageField,
  V2DirEntryField,
  V2TableEntryField,
  V2_DIR_ENTRY_SIZE,
  V2_TABLE_PAGE_MAGIC,
  alignUp,
  blockCount,
  framesPerBlock,
  v2DataOffset,
  v2TableEntrySize,
  v2TablePageSize,
} from './constants.js';
import { type FrameCodec, type SealedBatch, frameCodec, storedRaw } from './frames.js';
import { type ParentRef, type SnapshotV2HeaderFields, checkNewGeometry, encodeSnapshotV2Header } from './header.js';
import { LayerDigest } from './layer-digest.js';

export interface SnapshotV2WriterOptions {
  size: number;
  blockSize: number;
  parent: ParentRef;
  /** Publish over a file of that name (an atomic rewrite) instead of refusing it. */
  replace?: boolean;
  /** The frame codec (default: the addon's when it is built). */
  codec?: FrameCodec;
  /** The creation time to record (default now): `upgrade` keeps the layer's. */
  createdNs?: bigint;
}

/** A batch of consecutive `add`s: their blocks, and the data of those that are not zero, end to end. */
interface Batch {
  blocks: number[];
  /** Per entry: the block's place in `data`, or -1 for a zero block. */
  slots: number[];
  data: Buffer;
  count: number;
  sealed?: Promise<SealedBatch | null>;
}

const BATCH_BYTES = 1024 * 1024;
/** Zero blocks carry no data, so a batch of them is cut by entries instead. */
const BATCH_ENTRIES = 4096;
/** Batches sealing at once: enough for two cores, each batch's memory times this is the bound. */
const IN_FLIGHT = 4;
const COPY_CHUNK = 4 * 1024 * 1024;
/** Data written between background syncs: the disk's share of the work overlaps the CPU's. */
const SYNC_EVERY = 64 * 1024 * 1024;

export class SnapshotV2Writer {
  readonly blocks: number;
  private readonly directory: Buffer;
  private readonly layer: LayerDigest;
  private readonly perBatch: number;
  private readonly entrySize: number;
  private readonly pageSize: number;
  private readonly codec: FrameCodec;
  private pos: number;
  private lastBlock = -1;
  private storedBlocks = 0;
  private dataBytes = 0;
  private batch: Batch;
  private readonly inFlight: Batch[] = [];
  private page: Buffer | undefined;
  private pageIndex = -1;
  private pageHeld = 0;
  private pageData = 0;
  /** Table pages written to the side file so far, in page order (their index). */
  private readonly pagesWritten: number[] = [];
  private tables: BlockFile | undefined;
  /** A write not yet issued, grown while the next piece continues it in memory and in the file. */
  private run: { buf: Buffer; start: number; end: number; at: number } | null = null;
  /** Bytes written since the last background sync started, and that sync while it runs. */
  private unsynced = 0;
  private syncing: Promise<void> | null = null;
  private syncFailure: unknown;

  private constructor(
    private readonly out: NewFile,
    private readonly fs: FileSystem,
    private readonly options: SnapshotV2WriterOptions,
  ) {
    const { size, blockSize } = options;
    this.blocks = blockCount(size, blockSize);
    const dirPages = Math.ceil(this.blocks / TABLE_ENTRIES_PER_PAGE);
    this.directory = Buffer.alloc(dirPages * V2_DIR_ENTRY_SIZE);
    this.pos = v2DataOffset(dirPages);
    this.layer = new LayerDigest(size, blockSize);
    this.perBatch = Math.max(1, Math.floor(BATCH_BYTES / blockSize));
    this.entrySize = v2TableEntrySize(blockSize);
    this.pageSize = v2TablePageSize(blockSize);
    this.codec = options.codec ?? frameCodec();
    this.batch = this.newBatch();
  }

  static async create(fs: FileSystem, finalPath: string, options: SnapshotV2WriterOptions): Promise<SnapshotV2Writer> {
    checkNewGeometry(options.size, options.blockSize, path.resolve(finalPath));
    return new SnapshotV2Writer(await NewFile.create(fs, finalPath, { replace: options.replace }), fs, options);
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
    if (data !== null && data.length !== bs) throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `block ${block} has ${data.length} bytes, not ${bs}.`);
    this.lastBlock = block;
    const b = this.batch;
    b.blocks.push(block);
    if (data === null) {
      b.slots.push(-1);
    } else {
      data.copy(b.data, b.count * bs);
      b.slots.push(b.count++);
    }
    if (b.count === this.perBatch || b.blocks.length === BATCH_ENTRIES) await this.submit();
  }

  private newBatch(): Batch {
    return { blocks: [], slots: [], data: Buffer.allocUnsafe(this.perBatch * this.options.blockSize), count: 0 };
  }

  /** Sends the batch to the codec and, with too many in flight, writes out the oldest. */
  private async submit(): Promise<void> {
    const b = this.batch;
    if (b.blocks.length === 0) return;
    b.sealed = b.count > 0 ? this.codec.seal(b.data, b.count, this.options.blockSize) : Promise.resolve(null);
    // Awaited in order later; an early failure must not surface as an unhandled rejection meanwhile.
    b.sealed.catch(() => undefined);
    this.inFlight.push(b);
    this.batch = this.newBatch();
    while (this.inFlight.length > IN_FLIGHT) await this.store(this.inFlight.shift() as Batch);
  }

  /** Writes a sealed batch's blocks and their table entries, in block order. */
  private async store(b: Batch): Promise<void> {
    const sealed = await b.sealed;
    const bs = this.options.blockSize;
    const frames = framesPerBlock(bs);
    let packedAt = 0;
    for (let e = 0; e < b.blocks.length; e++) {
      const block = b.blocks[e];
      const pageIndex = Math.floor(block / TABLE_ENTRIES_PER_PAGE);
      if (pageIndex !== this.pageIndex) await this.startPage(pageIndex);
      const page = this.page as Buffer;
      const entry = TABLE_PAGE_HEADER + (block % TABLE_ENTRIES_PER_PAGE) * this.entrySize;
      this.pageHeld++;
      const slot = b.slots[e];
      if (slot === -1 || !sealed) {
        page[entry + V2TableEntryField.KIND] = BlockKind.ZERO;
        this.layer.zero(block);
        continue;
      }
      const length = sealed.lengths[slot];
      const digest = sealed.digests.subarray(slot * DIGEST_SIZE, (slot + 1) * DIGEST_SIZE);
      if (storedRaw(sealed, slot, bs)) {
        // Aligned, so that a read of a raw block is page-aligned in the file.
        this.pos = alignUp(this.pos, RAW_BLOCK_ALIGN);
        await this.queueWrite(b.data, slot * bs, (slot + 1) * bs);
        page[entry + V2TableEntryField.KIND] = BlockKind.RAW;
      } else {
        await this.queueWrite(sealed.packed, packedAt, packedAt + length);
        packedAt += length;
        page[entry + V2TableEntryField.KIND] = BlockKind.LZ4;
        for (let f = 0; f < frames; f++) page.writeUInt16LE(sealed.codes[slot * frames + f], entry + V2TableEntryField.FRAMES + 2 * f);
      }
      page.writeBigUInt64LE(BigInt(this.pos), entry + V2TableEntryField.OFFSET);
      page.writeUInt32LE(length, entry + V2TableEntryField.STORED_LENGTH);
      digest.copy(page, entry + V2TableEntryField.DIGEST);
      this.pos += length;
      this.storedBlocks++;
      this.pageData++;
      this.dataBytes += length;
      this.layer.data(block, digest);
    }
    await this.flushWrite();
  }

  /** Writes buf[start, end) at the data position, joined to the write before it when both continue each other. */
  private async queueWrite(buf: Buffer, start: number, end: number): Promise<void> {
    const r = this.run;
    if (r && r.buf === buf && r.end === start && r.at + (r.end - r.start) === this.pos) {
      r.end = end;
      return;
    }
    await this.flushWrite();
    this.run = { buf, start, end, at: this.pos };
  }

  private async flushWrite(): Promise<void> {
    const r = this.run;
    this.run = null;
    if (!r || r.end === r.start) return;
    await this.out.file.write(r.buf.subarray(r.start, r.end), r.at);
    this.unsynced += r.end - r.start;
    if (this.unsynced >= SYNC_EVERY && !this.syncing) {
      // The disk writes what is written so far while the next batches are sealed, instead of all
      // of it in the final sync (a layer must be synced before it is published anyway).
      this.unsynced = 0;
      this.syncing = this.out.file.sync().then(
        () => {
          this.syncing = null;
        },
        (err: unknown) => {
          this.syncing = null;
          this.syncFailure = err;
        },
      );
    }
    if (this.syncFailure) throw this.syncFailure;
  }

  private async startPage(index: number): Promise<void> {
    await this.finishPage();
    this.pageIndex = index;
    this.pageHeld = 0;
    this.pageData = 0;
    this.page = Buffer.alloc(this.pageSize);
    this.page.writeUInt32LE(V2_TABLE_PAGE_MAGIC, TablePageField.MAGIC);
    this.page.writeUInt32LE(index, TablePageField.PAGE_INDEX);
  }

  /** Records the finished page in the directory and sends it to the side file (a page of zeros only needs its entry). */
  private async finishPage(): Promise<void> {
    const page = this.page;
    this.page = undefined;
    if (!page || this.pageHeld === 0) return;
    const at = this.pageIndex * V2_DIR_ENTRY_SIZE;
    const inPage = Math.min(TABLE_ENTRIES_PER_PAGE, this.blocks - this.pageIndex * TABLE_ENTRIES_PER_PAGE);
    this.directory.writeUInt32LE(this.pageHeld, at + V2DirEntryField.BLOCKS);
    if (this.pageData === 0 && this.pageHeld === inPage) return;
    createHash('sha256').update(page).digest().copy(this.directory, at + V2DirEntryField.PAGE_SHA256);
    this.tables ??= await this.fs.create(this.tablesPath, { exclusive: false });
    await this.tables.write(page, this.pagesWritten.length * this.pageSize);
    this.pagesWritten.push(this.pageIndex);
  }

  private get tablesPath(): string {
    return `${this.out.tmpPath}.tables`;
  }

  /**
   * Writes the tables, directory and header, syncs, and publishes the layer (read-only).
   * `beforePublish` sees the header first and may refuse it by throwing (the layer is then not
   * published; `abort` removes it).
   */
  async finish(beforePublish?: (header: SnapshotV2HeaderFields) => void): Promise<SnapshotV2HeaderFields> {
    await this.submit();
    while (this.inFlight.length > 0) await this.store(this.inFlight.shift() as Batch);
    await this.finishPage();
    // A background sync that failed fails the layer here (its error is the file system's).
    await this.syncing;
    if (this.syncFailure) throw this.syncFailure;
    const tableOffset = alignUp(this.pos, RAW_BLOCK_ALIGN);
    const fileLength = tableOffset + this.pagesWritten.length * this.pageSize;
    for (const [k, index] of this.pagesWritten.entries()) {
      this.directory.writeBigUInt64LE(BigInt(tableOffset + k * this.pageSize), index * V2_DIR_ENTRY_SIZE + V2DirEntryField.PAGE_OFFSET);
    }
    await this.copyTables(tableOffset, fileLength - tableOffset);
    const header: SnapshotV2HeaderFields = {
      size: this.options.size,
      blockSize: this.options.blockSize,
      dirPages: this.directory.length / V2_DIR_ENTRY_SIZE,
      tableOffset,
      fileLength,
      dirSha256: createHash('sha256').update(this.directory).digest(),
      storedBlocks: this.storedBlocks,
      dataBytes: this.dataBytes,
      layerDigest: this.layer.digest(),
      createdNs: this.options.createdNs ?? BigInt(Date.now()) * 1_000_000n,
      parent: this.options.parent,
    };
    beforePublish?.(header);
    const file = this.out.file;
    await file.truncate(fileLength);
    await file.write(this.directory, HEADER_SIZE);
    await file.write(encodeSnapshotV2Header(header), 0);
    await this.out.publish({ mode: SEALED_MODE });
    return header;
  }

  /** Copies the side file's pages behind the data, then removes it. */
  private async copyTables(at: number, length: number): Promise<void> {
    const tables = this.tables;
    if (!tables) return;
    const buf = Buffer.allocUnsafe(Math.min(length, Math.max(COPY_CHUNK, this.pageSize)));
    for (let done = 0; done < length; ) {
      const chunk = buf.subarray(0, Math.min(buf.length, length - done));
      if ((await tables.read(chunk, done)) !== chunk.length) {
        throw new CowdiskError(ErrorCode.IO, `${this.tablesPath}: the table pages written there read back short.`, { path: this.tablesPath });
      }
      await this.out.file.write(chunk, at + done);
      done += chunk.length;
    }
    await this.dropTables();
  }

  private async dropTables(): Promise<void> {
    const tables = this.tables;
    this.tables = undefined;
    if (!tables) return;
    await tables.close().catch(() => undefined);
    await this.fs.unlink(this.tablesPath).catch(() => undefined);
  }

  /** Gives up: removes the temporary files. */
  async abort(): Promise<void> {
    this.inFlight.length = 0;
    await this.dropTables();
    await this.out.discard();
  }

  /** Where the layer is published. */
  get finalPath(): string {
    return this.out.path;
  }
}
