/**
 * The on-disk constants of every cowdisk file, in one place that both readers and writers use.
 * docs/FORMAT.md is the grammar these numbers belong to; change one only together with the other
 * (and with FORMAT_VERSION when a reader of the old version would misread the new file).
 *
 * All integers are little endian. Metadata (headers, state-map pages, block-table pages and the
 * block-table directory) carries a CRC-32 (IEEE, as zlib.crc32); block data carries SHA-256.
 */

/** The version of every overlay, and of a snapshot layer written by format version 1's writer. */
export const FORMAT_VERSION = 1;
/** A snapshot layer of independently decodable frames (docs/FORMAT.md, "Snapshot layer, version 2"). */
export const SNAPSHOT_V2 = 2;
/** The snapshot versions this build reads; it writes SNAPSHOT_V2. */
export const SNAPSHOT_VERSIONS: readonly number[] = [FORMAT_VERSION, SNAPSHOT_V2];

/** "COWDISKO": a writable overlay. */
export const OVERLAY_MAGIC = Buffer.from('COWDISKO', 'latin1');
/** "COWDISKS": a sealed snapshot layer. */
export const SNAPSHOT_MAGIC = Buffer.from('COWDISKS', 'latin1');
export const MAGIC_LENGTH = 8;

/** Every header occupies one 4 KiB slot; its last four bytes are the CRC-32 of the rest. */
export const HEADER_SIZE = 4096;
export const HEADER_CRC_OFFSET = HEADER_SIZE - 4;

export const MIN_BLOCK_SIZE = 4096;
export const MAX_BLOCK_SIZE = 2 * 1024 * 1024;
export const DEFAULT_BLOCK_SIZE = 64 * 1024;
/** Block indexes stay below 2^31 so they are safe in JavaScript bit operations. */
export const MAX_BLOCKS = 2 ** 31;

/** Parent reference, shared by both headers at this offset. */
export const PARENT_REF_OFFSET = 128;
export const PARENT_PATH_OFFSET = 256;
export const MAX_PARENT_PATH = 2048;

/** Parent reference fields, from PARENT_REF_OFFSET (see docs/FORMAT.md, "Parent reference"). */
export const ParentRefField = {
  KIND: 0,
  PATH_LENGTH: 4,
  SIZE: 8,
  RAW_INODE: 16,
  RAW_MTIME_NS: 24,
  DIGEST: 32,
} as const;

/** A SHA-256 digest: a layer's identity, a block's content. */
export const DIGEST_SIZE = 32;
/** An overlay's uuid. */
export const UUID_SIZE = 16;

export const ParentKind = {
  NONE: 0,
  RAW: 1,
  SNAPSHOT: 2,
} as const;

/** Overlay header field offsets (see docs/FORMAT.md, "Overlay"). */
export const OverlayHeader = {
  MAGIC: 0,
  VERSION: 8,
  INCOMPAT: 12,
  GENERATION: 16,
  FLAGS: 24,
  SUB_BLOCKS: 28,
  VIRTUAL_SIZE: 32,
  BLOCK_SIZE: 40,
  MAP_PAGES: 44,
  MAP_OFFSET: 48,
  DATA_OFFSET: 56,
  UUID: 64,
  CREATED_NS: 80,
  ENTRIES_PER_PAGE: 88,
} as const;

export const OverlayFlag = {
  /** Set on the first change after an open, cleared by a clean close. */
  DIRTY: 1,
} as const;
/** Every flag this version knows; any other bit set makes the header corrupt. */
export const KNOWN_OVERLAY_FLAGS = OverlayFlag.DIRTY;

/** The overlay keeps two header slots and writes the older one, so a torn write never loses both. */
export const OVERLAY_HEADER_SLOTS = 2;
/**
 * The highest header generation a reader accepts (2^53 - 1: exact as a JavaScript number), and so
 * the highest a writer may write; a writer about to pass it renumbers (OverlayFile.writeHeader).
 */
