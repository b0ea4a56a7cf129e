/**
 * The cache rules of a remote layer (image/present-map.ts), on the memory file system that can
 * cut the power: whatever instant the power goes, every piece the present map marks is in the
 * copy and passes its check, and the layer reads right afterwards; two openers filling one copy
 * at once (as two processes do) both read right and leave a copy that verifies; a piece one
 * opener fetched is not fetched by the other.
 *
 * The blob comes from a real layer file (made by `import`), handed out by byte ranges from
 * memory: these tests are about the cache's files, not the network, which the registry tests
 * cover against a real registry.
 */
import { createHash } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { CowdiskError, ErrorCode } from '../../src/errors.js';
import { BlockKind } from '../../src/format/constants.js';
import type { SealedFile } from '../../src/format/sealed-file.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { presentPath, readRecord } from '../../src/image/layer-cache.js';
import { openImage } from '../../src/image/open.js';
import { openSealedFile } from '../../src/image/open-layer.js';
import type { RangeSource } from '../../src/image/range-source.js';
import { Cmd, NbdErrno } from '../../src/nbd/constants.js';
import { nbdErrno } from '../../src/nbd/errno.js';
import { buildEntry } from '../../src/ops/cache-entry.js';
import { importRaw } from '../../src/ops/import.js';
import { metadataOf } from '../../src/ops/push.js';
import { type LayerVersion, Random, pattern, writeSnapshotLayer } from '../helpers/engine-chain.js';

const BS = 4096;
const BLOCKS = 96;
const COPY = '/cache/layers/sha256-test/layer';

/** A layer file of mixed blocks (random, lz4-friendly, zeros), its bytes, and what its disk reads. */
async function makeBlob(version: LayerVersion): Promise<{ fs: MemoryFileSystem; blob: Buffer; contents: Buffer; spec: Parameters<typeof buildEntry>[2] }> {
  const fs = new MemoryFileSystem();
  const contents = Buffer.concat(Array.from({ length: BLOCKS }, (_, b) => (b % 5 === 4 ? Buffer.alloc(BS) : pattern(b + 1, BS))));
  fs.put('/disk.raw', contents);
  let digest: string;
  if (version === 2) {
    digest = (await importRaw('/disk.raw', '/blob.snap', { fs, blockSize: BS })).digest;
  } else {
    // A version 1 layer, as the last v1-only build imported one: zero blocks as zero entries.
    const blocks = new Map(Array.from({ length: BLOCKS }, (_, b) => [b, b % 5 === 4 ? null : contents.subarray(b * BS, (b + 1) * BS)] as const));
    const ref = await writeSnapshotLayer(fs, '/blob.snap', { size: contents.length, blockSize: BS, parent: { kind: 'none' }, blocks, version: 1 });
    digest = `sha256:${ref.digest.toString('hex')}`;
  }
  const handle = await fs.open('/blob.snap', { readOnly: true });
  const blob = Buffer.alloc(await handle.size());
  await handle.read(blob, 0);
  await handle.close();
  return {
    fs,
    blob,
    contents,
    spec: { layerDigest: digest, blob: { digest: 'sha256:'.padEnd(71, '0'), size: blob.length }, formatVersion: version, metadata: await metadataOf(fs, '/blob.snap'), source: 'memory', origin: {} },
  };
}

/** Byte ranges of `blob`, counting the requests. */
function source(blob: Buffer): RangeSource & { requests: number } {
  const s = {
    name: 'memory',
    requests: 0,
    async read(offset: number, length: number) {
      s.requests++;
      return Buffer.from(blob.subarray(offset, offset + length));
    },
    close: async () => undefined,
  };
  return s;
}

/** A cache holding a fresh entry for the blob (durable), on its own memory file system. */
async function cacheWith(made: Awaited<ReturnType<typeof makeBlob>>): Promise<MemoryFileSystem> {
  const fs = new MemoryFileSystem();
  await buildEntry(fs, COPY, made.spec, source(made.blob));
  return fs;
}

/** Opens the cached layer, fetching from `from`. */
async function openCached(fs: MemoryFileSystem, from: RangeSource) {
  const image = await openImage(COPY, { fs, readOnly: true });
  image.layers[0].remote!.useSource(from);
  return image;
}

