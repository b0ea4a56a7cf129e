/**
 * Property: whatever happens to an overlay on a chain, it reads exactly as a flat byte array
 * (test/helpers/model.ts) to which the same writes and zeroes were applied.
 *
 * fast-check draws a chain (depth 1 to 5: a bare overlay, or an overlay over a raw or imported
 * base with up to three snapshot layers between, each holding a random mix of data, zero and
 * absent blocks), a geometry (4 KiB, 64 KiB, 1 MiB and 2 MiB blocks; one sub-block per block or
 * the default; a size that may end inside a block) and a sequence of requests: reads, writes
 * (aligned to a sub-block or block, or not), zero (with and without noHole), trim, flush, FUA,
 * extents, and close-and-reopen. Every read is compared with the model as it happens; extents
 * must tile the range and report zeros only where the model is zero; the final disk is compared
 * whole, after one more reopen. Most runs use MemoryFileSystem; a few use real files in a
 * temporary directory, where hole punching and sync are the kernel's.
 *
 * 60 in-memory cases run by default; COWDISK_MODEL_RUNS=800 runs a longer search (about 25 s).
 */
import * as fsp from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { defaultSubBlocks } from '../../src/format/constants.js';
import type { FileSystem } from '../../src/io/file.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { RealFileSystem } from '../../src/io/real-file.js';
import type { BlockDevice, Extent } from '../../src/image/device.js';
import { type Image, openImage } from '../../src/image/open.js';
import { type ChainSpec, buildChain, pattern } from '../helpers/engine-chain.js';
import { DiskModel } from '../helpers/model.js';

const GEOMETRIES = [
  { blockSize: 4096, subBlocks: 1, blocks: 9 },
  { blockSize: 65536, subBlocks: 1, blocks: 6 },
  { blockSize: 65536, subBlocks: undefined, blocks: 6 },
  { blockSize: 1 << 20, subBlocks: 1, blocks: 3 },
  { blockSize: 1 << 20, subBlocks: undefined, blocks: 3 },
  { blockSize: 2 << 20, subBlocks: 1, blocks: 2 },
] as const;

type OpKind = 'read' | 'write' | 'zero' | 'zero-nohole' | 'trim' | 'flush' | 'extents' | 'reopen';

interface Op {
  kind: OpKind;
  /** Where, as a fraction of the disk (in millionths). */
  at: number;
  /** How long, as a fraction of 2.5 blocks (in millionths). */
  len: number;
  /** 0: any byte; 1: whole sub-blocks; 2: whole blocks. */
  align: 0 | 1 | 2;
  fua: boolean;
  seed: number;
}

const opArb: fc.Arbitrary<Op> = fc.record({
  kind: fc.constantFrom<OpKind>('read', 'write', 'write', 'write', 'zero', 'zero-nohole', 'trim', 'flush', 'extents', 'reopen'),
  at: fc.integer({ min: 0, max: 999_999 }),
  len: fc.integer({ min: 0, max: 999_999 }),
  align: fc.constantFrom<0 | 1 | 2>(0, 0, 1, 2),
  fua: fc.boolean(),
  seed: fc.integer({ min: 0, max: 2 ** 30 }),
});

const specArb = fc.record({
  geometry: fc.constantFrom(...GEOMETRIES),
  depth: fc.integer({ min: 1, max: 5 }),
  base: fc.constantFrom<'raw' | 'snapshot'>('raw', 'snapshot'),
  /** Bytes cut from the end of the last block (0: the size is a whole number of blocks). */
  tail: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 4095 }), fc.integer({ min: 1, max: 1 << 20 })),
  seed: fc.integer({ min: 1, max: 2 ** 30 }),
});

type Spec = typeof specArb extends fc.Arbitrary<infer T> ? T : never;

function chainSpec(spec: Spec): ChainSpec {
  const { blockSize, subBlocks, blocks } = spec.geometry;
  const size = blocks * blockSize - (spec.tail % blockSize);
  return { depth: spec.depth, base: spec.base, size, blockSize, subBlocks, seed: spec.seed };
}