export const MAX_GENERATION = BigInt(Number.MAX_SAFE_INTEGER);
/** The state map starts right after the header slots. */
export const OVERLAY_MAP_OFFSET = OVERLAY_HEADER_SLOTS * HEADER_SIZE;

/**
 * State map: 4 KiB pages, each written to alternating slots (two per page) with a generation,
 * so a torn page write leaves the previous version readable.
 */
export const MAP_PAGE_SIZE = 4096;
export const MAP_PAGE_MAGIC = 0x504d4443; // "CDMP"
export const MAP_PAGE_HEADER = 16;
/** State-map page header fields; the CRC covers everything from PAGE_INDEX to the end of the page. */
export const MapPageField = {
  MAGIC: 0,
  CRC: 4,
  PAGE_INDEX: 8,
  GENERATION: 12,
} as const;
/** Each entry is two 32-bit masks: sub-blocks present here, sub-blocks reading as zero. */
export const MAP_ENTRY_SIZE = 8;
export const MAP_ENTRIES_PER_PAGE = (MAP_PAGE_SIZE - MAP_PAGE_HEADER) / MAP_ENTRY_SIZE; // 510
export const MAP_SLOT_STRIDE = 2 * MAP_PAGE_SIZE;

/** Sub-blocks per block: the copy-on-write granularity inside a block (a power of two, 1..32). */
export const MAX_SUB_BLOCKS = 32;
/** Sub-blocks are never smaller than this, whatever the block size. */
export const MIN_SUB_BLOCK_SIZE = 4096;

/** The default: 4 KiB sub-blocks (the page size every client writes in), at most 32 per block. */
export function defaultSubBlocks(blockSize: number): number {
  return Math.max(1, Math.min(MAX_SUB_BLOCKS, blockSize / MIN_SUB_BLOCK_SIZE));
}

/** Snapshot header field offsets (see docs/FORMAT.md, "Snapshot layer"). */
export const SnapshotHeader = {
  MAGIC: 0,
  VERSION: 8,
  INCOMPAT: 12,
  VIRTUAL_SIZE: 16,
  BLOCK_SIZE: 24,
  DIR_PAGES: 28,
  DIR_OFFSET: 32,
  DIR_CRC: 40,
  STORED_BLOCKS: 44,
  LAYER_DIGEST: 48,
  CREATED_NS: 80,
  DATA_BYTES: 88,
  ENTRIES_PER_PAGE: 96,
} as const;

/** Block table: pages of 1024 entries of 48 bytes after a 16-byte page header. */
export const TABLE_ENTRIES_PER_PAGE = 1024;
export const TABLE_PAGE_MAGIC = 0x50534443; // "CDSP"
export const TABLE_PAGE_HEADER = 16;
export const TABLE_ENTRY_SIZE = 48;
export const TABLE_PAGE_SIZE = TABLE_PAGE_HEADER + TABLE_ENTRIES_PER_PAGE * TABLE_ENTRY_SIZE;
/** Block-table page header fields (the rest of the 16 bytes is reserved). */
export const TablePageField = {
  MAGIC: 0,
  PAGE_INDEX: 4,
} as const;
/** Block-table entry fields, from the entry's start. */
export const TableEntryField = {
  OFFSET: 0,
  STORED_LENGTH: 8,
  KIND: 12,
  DIGEST: 16,
} as const;
/** Directory entry: page offset (0 = no page stored), page CRC, blocks the layer has in the page. */
export const DIR_ENTRY_SIZE = 16;
export const DirEntryField = {
  PAGE_OFFSET: 0,
  PAGE_CRC: 8,
  BLOCKS: 12,
} as const;

export const BlockKind = {
  /** Not in this layer: read the parent. */
  ABSENT: 0,
  /** Reads as zeros (hides the parent); nothing stored. */
  ZERO: 1,
  /** Stored as is: `stored_len` == block size. */
  RAW: 2,
  /** Stored lz4-compressed (lz4 block format with a 4-byte little-endian size prefix). */
  LZ4: 3,
} as const;

