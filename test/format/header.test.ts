/**
 * Header codecs. Expected bytes are built here from docs/FORMAT.md's tables (not with the encoder
 * under test), so the code and the document cannot drift apart unnoticed. Bad headers are made by
 * changing one field of a good one and sealing it again with a correct CRC, so each bound check is
 * reached on its own; then magic, version and CRC are shown to be checked in that order.
 */
import { crc32 } from 'node:zlib';
import { describe, expect, test } from 'vitest';
import { CowdiskError, ErrorCode } from '../../src/errors.js';
import {
  type OverlayHeaderFields,
  type ParentRef,
  type SnapshotHeaderFields,
  type SnapshotV2HeaderFields,
  decodeOverlayHeader,
  decodeSnapshotHeader,
  decodeSnapshotV2Header,
  encodeOverlayHeader,
  encodeSnapshotHeader,
  encodeSnapshotV2Header,
  snapshotVersion,
  overlayLayout,
  sniffKind,
} from '../../src/format/header.js';

const FILE = '/images/a.img';
const digest = Buffer.alloc(32, 0xd1);
const uuid = Buffer.from('00112233445566778899aabbccddeeff', 'hex');

function seal(buf: Buffer): Buffer {
  buf.writeUInt32LE(crc32(buf.subarray(0, 4092)) >>> 0, 4092);
  return buf;
}

/** docs/FORMAT.md, "Parent reference". */
function docParent(buf: Buffer, parent: ParentRef): void {
  if (parent.kind === 'none') return;
  const p = Buffer.from(parent.path, 'utf8');
  buf.writeUInt32LE(parent.kind === 'raw' ? 1 : 2, 128);
  buf.writeUInt32LE(p.length, 132);
  buf.writeBigUInt64LE(BigInt(parent.size), 136);
  if (parent.kind === 'raw') {
    buf.writeBigUInt64LE(BigInt(parent.ino), 144);
    buf.writeBigUInt64LE(parent.mtimeNs, 152);
  } else {
    parent.digest.copy(buf, 160);
  }
  p.copy(buf, 256);
}

/** docs/FORMAT.md, "Overlay header". */
function docOverlayHeader(h: OverlayHeaderFields): Buffer {
  const buf = Buffer.alloc(4096);
  buf.write('COWDISKO', 0, 'latin1');
  buf.writeUInt32LE(1, 8);
  buf.writeBigUInt64LE(h.generation, 16);
  buf.writeUInt32LE(h.dirty ? 1 : 0, 24);
  buf.writeUInt32LE(h.subBlocks, 28);
  buf.writeBigUInt64LE(BigInt(h.size), 32);
  buf.writeUInt32LE(h.blockSize, 40);
  buf.writeUInt32LE(h.mapPages, 44);
  buf.writeBigUInt64LE(BigInt(h.mapOffset), 48);
  buf.writeBigUInt64LE(BigInt(h.dataOffset), 56);
  h.uuid.copy(buf, 64);
  buf.writeBigUInt64LE(h.createdNs, 80);
  buf.writeUInt32LE(510, 88);
  docParent(buf, h.parent);
  return seal(buf);
}

/** docs/FORMAT.md, "Snapshot header". */
function docSnapshotHeader(h: SnapshotHeaderFields): Buffer {
  const buf = Buffer.alloc(4096);
  buf.write('COWDISKS', 0, 'latin1');
  buf.writeUInt32LE(1, 8);
  buf.writeBigUInt64LE(BigInt(h.size), 16);
  buf.writeUInt32LE(h.blockSize, 24);
  buf.writeUInt32LE(h.dirPages, 28);
  buf.writeBigUInt64LE(BigInt(h.dirOffset), 32);
  buf.writeUInt32LE(h.dirCrc, 40);
  buf.writeUInt32LE(h.storedBlocks, 44);
  h.layerDigest.copy(buf, 48);
  buf.writeBigUInt64LE(h.createdNs, 80);
  buf.writeBigUInt64LE(BigInt(h.dataBytes), 88);
  buf.writeUInt32LE(1024, 96);
  docParent(buf, h.parent);
  return seal(buf);
}