/** The byte range an op covers on this disk. */
function range(op: Op, size: number, blockSize: number, subBlockSize: number): [number, number] {
  const unit = op.align === 2 ? blockSize : op.align === 1 ? subBlockSize : 1;
  let offset = Math.floor((op.at / 1e6) * size);
  offset -= offset % unit;
  let length = Math.max(1, Math.floor((op.len / 1e6) * 2.5 * blockSize));
  length = Math.max(unit, length - (length % unit));
  return [offset, Math.min(length, size - offset)];
}

/** Extents must tile [offset, offset + length) and say zero/hole only where the model reads zeros. */
function checkExtents(extents: Extent[], offset: number, length: number, model: DiskModel, layers: number): void {
  let at = offset;
  for (const e of extents) {
    expect(e.offset, 'extents are consecutive').toBe(at);
    expect(e.length, 'extents are not empty').toBeGreaterThan(0);
    expect(e.layer).toBeGreaterThanOrEqual(-1);
    expect(e.layer).toBeLessThan(layers);
    if (e.kind !== 'data') expect(model.read(e.offset, e.length).every((b) => b === 0), `${e.kind} extent at ${e.offset} reads zeros`).toBe(true);
    at += e.length;
  }
  expect(at, 'extents cover the range').toBe(offset + length);
}

async function readBack(dev: BlockDevice, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length, 0xcc);
  await dev.read(buf, offset);
  return buf;
}

async function run(fs: FileSystem, dir: string, spec: Spec, ops: Op[]): Promise<void> {
  const cs = chainSpec(spec);
  const chain = await buildChain(fs, dir, cs);
  const model = new DiskModel(chain.content);
  const subBlockSize = cs.blockSize / (cs.subBlocks ?? defaultSubBlocks(cs.blockSize));
  let dev: Image = (await openImage(chain.overlay, { fs })).device;
  try {
    for (const [i, op] of ops.entries()) {
      const [offset, length] = range(op, cs.size, cs.blockSize, subBlockSize);
      const where = `op ${i} (${op.kind} ${offset}+${length})`;
      switch (op.kind) {
        case 'read': {
          const back = await readBack(dev, offset, length);
          if (!back.equals(model.read(offset, length))) expect.fail(`${where}: read differs from the model`);
          break;
        }
        case 'write': {
          const data = pattern(op.seed, length);
          await dev.write(data, offset, { fua: op.fua });
          model.write(data, offset);
          break;
        }
        case 'zero':
        case 'zero-nohole':
          await dev.zero(offset, length, { noHole: op.kind === 'zero-nohole', fua: op.fua });
          model.zero(offset, length);
          break;
        case 'trim':
          await dev.trim(offset, length, { fua: op.fua });
          model.zero(offset, length);
          break;
        case 'flush':
          await dev.flush();
          break;
        case 'extents':
          checkExtents(await dev.extents(offset, length), offset, length, model, dev.chain.length);
          break;
        case 'reopen':
          await dev.close();
          dev = (await openImage(chain.overlay, { fs })).device;
          break;
      }
    }
    checkExtents(await dev.extents(0, cs.size), 0, cs.size, model, dev.chain.length);
    await dev.close();
    dev = (await openImage(chain.overlay, { fs })).device;
    if (!(await readBack(dev, 0, cs.size)).equals(model.bytes)) expect.fail('the whole disk differs from the model after a reopen');
  } finally {
    await dev.close();
  }
}

describe('an overlay on any chain reads as a flat byte array', () => {
  test('in memory', async () => {
    await fc.assert(
      fc.asyncProperty(specArb, fc.array(opArb, { minLength: 1, maxLength: 30 }), async (spec, ops) => {
        await run(new MemoryFileSystem(), '/p', spec, ops);
      }),
      { numRuns: Number(process.env.COWDISK_MODEL_RUNS ?? 60) },
    );
  });

  test('on real files', async () => {
    const realSpec = specArb.filter((s) => s.geometry.blockSize <= 65536);
    await fc.assert(
      fc.asyncProperty(realSpec, fc.array(opArb, { minLength: 1, maxLength: 20 }), async (spec, ops) => {
        const dir = fsp.mkdtempSync(path.join(tmpdir(), 'cowdisk-model-'));
        try {
          await run(new RealFileSystem(), dir, spec, ops);
        } finally {
          fsp.rmSync(dir, { recursive: true, force: true });
        }
      }),
      { numRuns: 6 },
    );
  });
});
