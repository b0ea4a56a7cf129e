/**
 * Header codecs for the overlay and the snapshot layer (versions 1 and 2), and the parent
 * reference they all carry.
 *
 * A decoder trusts nothing: magic, version and CRC are checked first (in that order, so the error
 * says the most useful thing: "not a cowdisk file" before "damaged"), then every field is checked
 * against its bounds and against the others. What comes out is safe to compute offsets with.
 */
import { zlibCrc32 } from './crc.js';
import {
  DIGEST_SIZE,
  DIR_ENTRY_SIZE,
  FORMAT_VERSION,
  KNOWN_OVERLAY_FLAGS,
  HEADER_CRC_OFFSET,
  HEADER_SIZE,
  MAGIC_LENGTH,
  MAP_ENTRIES_PER_PAGE,
  MAP_SLOT_STRIDE,
  MAX_BLOCK_SIZE,
  MAX_BLOCKS,
  MAX_PARENT_PATH,
  MAX_SUB_BLOCKS,
  MIN_BLOCK_SIZE,
  MIN_SUB_BLOCK_SIZE,
  OVERLAY_MAGIC,
  OVERLAY_MAP_OFFSET,
  OverlayFlag,
  OverlayHeader,
  PARENT_PATH_OFFSET,
  PARENT_REF_OFFSET,
  ParentKind,
  ParentRefField,
  FRAME_SIZE,
  SNAPSHOT_MAGIC,
  SNAPSHOT_V2,
  SNAPSHOT_VERSIONS,
  SnapshotHeader,
  SnapshotV2Header,
  TABLE_ENTRIES_PER_PAGE,
  UUID_SIZE,
  blockCount,
  isPowerOfTwo,
  v2DataOffset,
} from './constants.js';
import { CowdiskError, ErrorCode } from '../errors.js';
import type { SealedHeader } from './sealed-file.js';

export type ParentRef =
  | { kind: 'none' }
  /** A raw base: its size and a cheap fingerprint (inode, modification time). */
  | { kind: 'raw'; path: string; size: number; ino: bigint; mtimeNs: bigint }
  /** A sealed snapshot: its size and layer digest. */
  | { kind: 'snapshot'; path: string; size: number; digest: Buffer };

export interface OverlayHeaderFields {
  generation: bigint;
  dirty: boolean;
  size: number;
  blockSize: number;
  subBlocks: number;
  mapPages: number;
  mapOffset: number;
  dataOffset: number;
  uuid: Buffer;
  createdNs: bigint;
  parent: ParentRef;
}

/** A version 1 snapshot header. */
export interface SnapshotHeaderFields {
  size: number;
  blockSize: number;
  dirPages: number;
  dirOffset: number;
  dirCrc: number;
  storedBlocks: number;
  dataBytes: number;
  layerDigest: Buffer;
  createdNs: bigint;
  parent: ParentRef;
}

/** A version 2 snapshot header: the fields every version has, and where version 2's parts lie. */
export interface SnapshotV2HeaderFields extends SealedHeader {
  dirPages: number;
  /** Where the table pages start: the end of the data region. */
  tableOffset: number;
  /** The whole file's length: a file cut anywhere is TRUNCATED at open. */
  fileLength: number;
  /** SHA-256 of the directory. */
  dirSha256: Buffer;
}

function corrupt(path: string, what: string): CowdiskError {
  return new CowdiskError(
    ErrorCode.CORRUPT,
    `${path}: the header is damaged (${what}). Restore the file from a copy; \`cowdisk check\` tells what else is affected.`,
    { path },
  );
}

