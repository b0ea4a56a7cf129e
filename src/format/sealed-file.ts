/**
 * What every reader of a sealed layer file offers, whatever its format version: the contract the
 * engine's snapshot layer (image/snapshot-layer.ts) is written against, so a new version is a new
 * reader and nothing above format/ changes.
 *
 * Two halves:
 * - Reading, from a file that is all there: the kind of each block, the disk's bytes, every entry
 *   with its digest, in block order.
 * - Range access, for a reader whose file is a sparse local copy filled from somewhere that can
 *   only hand out byte ranges (an OCI registry, through the cache of image/remote-layer.ts):
 *   where the pieces lie, and a check of each piece before it is used. The header and the
 *   directory are read whole at open (`directoryRange` says where the directory is); a table page
 *   must be present before a block it describes is asked about (`tableRanges`, `checkTable`); a
 *   block's stored bytes before they are read (`storedRange`, `checkStored`). A check throws
 *   CORRUPT naming the file and block: a byte that failed its check is never handed out.
 */
import type { CowdiskError } from '../errors.js';
import type { ParentRef } from './header.js';

/** A run of bytes in the file. */
export interface FileRange {
  offset: number;
  length: number;
}

/** The header fields every version has. */
export interface SealedHeader {
  size: number;
  blockSize: number;
  /** The layer's identity: the same function of the content in every version. */
  layerDigest: Buffer;
  createdNs: bigint;
  parent: ParentRef;
  /** Blocks with stored data. */
  storedBlocks: number;
  /** Bytes of stored block data, after compression. */
  dataBytes: number;
}

export interface SealedFile {
  readonly path: string;
  /** The file's format version. */
  readonly version: number;
  readonly header: SealedHeader;
  /** Blocks in the disk. */
  readonly blocks: number;

  /** Blocks this layer holds (stored or zero), from the directory alone. */
  heldBlocks(): number;
  /** The BlockKind of each block of [first, first + count), or null when the layer has none of them. */
  kinds(first: number, count: number): Promise<Uint8Array | null>;
  /** Fills `buf` with the disk's bytes at `offset`, in blocks this layer stores or zeroes. */
  read(buf: Buffer, offset: number): Promise<void>;
  /** read, at once, when its table pages and stored bytes are in memory; false otherwise (BlockFile.readNow). */
  readNow(buf: Buffer, offset: number): boolean;
  /** The whole uncompressed block (zeros for a zero or absent block). */
  readBlock(block: number): Promise<Buffer>;
  /**
   * Every block the layer holds, in block order, with its BlockKind and, for stored blocks, the
   * SHA-256 its bytes must have; a table that cannot be read goes to `onError` and the walk goes on.
   */
  forEachEntry(fn: (block: number, kind: number, digest: Buffer | null) => void | Promise<void>, onError: (err: CowdiskError) => void): Promise<void>;

  /** Where the directory lies (read whole at open, right after the header). */
  directoryRange(): FileRange;
  /** The table pages stored in the file for blocks [first, first + count): their index and range. */
  tableRanges(first: number, count: number): Array<FileRange & { index: number }>;
  /** Throws CORRUPT unless `bytes` are table page `index` as the directory describes it. */
  checkTable(index: number, bytes: Buffer): void;
  /** Where block `block`'s stored bytes lie, or null for a block with none; its table page must be present. */
  storedRange(block: number): Promise<FileRange | null>;
  /** Throws CORRUPT unless `bytes` (read from `storedRange`) are block `block` as its digest names it. */
  checkStored(block: number, bytes: Buffer): Promise<void>;

  close(): Promise<void>;
}
