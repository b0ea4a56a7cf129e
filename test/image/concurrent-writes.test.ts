/**
 * Concurrency: requests that share blocks (and sub-blocks) but not bytes, issued all at once,
 * must all land. MemoryFileSystem.yieldEvery makes every file operation give way, so requests
 * really interleave inside the copy-up path (read the parent, write, update the map), which is
 * where a lost copy-up would overwrite one request's bytes with another's stale fill. Writes race
 * with each other and with zero/trim of neighbouring bytes, whose whiteouts and hole punches
 * must not take another request's data with them.
 */
import fc from 'fast-check';
import { expect, test } from 'vitest';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { openImage } from '../../src/image/open.js';
import { buildChain, pattern } from '../helpers/engine-chain.js';
import { DiskModel } from '../helpers/model.js';

const GEOMETRIES = [
  { blockSize: 4096, subBlocks: 1 },
  { blockSize: 65536, subBlocks: 1 },
  { blockSize: 65536, subBlocks: 16 },
  { blockSize: 1 << 20, subBlocks: 32 },
] as const;

type Kind = 'write' | 'zero' | 'trim';

const caseArb = fc.record({
  geometry: fc.constantFrom(...GEOMETRIES),
  seed: fc.integer({ min: 1, max: 2 ** 30 }),
  /** Cut points (in millionths of the region) splitting the region into disjoint requests. */
  cuts: fc.uniqueArray(fc.integer({ min: 1, max: 999_999 }), { minLength: 2, maxLength: 24 }),
  /** Snap each cut to a 4 KiB boundary, so zero/trim can cover whole sub-blocks. */
  snap: fc.array(fc.constantFrom(true, true, true, false), { minLength: 25, maxLength: 25 }),
  kinds: fc.array(fc.constantFrom<Kind>('write', 'write', 'zero', 'trim'), { minLength: 25, maxLength: 25 }),
  /** Issue order: a permutation key per request. */
  order: fc.array(fc.integer(), { minLength: 25, maxLength: 25 }),
  /** 4 KiB pieces of the region written (present) before the race, so whiteouts have data to punch. */
  prewrite: fc.array(fc.constantFrom(false, false, false, true), { minLength: 48, maxLength: 48 }),
});

test('requests sharing blocks but not bytes, issued concurrently, all land (no lost copy-up)', async () => {
  await fc.assert(
    fc.asyncProperty(caseArb, async ({ geometry, seed, cuts, snap, kinds, order, prewrite }) => {
      const fs = new MemoryFileSystem();
      const { blockSize, subBlocks } = geometry;
      const chain = await buildChain(fs, '/r', { depth: 3, base: 'raw', size: 4 * blockSize, blockSize, subBlocks, seed });
      const model = new DiskModel(chain.content);
      const dev = (await openImage(chain.overlay, { fs })).device;
      // The region: a block and a half around a block boundary, so requests share two blocks.
      const start = Math.floor(blockSize / 2);
      const length = Math.min(blockSize + blockSize / 2, 3 * 65536);
      for (let at = start, i = 0; at < start + length; at += 4096, i++) {
        if (!prewrite[i % prewrite.length]) continue;
        const data = pattern(seed + 1000 + i, 4096);
        await dev.write(data, at);
        model.write(data, at);
      }
      await dev.flush();
      const points = [
        ...new Set(
          cuts.map((c, i) => {
            const at = Math.floor((c / 1e6) * length);
            return start + (snap[i] ? at - (at % 4096) : at);
          }),
        ),
      ]
        .filter((p) => p > start && p < start + length)
        .sort((a, b) => a - b);
      const bounds = [start, ...points, start + length];
      const requests = bounds.slice(0, -1).map((from, i) => ({ from, to: bounds[i + 1], kind: kinds[i], key: order[i], seed: seed + 10 + i }));
      for (const r of requests) {
        if (r.kind === 'write') model.write(pattern(r.seed, r.to - r.from), r.from);
        else model.zero(r.from, r.to - r.from);
      }
      fs.yieldEvery = true;
      await Promise.all(
        [...requests]
          .sort((a, b) => a.key - b.key)
          .map((r) =>
            r.kind === 'write' ? dev.write(pattern(r.seed, r.to - r.from), r.from) : dev[r.kind](r.from, r.to - r.from),
          ),
      );
      fs.yieldEvery = false;
      const back = Buffer.alloc(dev.size);
      await dev.read(back, 0);
      if (!back.equals(model.bytes)) {
        const at = back.findIndex((b, i) => b !== model.bytes[i]);
        const culprit = requests.find((r) => at >= r.from && at < r.to);
        expect.fail(`byte ${at} reads ${back[at]}, expected ${model.bytes[at]} (from the ${culprit?.kind ?? 'untouched'} request ${culprit?.from}..${culprit?.to})`);
      }
      await dev.close();
    }),
    { numRuns: 80 },
  );
});

test('many writes racing to one absent block, each to its own bytes, all land', async () => {
  for (const { blockSize, subBlocks } of GEOMETRIES) {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/r', { depth: 2, base: 'snapshot', size: 2 * blockSize, blockSize, subBlocks, seed: 77 });
    const model = new DiskModel(chain.content);
    const dev = (await openImage(chain.overlay, { fs })).device;
    const pieces = 16;
    const piece = Math.floor(blockSize / pieces / 3);
    fs.yieldEvery = true;
    await Promise.all(
      Array.from({ length: pieces }, (_, i) => {
        const data = pattern(500 + i, piece);
        const at = i * 3 * piece + 7;
        model.write(data, at);
        return dev.write(data, at);
      }),
    );
    fs.yieldEvery = false;
    const back = Buffer.alloc(dev.size);
    await dev.read(back, 0);
    expect(back.equals(model.bytes), `${blockSize}/${subBlocks}`).toBe(true);
    await dev.close();
  }
});

test('a write of whole sub-blocks racing a trim of the only other present sub-block of its block keeps its data', async () => {
  const bs = 65536;
  for (const trimFirst of [false, true]) {
    for (let head = 0; head < 4; head++) {
      const fs = new MemoryFileSystem();
      const chain = await buildChain(fs, '/r', { depth: 2, base: 'raw', size: 4 * bs, blockSize: bs, subBlocks: 16, seed: 5 });
      const dev = (await openImage(chain.overlay, { fs })).device;
      await dev.write(pattern(1, 4096), bs);
      await dev.flush();
      const data = pattern(2, 4096);
      fs.yieldEvery = true;
      const write = () => dev.write(data, bs + 8 * 4096);
      const trim = () => dev.trim(bs, 4096);
      const first = trimFirst ? trim() : write();
      // Let the first request run `head` file operations ahead.
      for (let i = 0; i < head; i++) await new Promise((resolve) => setImmediate(resolve));
      await Promise.all([first, trimFirst ? write() : trim()]);
      fs.yieldEvery = false;
      const back = Buffer.alloc(4096);
      await dev.read(back, bs + 8 * 4096);
      expect(back.equals(data), `${trimFirst ? 'trim' : 'write'} first, ${head} operations ahead`).toBe(true);
      await dev.close();
    }
  }
});