function overlayFields(size: number, blockSize: number, parent: ParentRef): OverlayHeaderFields {
  return {
    generation: 7n,
    dirty: true,
    size,
    blockSize,
    subBlocks: Math.min(32, blockSize / 4096),
    ...overlayLayout(size, blockSize),
    uuid,
    createdNs: 1_700_000_000_123_456_789n,
    parent,
  };
}

const SIZE = 10 * 2 ** 30 + 12345;
const parents: ParentRef[] = [
  { kind: 'none' },
  { kind: 'raw', path: '../base/disk.raw', size: SIZE, ino: 0xfedc_ba98_7654_3210n, mtimeNs: 1_699_999_999_000_000_001n },
  { kind: 'snapshot', path: 'läyer.snap', size: SIZE, digest },
];

function snapshotFields(parent: ParentRef): SnapshotHeaderFields {
  return {
    size: SIZE,
    blockSize: 65536,
    dirPages: Math.ceil(Math.ceil(SIZE / 65536) / 1024),
    dirOffset: 1 << 20,
    dirCrc: 0xdeadbeef,
    storedBlocks: 17,
    dataBytes: 17 * 65536,
    layerDigest: Buffer.alloc(32, 0x5a),
    createdNs: 1_700_000_000_000_000_000n,
    parent,
  };
}

/** Expects `fn` to throw a CowdiskError with `code` that names FILE. */
function expectError(fn: () => unknown, code: string): CowdiskError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, 'should have thrown').toBeInstanceOf(CowdiskError);
  const err = caught as CowdiskError;
  expect({ code: err.code, names: err.message.includes(FILE), path: err.path }).toEqual({ code, names: true, path: FILE });
  return err;
}

describe('overlay header', () => {
  for (const parent of parents) {
    test(`encodes to FORMAT.md's bytes and decodes back (parent ${parent.kind})`, () => {
      const fields = overlayFields(SIZE, 65536, parent);
      const bytes = encodeOverlayHeader(fields);
      expect(bytes.equals(docOverlayHeader(fields))).toBe(true);
      expect(decodeOverlayHeader(bytes, FILE)).toEqual(fields);
    });
  }

  test('the layout follows FORMAT.md: map pages of 510 blocks after two header slots, data aligned to the block size', () => {
    for (const [size, bs] of [
      [1, 4096],
      [510 * 4096, 4096],
      [511 * 4096, 4096],
      [2 ** 40, 65536],
      [3 * 2 ** 21 - 1, 2 ** 21],
    ]) {
      const blocks = Math.ceil(size / bs);
      const mapPages = Math.ceil(blocks / 510);
      expect(overlayLayout(size, bs)).toEqual({ mapPages, mapOffset: 8192, dataOffset: Math.ceil((8192 + mapPages * 8192) / bs) * bs });
    }
  });

  const good = () => encodeOverlayHeader(overlayFields(SIZE, 65536, parents[1]));
  const bad: Array<[string, (b: Buffer) => void]> = [
    ['an unknown flag bit', (b) => b.writeUInt32LE(3, 24)],
    ['a block size that is not a power of two', (b) => b.writeUInt32LE(65536 + 4096, 40)],
    ['a block size below 4 KiB', (b) => b.writeUInt32LE(2048, 40)],
    ['a block size above 2 MiB', (b) => b.writeUInt32LE(4 << 20, 40)],
    ['a virtual size of 0', (b) => b.writeBigUInt64LE(0n, 32)],
    ['a virtual size beyond 2^31 blocks', (b) => b.writeBigUInt64LE(2n ** 31n * 65536n + 1n, 32)],
    ['a virtual size beyond 2^53', (b) => b.writeBigUInt64LE(2n ** 60n, 32)],
    ['sub-blocks that are not a power of two', (b) => b.writeUInt32LE(3, 28)],
    ['zero sub-blocks', (b) => b.writeUInt32LE(0, 28)],
    ['more than 32 sub-blocks', (b) => b.writeUInt32LE(64, 28)],
    ['sub-blocks smaller than 4 KiB', (b) => b.writeUInt32LE(32, 28)],
    ['entries per page other than 510', (b) => b.writeUInt32LE(511, 88)],
    ['a map page count that does not follow from the geometry', (b) => b.writeUInt32LE(b.readUInt32LE(44) + 1, 44)],
    ['a map offset other than 8192', (b) => b.writeBigUInt64LE(4096n, 48)],
    ['a data offset that does not follow from the geometry', (b) => b.writeBigUInt64LE(b.readBigUInt64LE(56) + 65536n, 56)],
    ['an unknown parent kind', (b) => b.writeUInt32LE(3, 128)],
    ['an empty parent path', (b) => b.writeUInt32LE(0, 132)],
    ['a parent path longer than 2048 bytes', (b) => b.writeUInt32LE(2049, 132)],
    ['a parent path with a NUL byte', (b) => (b[257] = 0)],
    ['a parent size other than the virtual size', (b) => b.writeBigUInt64LE(BigInt(SIZE - 1), 136)],
    ['a parent size beyond 2^53', (b) => b.writeBigUInt64LE(2n ** 63n, 136)],
    ['a generation beyond 2^53 (no next header could be written)', (b) => b.writeBigUInt64LE(2n ** 64n - 1n, 16)],
  ];
  for (const [what, change] of bad) {
    test(`a header with ${what} is refused as CORRUPT, naming the file`, () => {
      const b = good();
      change(b);
      expectError(() => decodeOverlayHeader(seal(b), FILE), ErrorCode.CORRUPT);
    });
  }
});

