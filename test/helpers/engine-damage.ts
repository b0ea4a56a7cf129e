/**
 * Damaging cowdisk files on purpose, for the hostile-file tests.
 *
 * A random flip almost always just breaks a checksum, which tests one line of a parser. To reach
 * the bounds checks behind the checksums, `resealSnapshot` and `resealOverlay` recompute every
 * checksum after a change (table pages into the directory, the directory into the header, the
 * header itself; each valid-looking map page slot), so the damaged values arrive at the parser
 * looking legitimate. Snapshot layers of both format versions are understood (the version field
 * says which). Offsets come from docs/FORMAT.md, read here independently of src/format.
 */
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';

const HEADER = 4096;
const TABLE_PAGE = 16 + 1024 * 48;

function crc(bytes: Buffer): number {
  return crc32(bytes) >>> 0;
}

function sha256(bytes: Buffer): Buffer {
  return createHash('sha256').update(bytes).digest();
}

export interface SnapshotRegions {
  version: number;
  header: [number, number];
  directory: [number, number];
  /** Table pages present in the directory: [offset, end, page index]. */
  tables: Array<[number, number, number]>;
  /** Stored blocks: [offset, end, block index, kind (2 raw, 3 lz4)]. */
  blocks: Array<[number, number, number, number]>;
  /** Version 2: the lz4 frames of framed blocks: [offset, end, block index, frame]. */
  frames: Array<[number, number, number, number]>;
}

/** Version 2's geometry (docs/FORMAT.md, "Snapshot layer, version 2"), from the header's block size. */
export function v2Geometry(file: Buffer): { frames: number; entry: number; page: number } {
  const frames = file.readUInt32LE(24) / 4096;
  const entry = 48 + 2 * frames;
  return { frames, entry, page: 16 + 1024 * entry };
}

/** Where a snapshot layer's structures are, from its (undamaged) bytes. */
export function snapshotRegions(file: Buffer): SnapshotRegions {
  if (file.readUInt32LE(8) === 2) return v2Regions(file);
  const dirPages = file.readUInt32LE(28);
  const dirOffset = Number(file.readBigUInt64LE(32));
  const regions: SnapshotRegions = { version: 1, header: [0, HEADER], directory: [dirOffset, dirOffset + dirPages * 16], tables: [], blocks: [], frames: [] };
  for (let page = 0; page < dirPages; page++) {
    const at = Number(file.readBigUInt64LE(dirOffset + page * 16));
    if (at === 0) continue;
    regions.tables.push([at, at + TABLE_PAGE, page]);
    for (let slot = 0; slot < 1024; slot++) {
      const e = at + 16 + slot * 48;
      const kind = file[e + 12];
      if (kind === 2 || kind === 3) {
        const offset = Number(file.readBigUInt64LE(e));
        regions.blocks.push([offset, offset + file.readUInt32LE(e + 8), page * 1024 + slot, kind]);
      }
    }
  }
  return regions;
}

function v2Regions(file: Buffer): SnapshotRegions {
  const dirPages = file.readUInt32LE(28);
  const { frames, entry, page } = v2Geometry(file);
  const regions: SnapshotRegions = { version: 2, header: [0, HEADER], directory: [HEADER, HEADER + dirPages * 48], tables: [], blocks: [], frames: [] };
  for (let index = 0; index < dirPages; index++) {
    const at = Number(file.readBigUInt64LE(HEADER + index * 48));
    if (at === 0) continue;
    regions.tables.push([at, at + page, index]);
    for (let slot = 0; slot < 1024; slot++) {
      const e = at + 16 + slot * entry;
      const kind = file[e + 12];
      if (kind !== 2 && kind !== 3) continue;
      const offset = Number(file.readBigUInt64LE(e));
      const block = index * 1024 + slot;
      regions.blocks.push([offset, offset + file.readUInt32LE(e + 8), block, kind]);
      let frameAt = offset;
      for (let f = 0; kind === 3 && f < frames; f++) {
        const code = file.readUInt16LE(e + 48 + 2 * f);
        if (code > 0 && code < 4096) regions.frames.push([frameAt, frameAt + code, block, f]);
        frameAt += code;
      }
    }
  }
  return regions;
}

/** Makes every checksum of a snapshot layer agree with its (damaged) contents again, where it can. */
export function resealSnapshot(file: Buffer): void {
  if (file.length < HEADER) return;
  if (file.readUInt32LE(8) === 2) return resealV2(file);
  const dirPages = file.readUInt32LE(28);
  const dirOffset = Number(file.readBigUInt64LE(32));
  if (dirOffset < HEADER || dirOffset + dirPages * 16 > file.length) return resealHeader(file, 0);
  for (let page = 0; page < dirPages; page++) {
    const at = Number(file.readBigUInt64LE(dirOffset + page * 16));
    if (at >= HEADER && at + TABLE_PAGE <= dirOffset) file.writeUInt32LE(crc(file.subarray(at, at + TABLE_PAGE)), dirOffset + page * 16 + 8);
  }
  file.writeUInt32LE(crc(file.subarray(dirOffset, dirOffset + dirPages * 16)), 40);
  resealHeader(file, 0);
}

function resealV2(file: Buffer): void {
  const dirPages = file.readUInt32LE(28);
  const dirEnd = HEADER + dirPages * 48;
  if (dirEnd > file.length) return resealHeader(file, 0);
  const { page } = v2Geometry(file);
  for (let index = 0; index < dirPages; index++) {
    const at = Number(file.readBigUInt64LE(HEADER + index * 48));
    if (at >= HEADER && at + page <= file.length) sha256(file.subarray(at, at + page)).copy(file, HEADER + index * 48 + 16);
  }
  sha256(file.subarray(HEADER, dirEnd)).copy(file, 2304);
  resealHeader(file, 0);
}

function resealHeader(file: Buffer, at: number): void {
  if (file.length >= at + HEADER) file.writeUInt32LE(crc(file.subarray(at, at + HEADER - 4)), at + HEADER - 4);
}

/** Makes both overlay header slots and every map page slot that has the page magic checksum-valid again. */
export function resealOverlay(file: Buffer): void {
  resealHeader(file, 0);
  resealHeader(file, HEADER);
  if (file.length < 2 * HEADER) return;
  const mapPages = file.readUInt32LE(44);
  for (let slot = 0; slot < 2 * mapPages; slot++) {
    const at = 2 * HEADER + slot * 4096;
    if (at + 4096 > file.length) break;
    if (file.readUInt32LE(at) === 0x504d4443) file.writeUInt32LE(crc(file.subarray(at + 8, at + 4096)), at + 4);
  }
}