/** What is wrong with a geometry shared by both kinds (sizes and block size within bounds), if anything. */
function geometryProblem(size: number, blockSize: number): string | undefined {
  if (!isPowerOfTwo(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE) {
    return `block size ${blockSize} is not a power of two from 4 KiB to 2 MiB`;
  }
  if (!Number.isSafeInteger(size) || size <= 0 || blockCount(size, blockSize) > MAX_BLOCKS) {
    return `virtual size ${size} is outside 1 byte .. ${MAX_BLOCKS} blocks`;
  }
  return undefined;
}

/** A header read from disk: a geometry out of bounds means the file is damaged. */
function validateGeometry(size: number, blockSize: number, path: string): void {
  const problem = geometryProblem(size, blockSize);
  if (problem) throw corrupt(path, problem);
}

/**
 * A file about to be made: a geometry out of bounds is the caller's argument, not damage (a disk
 * of more than 2^31 blocks needs a larger block size).
 */
export function checkNewGeometry(size: number, blockSize: number, path: string): void {
  const problem = geometryProblem(size, blockSize);
  if (problem) {
    throw new CowdiskError(
      ErrorCode.INVALID_ARGUMENT,
      `${path} cannot be made: ${problem}. With ${blockSize}-byte blocks a disk holds at most ${MAX_BLOCKS * blockSize} bytes; choose a larger block size for a larger disk.`,
      { path },
    );
  }
}

function readU64(buf: Buffer, offset: number, path: string, field: string): number {
  const v = buf.readBigUInt64LE(offset);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(path, `${field} ${v} is out of range`);
  return Number(v);
}

/** What the first bytes of a file say it is, without trusting anything else. */
export function sniffKind(first: Buffer): 'overlay' | 'snapshot' | undefined {
  const magic = first.subarray(0, MAGIC_LENGTH);
  if (magic.equals(OVERLAY_MAGIC)) return 'overlay';
  if (magic.equals(SNAPSHOT_MAGIC)) return 'snapshot';
  return undefined;
}

/** Magic and version (one of `versions`, with no incompatible feature bit): the version. */
function checkVersion(buf: Buffer, magic: Buffer, what: string, path: string, versions: readonly number[]): number {
  if (buf.length < VERSION_PROBE_LENGTH || !buf.subarray(0, MAGIC_LENGTH).equals(magic)) {
    throw new CowdiskError(ErrorCode.BAD_MAGIC, `${path} is not a cowdisk ${what} (its first bytes are not the ${what} magic).`, {
      path,
    });
  }
  const version = buf.readUInt32LE(8);
  const incompat = buf.readUInt32LE(12);
  if (!versions.includes(version) || incompat !== 0) {
    throw new CowdiskError(
      ErrorCode.BAD_VERSION,
      `${path} is a cowdisk ${what} of format version ${version} (features ${incompat}); this cowdisk reads version ${versions.join(' and ')}. Use a newer cowdisk.`,
      { path },
    );
  }
  return version;
}

/** Magic, version and CRC, checked in the order that gives the most useful error. */
function checkEnvelope(buf: Buffer, magic: Buffer, what: string, path: string, version = FORMAT_VERSION): void {
  checkVersion(buf.length < HEADER_SIZE ? Buffer.alloc(0) : buf, magic, what, path, [version]);
  if (zlibCrc32(buf.subarray(0, HEADER_CRC_OFFSET)) !== buf.readUInt32LE(HEADER_CRC_OFFSET)) {
    throw corrupt(path, 'header checksum mismatch');
  }
}

/** The bytes `snapshotVersion` needs: the magic, the version and the incompatible feature bits. */
export const VERSION_PROBE_LENGTH = 16;

/**
 * The format version of a snapshot layer's header (1 or 2), from its first VERSION_PROBE_LENGTH
 * bytes (its magic, version and feature fields):
 * BAD_MAGIC for no snapshot, BAD_VERSION for a version this build does not read. Which reader
 * decodes the rest follows from it.
 */
export function snapshotVersion(buf: Buffer, path: string): number {
  return checkVersion(buf, SNAPSHOT_MAGIC, 'snapshot layer', path, SNAPSHOT_VERSIONS);
}

function sealHeader(buf: Buffer): Buffer {
  buf.writeUInt32LE(zlibCrc32(buf.subarray(0, HEADER_CRC_OFFSET)), HEADER_CRC_OFFSET);
  return buf;
}

function encodeParent(buf: Buffer, parent: ParentRef): void {
  if (parent.kind === 'none') return;
  const pathBytes = Buffer.from(parent.path, 'utf8');
  if (pathBytes.length === 0 || pathBytes.length > MAX_PARENT_PATH) {
    throw new CowdiskError(
      ErrorCode.INVALID_ARGUMENT,
      `the parent path ${parent.path} is ${pathBytes.length} bytes; cowdisk records at most ${MAX_PARENT_PATH}. Move the files closer together.`,
    );
  }
  const o = PARENT_REF_OFFSET;
  buf.writeUInt32LE(parent.kind === 'raw' ? ParentKind.RAW : ParentKind.SNAPSHOT, o + ParentRefField.KIND);
  buf.writeUInt32LE(pathBytes.length, o + ParentRefField.PATH_LENGTH);
  buf.writeBigUInt64LE(BigInt(parent.size), o + ParentRefField.SIZE);
  if (parent.kind === 'raw') {
    buf.writeBigUInt64LE(parent.ino, o + ParentRefField.RAW_INODE);
    buf.writeBigUInt64LE(parent.mtimeNs, o + ParentRefField.RAW_MTIME_NS);
  } else {
    parent.digest.copy(buf, o + ParentRefField.DIGEST);
  }
  pathBytes.copy(buf, PARENT_PATH_OFFSET);
}

function decodeParent(buf: Buffer, path: string): ParentRef {
  const o = PARENT_REF_OFFSET;
  const kind = buf.readUInt32LE(o + ParentRefField.KIND);
  if (kind === ParentKind.NONE) return { kind: 'none' };
  const pathLength = buf.readUInt32LE(o + ParentRefField.PATH_LENGTH);
  if (pathLength === 0 || pathLength > MAX_PARENT_PATH) throw corrupt(path, `parent path length ${pathLength}`);
  const parentPath = buf.toString('utf8', PARENT_PATH_OFFSET, PARENT_PATH_OFFSET + pathLength);
  if (parentPath.includes('\0')) throw corrupt(path, 'parent path contains a NUL byte');
  const size = readU64(buf, o + ParentRefField.SIZE, path, 'parent size');
  if (kind === ParentKind.RAW) {
    return {
      kind: 'raw',
      path: parentPath,
      size,
      ino: buf.readBigUInt64LE(o + ParentRefField.RAW_INODE),
      mtimeNs: buf.readBigUInt64LE(o + ParentRefField.RAW_MTIME_NS),
    };
  }
  if (kind === ParentKind.SNAPSHOT) {
    const at = o + ParentRefField.DIGEST;
    return { kind: 'snapshot', path: parentPath, size, digest: Buffer.from(buf.subarray(at, at + DIGEST_SIZE)) };
  }
  throw corrupt(path, `unknown parent kind ${kind}`);
}

/** The overlay layout that follows from its geometry; the header must agree with it. */
export function overlayLayout(size: number, blockSize: number): { mapPages: number; mapOffset: number; dataOffset: number } {
  const blocks = blockCount(size, blockSize);
  const mapPages = Math.ceil(blocks / MAP_ENTRIES_PER_PAGE);
  const mapOffset = OVERLAY_MAP_OFFSET;
  const mapEnd = mapOffset + mapPages * MAP_SLOT_STRIDE;
  return { mapPages, mapOffset, dataOffset: Math.ceil(mapEnd / blockSize) * blockSize };
}

export function encodeOverlayHeader(h: OverlayHeaderFields): Buffer {
  const buf = Buffer.alloc(HEADER_SIZE);
  OVERLAY_MAGIC.copy(buf, OverlayHeader.MAGIC);
  buf.writeUInt32LE(FORMAT_VERSION, OverlayHeader.VERSION);
  buf.writeBigUInt64LE(h.generation, OverlayHeader.GENERATION);
  buf.writeUInt32LE(h.dirty ? OverlayFlag.DIRTY : 0, OverlayHeader.FLAGS);
  buf.writeUInt32LE(h.subBlocks, OverlayHeader.SUB_BLOCKS);
  buf.writeBigUInt64LE(BigInt(h.size), OverlayHeader.VIRTUAL_SIZE);
  buf.writeUInt32LE(h.blockSize, OverlayHeader.BLOCK_SIZE);
  buf.writeUInt32LE(h.mapPages, OverlayHeader.MAP_PAGES);
  buf.writeBigUInt64LE(BigInt(h.mapOffset), OverlayHeader.MAP_OFFSET);
  buf.writeBigUInt64LE(BigInt(h.dataOffset), OverlayHeader.DATA_OFFSET);
  h.uuid.copy(buf, OverlayHeader.UUID);
  buf.writeBigUInt64LE(h.createdNs, OverlayHeader.CREATED_NS);
  buf.writeUInt32LE(MAP_ENTRIES_PER_PAGE, OverlayHeader.ENTRIES_PER_PAGE);
  encodeParent(buf, h.parent);
  return sealHeader(buf);
}

export function decodeOverlayHeader(buf: Buffer, path: string): OverlayHeaderFields {
  checkEnvelope(buf, OVERLAY_MAGIC, 'overlay', path);
  const flags = buf.readUInt32LE(OverlayHeader.FLAGS);
  if (flags & ~KNOWN_OVERLAY_FLAGS) throw corrupt(path, `unknown flags ${flags}`);
  const size = readU64(buf, OverlayHeader.VIRTUAL_SIZE, path, 'virtual size');
  const blockSize = buf.readUInt32LE(OverlayHeader.BLOCK_SIZE);
  validateGeometry(size, blockSize, path);
  const subBlocks = buf.readUInt32LE(OverlayHeader.SUB_BLOCKS);
  if (!isPowerOfTwo(subBlocks) || subBlocks > MAX_SUB_BLOCKS || blockSize / subBlocks < MIN_SUB_BLOCK_SIZE) {
    throw corrupt(path, `${subBlocks} sub-blocks per ${blockSize}-byte block`);
  }
  if (buf.readUInt32LE(OverlayHeader.ENTRIES_PER_PAGE) !== MAP_ENTRIES_PER_PAGE) {
    throw corrupt(path, 'state map page geometry');
  }
  const layout = overlayLayout(size, blockSize);
  const mapPages = buf.readUInt32LE(OverlayHeader.MAP_PAGES);
  const mapOffset = readU64(buf, OverlayHeader.MAP_OFFSET, path, 'map offset');
  const dataOffset = readU64(buf, OverlayHeader.DATA_OFFSET, path, 'data offset');
  if (mapPages !== layout.mapPages || mapOffset !== layout.mapOffset || dataOffset !== layout.dataOffset) {
    throw corrupt(path, 'state map or data region placement does not match the geometry');
  }
  const parent = decodeParent(buf, path);
  if (parent.kind !== 'none' && parent.size !== size) throw corrupt(path, `parent size ${parent.size} differs from the virtual size ${size}`);
  return {
    // Bounded (the writer renumbers before it would pass the bound: OverlayFile.writeHeader).
    generation: BigInt(readU64(buf, OverlayHeader.GENERATION, path, 'generation')),
    dirty: (flags & OverlayFlag.DIRTY) !== 0,
    size,
    blockSize,
    subBlocks,
    mapPages,
    mapOffset,
    dataOffset,
    uuid: Buffer.from(buf.subarray(OverlayHeader.UUID, OverlayHeader.UUID + UUID_SIZE)),
    createdNs: buf.readBigUInt64LE(OverlayHeader.CREATED_NS),
    parent,
  };
}

/** A snapshot header's fields that both versions have, at the same offsets; the caller adds its own and seals. */
function encodeSnapshotCommon(h: SealedHeader & { dirPages: number }, version: number): Buffer {
  const buf = Buffer.alloc(HEADER_SIZE);
  SNAPSHOT_MAGIC.copy(buf, SnapshotHeader.MAGIC);
  buf.writeUInt32LE(version, SnapshotHeader.VERSION);
  buf.writeBigUInt64LE(BigInt(h.size), SnapshotHeader.VIRTUAL_SIZE);
  buf.writeUInt32LE(h.blockSize, SnapshotHeader.BLOCK_SIZE);
  buf.writeUInt32LE(h.dirPages, SnapshotHeader.DIR_PAGES);
  buf.writeUInt32LE(h.storedBlocks, SnapshotHeader.STORED_BLOCKS);
  h.layerDigest.copy(buf, SnapshotHeader.LAYER_DIGEST);
  buf.writeBigUInt64LE(h.createdNs, SnapshotHeader.CREATED_NS);
  buf.writeBigUInt64LE(BigInt(h.dataBytes), SnapshotHeader.DATA_BYTES);
  buf.writeUInt32LE(TABLE_ENTRIES_PER_PAGE, SnapshotHeader.ENTRIES_PER_PAGE);
  encodeParent(buf, h.parent);
  return buf;
}

export function encodeSnapshotHeader(h: SnapshotHeaderFields): Buffer {
  const buf = encodeSnapshotCommon(h, FORMAT_VERSION);
  buf.writeBigUInt64LE(BigInt(h.dirOffset), SnapshotHeader.DIR_OFFSET);
  buf.writeUInt32LE(h.dirCrc, SnapshotHeader.DIR_CRC);
  return sealHeader(buf);
}

export function decodeSnapshotHeader(buf: Buffer, path: string, fileSize: number): SnapshotHeaderFields {
  checkEnvelope(buf, SNAPSHOT_MAGIC, 'snapshot layer', path);
  const size = readU64(buf, SnapshotHeader.VIRTUAL_SIZE, path, 'virtual size');
  const blockSize = buf.readUInt32LE(SnapshotHeader.BLOCK_SIZE);
  validateGeometry(size, blockSize, path);
  if (buf.readUInt32LE(SnapshotHeader.ENTRIES_PER_PAGE) !== TABLE_ENTRIES_PER_PAGE) {
    throw corrupt(path, 'block table page geometry');
  }
  const dirPages = buf.readUInt32LE(SnapshotHeader.DIR_PAGES);
  if (dirPages !== Math.ceil(blockCount(size, blockSize) / TABLE_ENTRIES_PER_PAGE)) {
    throw corrupt(path, `directory of ${dirPages} pages for ${blockCount(size, blockSize)} blocks`);
  }
  const dirOffset = readU64(buf, SnapshotHeader.DIR_OFFSET, path, 'directory offset');
  if (dirOffset < HEADER_SIZE) throw corrupt(path, `block directory offset ${dirOffset} lies inside the header`);
  if (dirOffset + dirPages * DIR_ENTRY_SIZE > fileSize) {
    throw new CowdiskError(
      ErrorCode.TRUNCATED,
      `${path} is truncated: its block directory should end at byte ${dirOffset + dirPages * DIR_ENTRY_SIZE} but the file has ${fileSize} bytes. Restore it from a copy.`,
      { path },
    );
  }
  const storedBlocks = buf.readUInt32LE(SnapshotHeader.STORED_BLOCKS);
  const parent = decodeParent(buf, path);
  if (parent.kind !== 'none' && parent.size !== size) throw corrupt(path, `parent size ${parent.size} differs from the virtual size ${size}`);
  return {
    size,
    blockSize,
    dirPages,
    dirOffset,
    dirCrc: buf.readUInt32LE(SnapshotHeader.DIR_CRC),
    storedBlocks,
    dataBytes: readU64(buf, SnapshotHeader.DATA_BYTES, path, 'data bytes'),
    layerDigest: Buffer.from(buf.subarray(SnapshotHeader.LAYER_DIGEST, SnapshotHeader.LAYER_DIGEST + DIGEST_SIZE)),
    createdNs: buf.readBigUInt64LE(SnapshotHeader.CREATED_NS),
    parent,
  };
}

export function encodeSnapshotV2Header(h: SnapshotV2HeaderFields): Buffer {
  const buf = encodeSnapshotCommon(h, SNAPSHOT_V2);
  buf.writeBigUInt64LE(BigInt(HEADER_SIZE), SnapshotHeader.DIR_OFFSET);
  buf.writeUInt32LE(FRAME_SIZE, SnapshotV2Header.FRAME_SIZE);
  buf.writeBigUInt64LE(BigInt(h.tableOffset), SnapshotV2Header.TABLE_OFFSET);
  buf.writeBigUInt64LE(BigInt(h.fileLength), SnapshotV2Header.FILE_LENGTH);
  h.dirSha256.copy(buf, SnapshotV2Header.DIR_SHA256);
  return sealHeader(buf);
}

/**
 * A version 2 header, checked against itself and the file: the directory right after the header,
 * the data region after it, the table region after that, and the file exactly as long as the
 * header says (shorter is TRUNCATED wherever it was cut).
 */
export function decodeSnapshotV2Header(buf: Buffer, path: string, fileSize: number): SnapshotV2HeaderFields {
  checkEnvelope(buf, SNAPSHOT_MAGIC, 'snapshot layer', path, SNAPSHOT_V2);
  const size = readU64(buf, SnapshotHeader.VIRTUAL_SIZE, path, 'virtual size');
  const blockSize = buf.readUInt32LE(SnapshotHeader.BLOCK_SIZE);
  validateGeometry(size, blockSize, path);
  const frameSize = buf.readUInt32LE(SnapshotV2Header.FRAME_SIZE);
  if (frameSize !== FRAME_SIZE) {
    throw new CowdiskError(
      ErrorCode.BAD_VERSION,
      `${path} is a cowdisk snapshot layer of ${frameSize}-byte frames; this cowdisk reads frames of ${FRAME_SIZE} bytes. Use a newer cowdisk.`,
      { path },
    );
  }
  if (buf.readUInt32LE(SnapshotHeader.ENTRIES_PER_PAGE) !== TABLE_ENTRIES_PER_PAGE) throw corrupt(path, 'block table page geometry');
  const blocks = blockCount(size, blockSize);
  const dirPages = buf.readUInt32LE(SnapshotHeader.DIR_PAGES);
  if (dirPages !== Math.ceil(blocks / TABLE_ENTRIES_PER_PAGE)) throw corrupt(path, `directory of ${dirPages} pages for ${blocks} blocks`);
  if (readU64(buf, SnapshotHeader.DIR_OFFSET, path, 'directory offset') !== HEADER_SIZE) throw corrupt(path, 'the directory does not follow the header');
  const fileLength = readU64(buf, SnapshotV2Header.FILE_LENGTH, path, 'file length');
  const tableOffset = readU64(buf, SnapshotV2Header.TABLE_OFFSET, path, 'table offset');
  const dataOffset = v2DataOffset(dirPages);
  if (tableOffset < dataOffset || tableOffset > fileLength) throw corrupt(path, `table region at ${tableOffset} lies outside ${dataOffset}..${fileLength}`);
  if (fileSize < fileLength) {
    throw new CowdiskError(ErrorCode.TRUNCATED, `${path} is truncated: it should be ${fileLength} bytes long but has ${fileSize}. Restore it from a copy.`, { path });
  }
  if (fileSize > fileLength) throw corrupt(path, `the file is ${fileSize} bytes, longer than the ${fileLength} its header says`);
  const storedBlocks = buf.readUInt32LE(SnapshotHeader.STORED_BLOCKS);
  if (storedBlocks > blocks) throw corrupt(path, `${storedBlocks} stored blocks in a disk of ${blocks}`);
  const dataBytes = readU64(buf, SnapshotHeader.DATA_BYTES, path, 'data bytes');
  if (dataBytes > tableOffset - dataOffset) throw corrupt(path, `${dataBytes} bytes of data in a data region of ${tableOffset - dataOffset}`);
  const parent = decodeParent(buf, path);
  if (parent.kind !== 'none' && parent.size !== size) throw corrupt(path, `parent size ${parent.size} differs from the virtual size ${size}`);
  const at = SnapshotV2Header.DIR_SHA256;
  return {
    size,
    blockSize,
    dirPages,
    tableOffset,
    fileLength,
    dirSha256: Buffer.from(buf.subarray(at, at + DIGEST_SIZE)),
    storedBlocks,
    dataBytes,
    layerDigest: Buffer.from(buf.subarray(SnapshotHeader.LAYER_DIGEST, SnapshotHeader.LAYER_DIGEST + DIGEST_SIZE)),
    createdNs: buf.readBigUInt64LE(SnapshotHeader.CREATED_NS),
    parent,
  };
}