describe('snapshot header', () => {
  const fileSize = (1 << 20) + 16 * 200;
  for (const parent of parents) {
    test(`encodes to FORMAT.md's bytes and decodes back (parent ${parent.kind})`, () => {
      const fields = snapshotFields(parent);
      const bytes = encodeSnapshotHeader(fields);
      expect(bytes.equals(docSnapshotHeader(fields))).toBe(true);
      expect(decodeSnapshotHeader(bytes, FILE, fileSize)).toEqual(fields);
    });
  }

  const good = () => encodeSnapshotHeader(snapshotFields(parents[2]));
  const corrupt: Array<[string, (b: Buffer) => void]> = [
    ['a block size that is not a power of two', (b) => b.writeUInt32LE(3 << 14, 24)],
    ['a virtual size of 0', (b) => b.writeBigUInt64LE(0n, 16)],
    ['a virtual size beyond 2^53', (b) => b.writeBigUInt64LE(2n ** 62n, 16)],
    ['entries per page other than 1024', (b) => b.writeUInt32LE(512, 96)],
    ['a directory page count that does not follow from the geometry', (b) => b.writeUInt32LE(b.readUInt32LE(28) - 1, 28)],
    ['a directory offset inside the header', (b) => b.writeBigUInt64LE(16n, 32)],
    ['a parent size other than the virtual size', (b) => b.writeBigUInt64LE(1n, 136)],
    ['data bytes beyond 2^53', (b) => b.writeBigUInt64LE(2n ** 63n, 88)],
  ];
  for (const [what, change] of corrupt) {
    test(`a header with ${what} is refused as CORRUPT, naming the file`, () => {
      const b = good();
      change(b);
      expectError(() => decodeSnapshotHeader(seal(b), FILE, fileSize), ErrorCode.CORRUPT);
    });
  }

  test('a directory that ends past the end of the file is TRUNCATED, saying both lengths', () => {
    const err = expectError(() => decodeSnapshotHeader(good(), FILE, (1 << 20) + 10), ErrorCode.TRUNCATED);
    expect(err.message).toContain(String((1 << 20) + 10));
  });
});