/** Reads `blocks` (each a 1..3-block run), all at once, and checks each against `contents`. */
async function readBlocks(fs: MemoryFileSystem, from: RangeSource, blocks: number[], contents: Buffer): Promise<void> {
  const image = await openCached(fs, from);
  try {
    await Promise.all(
      blocks.map(async (b) => {
        const count = Math.min(1 + (b % 3), BLOCKS - b);
        const got = Buffer.alloc(count * BS);
        await image.device.read(got, b * BS);
        expect(got.equals(contents.subarray(b * BS, (b + count) * BS)), `blocks ${b}+${count}`).toBe(true);
      }),
    );
  } finally {
    await image.close();
  }
}

/** Every piece the present map marks is in the copy and passes its check. Returns how many. */
async function markedPiecesVerify(fs: MemoryFileSystem): Promise<number> {
  const record = (await readRecord(fs, COPY))!;
  if (!(await fs.exists(presentPath(COPY)))) return -1;
  const handle = await fs.open(presentPath(COPY), { readOnly: true });
  const marks = Buffer.alloc(record.tablePages + record.blocks);
  await handle.read(marks, 0);
  await handle.close();
  const file: SealedFile = await openSealedFile(fs, COPY);
  const copy = await fs.open(COPY, { readOnly: true });
  let marked = 0;
  try {
    for (const t of file.tableRanges(0, file.blocks)) {
      if (marks[t.index] !== 1) continue;
      const bytes = Buffer.alloc(t.length);
      await copy.read(bytes, t.offset);
      file.checkTable(t.index, bytes);
      marked++;
    }
    for (let b = 0; b < record.blocks; b++) {
      if (marks[record.tablePages + b] !== 1) continue;
      const r = (await file.storedRange(b))!;
      const bytes = Buffer.alloc(r.length);
      await copy.read(bytes, r.offset);
      await file.checkStored(b, bytes);
      marked++;
    }
  } finally {
    await copy.close();
    await file.close();
  }
  return marked;
}