/**
 * Snapshot header fields of version 2 that version 1 does not have (the rest are SnapshotHeader's,
 * at the same offsets; version 2 has no DIR_CRC: the directory's SHA-256 guards it).
 */
export const SnapshotV2Header = {
  FRAME_SIZE: 40,
  TABLE_OFFSET: 104,
  FILE_LENGTH: 112,
  DIR_SHA256: 2304,
} as const;

/**
 * Version 2 splits every stored block into frames of this size, each compressed on its own, so a
 * 4 KiB read decodes 4 KiB. Block sizes are powers of two from 4 KiB, so a block is whole frames.
 */
export const FRAME_SIZE = 4096;
/**
 * A frame's code in its block's table entry (u16): 0 a zero frame (nothing stored), FRAME_SIZE a
 * frame stored raw, anything between the length of its lz4 block (no size prefix: a frame always
 * decodes to FRAME_SIZE bytes).
 */
export const FrameCode = {
  ZERO: 0,
  RAW: FRAME_SIZE,
} as const;

/** Version 2 directory entry: page offset (0 = no page stored), blocks held, the page's SHA-256. */
export const V2_DIR_ENTRY_SIZE = 48;
export const V2DirEntryField = {
  PAGE_OFFSET: 0,
  BLOCKS: 12,
  PAGE_SHA256: 16,
} as const;
/** "CDS2": a version 2 block-table page (its entries carry frame codes, so it cannot pass for a v1 page). */
export const V2_TABLE_PAGE_MAGIC = 0x32534443;
/** Version 2 table entry fields, from the entry's start; the frame codes follow the digest. */
export const V2TableEntryField = {
  OFFSET: 0,
  STORED_LENGTH: 8,
  KIND: 12,
  DIGEST: 16,
  FRAMES: 48,
} as const;

export function framesPerBlock(blockSize: number): number {
  return blockSize / FRAME_SIZE;
}

/** A version 2 table entry: 48 bytes and a u16 code per frame (80 bytes at 64 KiB blocks). */
export function v2TableEntrySize(blockSize: number): number {
  return V2TableEntryField.FRAMES + 2 * framesPerBlock(blockSize);
}

export function v2TablePageSize(blockSize: number): number {
  return TABLE_PAGE_HEADER + TABLE_ENTRIES_PER_PAGE * v2TableEntrySize(blockSize);
}

/** Version 2's data region starts after the directory (which follows the header), on a 4 KiB boundary. */
export function v2DataOffset(dirPages: number): number {
  return alignUp(HEADER_SIZE + dirPages * V2_DIR_ENTRY_SIZE, RAW_BLOCK_ALIGN);
}


/** A sealed layer's file is read-only for everyone: it is never modified. */
export const SEALED_MODE = 0o444;

/** Uncompressed blocks start on this boundary so that partial reads are page-aligned. */
export const RAW_BLOCK_ALIGN = 4096;
/** lz4 is kept only when it saves at least this fraction of the block. */
export const LZ4_MIN_SAVING = 1 / 16;
/** lz4-napi's block format starts with the uncompressed size, a u32. */
export const LZ4_SIZE_PREFIX = 4;
/** Version 2 keeps lz4 for a frame by the same rule: only when it saves at least 1/16 of the frame. */
export const FRAME_MAX_LZ4 = FRAME_SIZE * (1 - LZ4_MIN_SAVING);

/** Prefix of the SHA-256 input that makes a snapshot's layer digest (see docs/FORMAT.md). */
export const LAYER_DIGEST_PREFIX = Buffer.from('cowdisk-layer-v1\0', 'latin1');

export function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

export function blockCount(size: number, blockSize: number): number {
  return Math.ceil(size / blockSize);
}

export function alignUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}
