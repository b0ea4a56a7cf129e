/**
 * docs/FORMAT.md read independently of src/format: the layer digest's formula, and a reader of a
 * whole version 2 layer from its bytes (header, directory, table pages, frames decoded with
 * lz4-napi given the size prefix a frame does not store). A test that compares the writer's file
 * with these checks the document and the code against each other.
 */
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { uncompressSync } from 'lz4-napi';

export type DocBlock = Buffer | null;

function padded(data: Buffer, blockSize: number): Buffer {
  const out = Buffer.alloc(blockSize);
  data.copy(out);
  return out;
}

/** FORMAT.md, "Layer digest": over the blocks the layer holds (null: a zero block). */
export function docLayerDigest(size: number, blockSize: number, blocks: Map<number, DocBlock>): Buffer {
  const h = createHash('sha256').update('cowdisk-layer-v1\0', 'latin1');
  const geometry = Buffer.alloc(12);
  geometry.writeBigUInt64LE(BigInt(size));
  geometry.writeUInt32LE(blockSize, 8);
  h.update(geometry);
  for (const block of [...blocks.keys()].sort((a, b) => a - b)) {
    const data = blocks.get(block) ?? null;
    const record = Buffer.alloc(5);
    record.writeUInt32LE(block);
    record[4] = data ? 2 : 1;
    h.update(record);
    if (data) h.update(createHash('sha256').update(padded(data, blockSize)).digest());
  }
  return h.digest();
}

export interface DocV2Layer {
  size: number;
  blockSize: number;
  layerDigest: Buffer;
  tableOffset: number;
  /** Per block the layer holds: kind (1 zero, 2 raw, 3 framed), stored offset and length, frame codes. */
  entries: Map<number, { kind: number; offset: number; length: number; codes: number[]; digest: Buffer }>;
  /** The disk as the layer reads it (absent blocks as zeros). */
  disk: Buffer;
}

/** FORMAT.md, "Snapshot layer, version 2", every checksum verified; throws on anything the document forbids. */
export function docReadV2(file: Buffer): DocV2Layer {
  const sha = (b: Buffer) => createHash('sha256').update(b).digest();
  if (file.toString('latin1', 0, 8) !== 'COWDISKS' || file.readUInt32LE(8) !== 2) throw new Error('not a version 2 snapshot layer');
  if ((crc32(file.subarray(0, 4092)) >>> 0) !== file.readUInt32LE(4092)) throw new Error('header CRC');
  const size = Number(file.readBigUInt64LE(16));
  const blockSize = file.readUInt32LE(24);
  const dirPages = file.readUInt32LE(28);
  if (Number(file.readBigUInt64LE(32)) !== 4096 || file.readUInt32LE(40) !== 4096) throw new Error('directory offset or frame size');
  const tableOffset = Number(file.readBigUInt64LE(104));
  if (Number(file.readBigUInt64LE(112)) !== file.length) throw new Error('file length');
  const directory = file.subarray(4096, 4096 + dirPages * 48);
  if (!sha(directory).equals(file.subarray(2304, 2336))) throw new Error('directory SHA-256');
  const frames = blockSize / 4096;
  const entrySize = 48 + 2 * frames;
  const pageSize = 16 + 1024 * entrySize;
  const disk = Buffer.alloc(size);
  const entries: DocV2Layer['entries'] = new Map();
  const blocks = Math.ceil(size / blockSize);
  for (let index = 0; index < dirPages; index++) {
    const pageOffset = Number(directory.readBigUInt64LE(index * 48));
    const held = directory.readUInt32LE(index * 48 + 12);
    if (pageOffset === 0) {
      if (held !== 0 && held !== Math.min(1024, blocks - index * 1024)) throw new Error(`directory entry ${index}`);
      for (let b = 0; held > 0 && b < held; b++) entries.set(index * 1024 + b, { kind: 1, offset: 0, length: 0, codes: [], digest: Buffer.alloc(32) });
      continue;
    }
    if (pageOffset < tableOffset) throw new Error(`table page ${index} lies in the data region`);
    const page = file.subarray(pageOffset, pageOffset + pageSize);
    if (!sha(page).equals(directory.subarray(index * 48 + 16, index * 48 + 48))) throw new Error(`table page ${index} SHA-256`);
    if (page.readUInt32LE(0) !== 0x32534443 || page.readUInt32LE(4) !== index) throw new Error(`table page ${index} magic or index`);
    for (let slot = 0; slot < 1024; slot++) {
      const e = 16 + slot * entrySize;
      const kind = page[e + 12];
      if (kind === 0) continue;
      const block = index * 1024 + slot;
      const offset = Number(page.readBigUInt64LE(e));
      const length = page.readUInt32LE(e + 8);
      const codes = Array.from({ length: frames }, (_, f) => page.readUInt16LE(e + 48 + 2 * f));
      const digest = Buffer.from(page.subarray(e + 16, e + 48));
      entries.set(block, { kind, offset, length, codes, digest });
      if (kind === 1) continue;
      const data = Buffer.alloc(blockSize);
      if (kind === 2) {
        file.copy(data, 0, offset, offset + blockSize);
      } else {
        let at = offset;
        for (let f = 0; f < frames; f++) {
          const code = codes[f];
          if (code === 4096) file.copy(data, f * 4096, at, at + 4096);
          else if (code > 0) {
            const prefixed = Buffer.concat([Buffer.from([0, 16, 0, 0]), file.subarray(at, at + code)]);
            uncompressSync(prefixed).copy(data, f * 4096);
          }
          at += code;
        }
        if (at - offset !== length) throw new Error(`block ${block}: frames add up to ${at - offset}, not ${length}`);
      }
      if (!sha(data).equals(digest)) throw new Error(`block ${block} SHA-256`);
      data.copy(disk, block * blockSize, 0, Math.min(blockSize, size - block * blockSize));
    }
  }
  return { size, blockSize, layerDigest: Buffer.from(file.subarray(48, 80)), tableOffset, entries, disk };
}
