/**
 * Property: any sequence of work and lifecycle verbs on an overlay leaves it reading exactly as a
 * flat byte array to which only the work (writes, zeroes, trims) was applied. fast-check draws
 * the chain, its geometry and the sequence: random work, snapshot, commit into the parent or into
 * any lower layer, rebase onto any lower layer (safe), gc, and flatten followed by carrying on in
 * a clone of the flattened layer. The disk is compared after every step, and `check` must pass at
 * the end. 80 cases by default; COWDISK_LIFECYCLE_RUNS=600 searches longer (about 15 s).
 */
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { cloneImage } from '../../src/ops/create.js';
import { openImage } from '../../src/image/open.js';
import { commitOverlay } from '../../src/ops/commit.js';
import { flattenImage } from '../../src/ops/flatten.js';
import { gcImage } from '../../src/ops/gc.js';
import { rebaseOverlay } from '../../src/ops/rebase.js';
import { snapshotOverlay } from '../../src/ops/snapshot.js';
import { Random, buildChain } from '../helpers/engine-chain.js';
import { DiskModel } from '../helpers/model.js';
import { chainPaths, expectChecks, expectSameDisk, readDisk, scribbleFile } from './helpers.js';

type Step = { verb: 'work' | 'snapshot' | 'commit' | 'commit-into' | 'rebase' | 'gc' | 'flatten'; pick: number; seed: number };

const stepArb: fc.Arbitrary<Step> = fc.record({
  verb: fc.constantFrom<Step['verb']>('work', 'work', 'work', 'snapshot', 'snapshot', 'commit', 'commit-into', 'rebase', 'gc', 'flatten'),
  pick: fc.nat(1000),
  seed: fc.nat(2 ** 30),
});

const KiB = 1024;

describe('lifecycle sequences', () => {
  test('any sequence of work, snapshot, commit, rebase, gc and flatten keeps the disk the model says', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          depth: fc.integer({ min: 1, max: 4 }),
          base: fc.constantFrom<'raw' | 'snapshot'>('raw', 'snapshot'),
          blockSize: fc.constantFrom(4 * KiB, 16 * KiB, 64 * KiB),
          blocks: fc.integer({ min: 3, max: 12 }),
          tail: fc.constantFrom(0, 1000),
          seed: fc.nat(2 ** 30),
        }),
        fc.array(stepArb, { minLength: 1, maxLength: 10 }),
        async (spec, steps) => {
          const fs = new MemoryFileSystem();
          const size = spec.blocks * spec.blockSize + spec.tail;
          const chain = await buildChain(fs, '/p', { depth: spec.depth, base: spec.base, size, blockSize: spec.blockSize, seed: spec.seed });
          const model = new DiskModel(chain.content);
          let overlay = chain.overlay;
          let n = 0;
          for (const step of steps) {
            const below = (await chainPaths(fs, overlay)).slice(1);
            const lower = below[step.pick % Math.max(1, below.length)];
            switch (step.verb) {
              case 'work':
                await scribbleFile(fs, overlay, model, new Random(step.seed), 1 + (step.seed % 8));
                break;
              case 'snapshot':
                await snapshotOverlay(overlay, `/p/s${n++}.snap`, { fs });
                break;
              case 'commit':
                if (below.length > 0) await commitOverlay(overlay, { fs, output: `/p/c${n++}.snap` });
                break;
              case 'commit-into':
                if (lower) await commitOverlay(overlay, { fs, into: lower, output: `/p/c${n++}.snap` });
                break;
              case 'rebase':
                if (lower) await rebaseOverlay(overlay, lower, { fs });
                break;
              case 'gc':
                await gcImage(overlay, { fs });
                break;
              case 'flatten':
                await flattenImage(overlay, `/p/f${n}.snap`, { fs });
                overlay = `/p/f${n++}.cow`;
                await cloneImage(`/p/f${n - 1}.snap`, overlay, { fs });
                break;
            }
            expectSameDisk(await readDisk(fs, overlay), model.bytes);
          }
          await expectChecks(fs, overlay);
          const image = (await openImage(overlay, { fs, readOnly: true })).device;
          expect(image.size).toBe(size);
          await image.close();
        },
      ),
      { numRuns: Number(process.env.COWDISK_LIFECYCLE_RUNS ?? 80) },
    );
  });
});