describe.each([1, 2] as const)('a remote layer in the layer cache (format version %i)', async (version) => {
  const made = await makeBlob(version);
  const everything = Array.from({ length: BLOCKS }, (_, b) => b);

  test('the blob has stored blocks of both kinds and zero blocks, so every path is taken', async () => {
    const file = await openSealedFile(made.fs, '/blob.snap');
    const kinds = new Set(await file.kinds(0, BLOCKS));
    await file.close();
    expect([...kinds].sort()).toEqual([BlockKind.ZERO, BlockKind.RAW, BlockKind.LZ4].sort());
  });

  test('power cut at any instant: marks only vouch for bytes that are there, and the layer reads right after', async () => {
    const rng = new Random(12);
    const workload = Array.from({ length: 40 }, () => rng.below(BLOCKS));
    const probe = await cacheWith(made);
    const before = probe.operations;
    await readBlocks(probe, source(made.blob), workload, made.contents);
    const operations = probe.operations - before;
    expect(operations).toBeGreaterThan(50);
    let sawMarks = 0;
    for (let point = 1; point < operations; point += Math.max(1, Math.floor(operations / 60))) {
      const fs = await cacheWith(made);
      const start = fs.operations;
      fs.yieldEvery = true;
      fs.inject = () => (fs.operations > start + point ? Object.assign(new Error('power cut'), { code: 'EIO' }) : undefined);
      await readBlocks(fs, source(made.blob), workload, made.contents).catch(() => undefined);
      fs.inject = undefined;
      fs.yieldEvery = false;
      fs.crash({ keep: 'random', tear: true, random: () => rng.next() });
      const marked = await markedPiecesVerify(fs);
      if (marked > 0) sawMarks++;
      await readBlocks(fs, source(made.blob), everything, made.contents);
    }
    expect(sawMarks).toBeGreaterThan(5);
  });

  test('two openers filling one copy at once both read right, and every mark they left verifies', async () => {
    const fs = await cacheWith(made);
    fs.yieldEvery = true;
    const rng = new Random(7);
    const order = () => everything.map((b) => [rng.next(), b]).sort((x, y) => x[0] - y[0]).map(([, b]) => b);
    const a = source(made.blob);
    const b = source(made.blob);
    await Promise.all([readBlocks(fs, a, order(), made.contents), readBlocks(fs, b, order(), made.contents)]);
    // Both whole by the end: the present map is gone, the copy is the blob's bytes where it matters.
    expect(await markedPiecesVerify(fs)).toBe(-1);
    await readBlocks(fs, source(made.blob), everything, made.contents);
  });

  test('a piece one opener fetched is not fetched by the next', async () => {
    const fs = await cacheWith(made);
    const first = source(made.blob);
    await readBlocks(fs, first, [3, 10, 11, 50], made.contents);
    expect(first.requests).toBeGreaterThan(0);
    const second = source(made.blob);
    await readBlocks(fs, second, [3, 10, 11, 50], made.contents);
    expect(second.requests).toBe(0);
  });

  test('a whole copy is made the blob byte for byte: bytes between pieces are fetched when they differ, and a source that still differs is CORRUPT', async () => {
    const fs = await cacheWith(made);
    await readBlocks(fs, source(made.blob), everything, made.contents);
    const file = await openSealedFile(fs, COPY);
    const covered = [...made.spec.metadata.ranges, ...file.tableRanges(0, file.blocks)];
    for (let b = 0; b < BLOCKS; b++) {
      const r = await file.storedRange(b);
      if (r) covered.push(r);
    }
    await file.close();
    const gap = Array.from({ length: made.blob.length }, (_, i) => i).find((i) => !covered.some((r) => i >= r.offset && i < r.offset + r.length))!;
    expect(gap).toBeDefined();
    const blobWithPadding = Buffer.from(made.blob);
    blobWithPadding[gap] = 0x77;
    const spec = { ...made.spec, blob: { ...made.spec.blob, digest: `sha256:${createHash('sha256').update(blobWithPadding).digest('hex')}` } };
    // The same layer, as a blob whose padding holds a byte the copy does not have yet.
    const padded = new MemoryFileSystem();
    await buildEntry(padded, COPY, spec, source(blobWithPadding));
    await readBlocks(padded, source(blobWithPadding), everything, made.contents);
    const image = await openCached(padded, source(blobWithPadding));
    try {
      await image.layers[0].remote!.completeBlob();
    } finally {
      await image.close();
    }
    const handle = await padded.open(COPY, { readOnly: true });
    const copy = Buffer.alloc(blobWithPadding.length);
    await handle.read(copy, 0);
    await handle.close();
    expect(copy.equals(blobWithPadding)).toBe(true);
    // A source whose padding is not what the digest says cannot make it right.
    const wrong = new MemoryFileSystem();
    await buildEntry(wrong, COPY, spec, source(made.blob));
    await readBlocks(wrong, source(made.blob), everything, made.contents);
    const again = await openCached(wrong, source(made.blob));
    try {
      await expect(again.layers[0].remote!.completeBlob()).rejects.toMatchObject({ code: 'COWDISK_E_CORRUPT', message: /yet the copy hashes to/ });
    } finally {
      await again.close();
    }
  });

  test.each([
    ['unreachable', ErrorCode.REGISTRY, undefined],
    ['refusing the login', ErrorCode.AUTH, undefined],
    ['failing TLS', ErrorCode.TLS, undefined],
    ['missing the blob', ErrorCode.NOT_FOUND, undefined],
    ['saying the range is past the end', ErrorCode.OUT_OF_RANGE, undefined],
    ['unable to fetch at all', ErrorCode.UNSUPPORTED, undefined],
    ['failing with an OS error', ErrorCode.IO, Object.assign(new Error('no space'), { code: 'ENOSPC' })],
  ])('a source %s fails the read with an error an NBD client sees as EIO, and the next read tries again', async (_, code, cause) => {
    const fs = await cacheWith(made);
    let failing = true;
    const flaky = source(made.blob);
    const read = flaky.read;
    flaky.read = (offset, length) => (failing ? Promise.reject(new CowdiskError(code, 'the source failed', { cause })) : read(offset, length));
    const image = await openCached(fs, flaky);
    try {
      const err = await image.device.read(Buffer.alloc(BS), 0).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CowdiskError);
      expect(nbdErrno(err, Cmd.READ, 0)).toBe(NbdErrno.EIO);
      failing = false;
      const got = Buffer.alloc(BS);
      await image.device.read(got, 0);
      expect(got.equals(made.contents.subarray(0, BS))).toBe(true);
    } finally {
      await image.close();
    }
  });
});