/** docs/FORMAT.md, "Snapshot layer, version 2", header. */
function docSnapshotV2Header(h: SnapshotV2HeaderFields): Buffer {
  const buf = Buffer.alloc(4096);
  buf.write('COWDISKS', 0, 'latin1');
  buf.writeUInt32LE(2, 8);
  buf.writeBigUInt64LE(BigInt(h.size), 16);
  buf.writeUInt32LE(h.blockSize, 24);
  buf.writeUInt32LE(h.dirPages, 28);
  buf.writeBigUInt64LE(4096n, 32);
  buf.writeUInt32LE(4096, 40);
  buf.writeUInt32LE(h.storedBlocks, 44);
  h.layerDigest.copy(buf, 48);
  buf.writeBigUInt64LE(h.createdNs, 80);
  buf.writeBigUInt64LE(BigInt(h.dataBytes), 88);
  buf.writeUInt32LE(1024, 96);
  buf.writeBigUInt64LE(BigInt(h.tableOffset), 104);
  buf.writeBigUInt64LE(BigInt(h.fileLength), 112);
  docParent(buf, h.parent);
  h.dirSha256.copy(buf, 2304);
  return seal(buf);
}

describe('snapshot header, version 2', () => {
  const dirPages = Math.ceil(Math.ceil(SIZE / 65536) / 1024);
  const dataOffset = Math.ceil((4096 + 48 * dirPages) / 4096) * 4096;
  const fields = (parent: ParentRef): SnapshotV2HeaderFields => ({
    size: SIZE,
    blockSize: 65536,
    dirPages,
    tableOffset: dataOffset + 17 * 65536,
    fileLength: dataOffset + 17 * 65536 + 81936,
    dirSha256: Buffer.alloc(32, 0x3c),
    storedBlocks: 17,
    dataBytes: 17 * 65536,
    layerDigest: Buffer.alloc(32, 0x5a),
    createdNs: 1_700_000_000_000_000_000n,
    parent,
  });
  const fileSize = fields(parents[0]).fileLength;

  for (const parent of parents) {
    test(`encodes to FORMAT.md's bytes and decodes back (parent ${parent.kind})`, () => {
      const bytes = encodeSnapshotV2Header(fields(parent));
      expect(bytes.equals(docSnapshotV2Header(fields(parent)))).toBe(true);
      expect(decodeSnapshotV2Header(bytes, FILE, fileSize)).toEqual(fields(parent));
      expect(snapshotVersion(bytes, FILE)).toBe(2);
    });
  }

  test('the version probe reads versions 1 and 2 of a snapshot from its first 16 bytes; 3 is BAD_VERSION', () => {
    expect(snapshotVersion(encodeSnapshotHeader(snapshotFields(parents[0])).subarray(0, 16), FILE)).toBe(1);
    const three = encodeSnapshotV2Header(fields(parents[0]));
    three.writeUInt32LE(3, 8);
    const err = expectError(() => snapshotVersion(three, FILE), ErrorCode.BAD_VERSION);
    expect(err.message).toMatch(/version 3.*reads version 1 and 2/);
    expectError(() => decodeSnapshotV2Header(seal(three), FILE, fileSize), ErrorCode.BAD_VERSION);
    // Each reader reads its own version only: open-layer.ts dispatches on the probe.
    expectError(() => decodeSnapshotHeader(encodeSnapshotV2Header(fields(parents[0])), FILE, fileSize), ErrorCode.BAD_VERSION);
    expectError(() => snapshotVersion(Buffer.from('COWDISKO'), FILE), ErrorCode.BAD_MAGIC);
  });

  const corrupt: Array<[string, (b: Buffer) => void]> = [
    ['a directory somewhere other than right after the header', (b) => b.writeBigUInt64LE(8192n, 32)],
    ['a table region before the data region', (b) => b.writeBigUInt64LE(BigInt(dataOffset - 1), 104)],
    ['a table region past the file length', (b) => b.writeBigUInt64LE(BigInt(fileSize + 1), 104)],
    ['more stored blocks than the disk has', (b) => b.writeUInt32LE(2 ** 31, 44)],
    ['more data bytes than the data region holds', (b) => b.writeBigUInt64LE(BigInt(17 * 65536 + 1), 88)],
    ['a directory page count that does not follow from the geometry', (b) => b.writeUInt32LE(dirPages + 1, 28)],
    ['a parent size other than the virtual size', (b) => b.writeBigUInt64LE(1n, 136)],
  ];
  for (const [what, change] of corrupt) {
    test(`a header with ${what} is refused as CORRUPT, naming the file`, () => {
      const b = encodeSnapshotV2Header(fields(parents[2]));
      change(b);
      expectError(() => decodeSnapshotV2Header(seal(b), FILE, fileSize), ErrorCode.CORRUPT);
    });
  }

  test('a file shorter than the header says is TRUNCATED, longer CORRUPT; frames other than 4 KiB are BAD_VERSION', () => {
    const b = encodeSnapshotV2Header(fields(parents[0]));
    expect(expectError(() => decodeSnapshotV2Header(b, FILE, fileSize - 1), ErrorCode.TRUNCATED).message).toContain(String(fileSize - 1));
    expectError(() => decodeSnapshotV2Header(b, FILE, fileSize + 1), ErrorCode.CORRUPT);
    b.writeUInt32LE(8192, 40);
    expectError(() => decodeSnapshotV2Header(seal(b), FILE, fileSize), ErrorCode.BAD_VERSION);
  });
});

describe('magic, version and CRC', () => {
  const kinds = [
    { name: 'overlay', good: () => encodeOverlayHeader(overlayFields(SIZE, 65536, parents[0])), decode: (b: Buffer) => decodeOverlayHeader(b, FILE) },
    { name: 'snapshot', good: () => encodeSnapshotHeader(snapshotFields(parents[0])), decode: (b: Buffer) => decodeSnapshotHeader(b, FILE, 1 << 21) },
  ];
  for (const kind of kinds) {
    test(`${kind.name}: bad magic is reported before a bad version, and a bad version before a bad CRC`, () => {
      const b = kind.good();
      b.writeUInt32LE(9, 8);
      b[4092] ^= 1;
      expectError(() => kind.decode(b), ErrorCode.BAD_VERSION);
      b[0] ^= 0x20;
      expectError(() => kind.decode(b), ErrorCode.BAD_MAGIC);
    });

    test(`${kind.name}: a CRC mismatch alone is CORRUPT`, () => {
      const b = kind.good();
      b[70] ^= 0x40;
      const err = expectError(() => kind.decode(b), ErrorCode.CORRUPT);
      expect(err.message).toMatch(/checksum/);
    });

    test(`${kind.name}: an unknown incompatible feature bit is BAD_VERSION even with a correct CRC`, () => {
      const b = kind.good();
      b.writeUInt32LE(1, 12);
      expectError(() => kind.decode(seal(b)), ErrorCode.BAD_VERSION);
    });

    test(`${kind.name}: a buffer shorter than a header is BAD_MAGIC, not an exception from Buffer`, () => {
      expectError(() => kind.decode(kind.good().subarray(0, 100)), ErrorCode.BAD_MAGIC);
    });
  }

  test('the other kind of cowdisk file is BAD_MAGIC: a snapshot is not an overlay', () => {
    const snap = encodeSnapshotHeader(snapshotFields(parents[0]));
    expectError(() => decodeOverlayHeader(snap, FILE), ErrorCode.BAD_MAGIC);
    expect(sniffKind(snap)).toBe('snapshot');
    expect(sniffKind(encodeOverlayHeader(overlayFields(SIZE, 65536, parents[0])))).toBe('overlay');
    expect(sniffKind(Buffer.from('QFI\xfb\0\0\0\x03', 'latin1'))).toBeUndefined();
  });
});

test('a parent path longer than the format holds is refused when encoding, as INVALID_ARGUMENT', () => {
  const fields = overlayFields(SIZE, 65536, { kind: 'snapshot', path: 'x'.repeat(2049), size: SIZE, digest });
  expect(() => encodeOverlayHeader(fields)).toThrow(expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT }));
});
