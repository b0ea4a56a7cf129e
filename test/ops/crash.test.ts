/**
 * A power cut at every operation of every verb: the memory file system fails each operation from
 * the k-th on (the machine is off), then drops whatever was not made durable (all of it, or a
 * random subset in any order). What is left must open, read exactly the disk as it was (no verb
 * changes what the overlay reads), be the old chain or the new one, and pass `check`.
 *
 * An error at one operation while the machine stays up (EIO, a full disk) is the other way a verb
 * stops part-way: it must then remove the temporary files it made, which nothing else would.
 */
import { describe, expect, it } from 'vitest';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { cloneImage } from '../../src/ops/create.js';
import { commitOverlay } from '../../src/ops/commit.js';
import { flattenImage } from '../../src/ops/flatten.js';
import { gcImage } from '../../src/ops/gc.js';
import { rebaseOverlay } from '../../src/ops/rebase.js';
import { snapshotOverlay } from '../../src/ops/snapshot.js';
import { Random, buildChain } from '../helpers/engine-chain.js';
import { DiskModel } from '../helpers/model.js';
import { chainPaths, expectChecks, expectSameDisk, readDisk, scribbleFile } from './helpers.js';

const KiB = 1024;

interface Fixture {
  fs: MemoryFileSystem;
  overlay: string;
  sealed: string[];
  disk: Buffer;
}

/** overlay (written, with partial sub-blocks) -> layer1 -> base.snap, and /c/sibling.snap on base. */
async function buildFixture(): Promise<Fixture> {
  const fs = new MemoryFileSystem();
  const chain = await buildChain(fs, '/c', { depth: 3, base: 'snapshot', size: 10 * 16 * KiB + 1000, blockSize: 16 * KiB, subBlocks: 4, seed: 31 });
  await cloneImage(chain.sealed[1], '/c/other.cow', { fs });
  await scribbleFile(fs, '/c/other.cow', new DiskModel(await readDisk(fs, '/c/other.cow')), new Random(2), 6);
  await snapshotOverlay('/c/other.cow', '/c/sibling.snap', { fs });
  const model = new DiskModel(chain.content);
  await scribbleFile(fs, chain.overlay, model, new Random(1), 12);
  return { fs, overlay: chain.overlay, sealed: chain.sealed, disk: Buffer.from(model.bytes) };
}

let template: Fixture | undefined;

/** A fresh copy of the fixture (built once: copying the files is much cheaper than building them). */
async function fixture(): Promise<Fixture> {
  template ??= await buildFixture();
  const fs = new MemoryFileSystem();
  for (const file of template.fs.list('/')) fs.put(file, template.fs.get(file));
  return { ...template, fs };
}

interface Verb {
  name: string;
  run(f: Fixture): Promise<unknown>;
  /** What else must hold after a crash (beyond the overlay reading the same disk). */
  verify?(f: Fixture): Promise<void>;
}

const verbs: Verb[] = [
  { name: 'snapshot', run: (f) => snapshotOverlay(f.overlay, '/c/new.snap', { fs: f.fs }) },
  { name: 'commit', run: (f) => commitOverlay(f.overlay, { fs: f.fs, output: '/c/new.snap' }) },
  { name: 'commit --into the base', run: (f) => commitOverlay(f.overlay, { fs: f.fs, into: f.sealed[1], output: '/c/new.snap' }) },
  { name: 'rebase', run: (f) => rebaseOverlay(f.overlay, '/c/sibling.snap', { fs: f.fs }) },
  { name: 'rebase --unsafe', run: (f) => rebaseOverlay(f.overlay, f.sealed[0], { fs: f.fs, unsafe: true }) },
  { name: 'gc', run: (f) => gcImage(f.overlay, { fs: f.fs }) },
  {
    name: 'flatten',
    run: (f) => flattenImage(f.overlay, '/c/flat.snap', { fs: f.fs }),
    async verify(f) {
      if (await f.fs.exists('/c/flat.snap')) expectSameDisk(await readDisk(f.fs, '/c/flat.snap'), f.disk);
    },
  },
  {
    name: 'flatten --overlay',
    run: (f) => flattenImage(f.overlay, '/c/flat.cow', { fs: f.fs, overlay: true }),
    async verify(f) {
      if (await f.fs.exists('/c/flat.cow')) expectSameDisk(await readDisk(f.fs, '/c/flat.cow'), f.disk);
    },
  },
];

/** Runs `verb` on a fresh fixture with the power failing at its operation `k` (never, if k is Infinity). */
async function runWithCut(verb: Verb, k: number, keep: 'none' | 'random', seed: number): Promise<{ f: Fixture; completed: boolean; operations: number }> {
  const f = await fixture();
  const start = f.fs.operations;
  f.fs.inject = () => (f.fs.operations - start - 1 >= k ? new Error('power cut') : undefined);
  let completed = true;
  try {
    await verb.run(f);
  } catch (err) {
    if (!String((err as Error).message).includes('power cut')) throw err;
    completed = false;
  }
  const operations = f.fs.operations - start;
  f.fs.inject = undefined;
  f.fs.crash({ keep, random: new Random(seed).next.bind(new Random(seed)) });
  return { f, completed, operations };
}

describe('a crash in the middle of a verb leaves the old chain or the new one, reading the same disk', () => {
  for (const verb of verbs) {
    it(verb.name, async () => {
      const clean = await runWithCut(verb, Infinity, 'none', 0);
      expect(clean.completed).toBe(true);
      const oldChain = await chainPaths((await fixture()).fs, clean.f.overlay);
      const newChain = await chainPaths(clean.f.fs, clean.f.overlay);
      expectSameDisk(await readDisk(clean.f.fs, clean.f.overlay), clean.f.disk);
      let sawOld = false;
      let sawNew = false;
      // k == operations: the power fails just after the verb returned.
      for (let k = 0; k <= clean.operations; k++) {
        for (const keep of ['none', 'random'] as const) {
          const { f } = await runWithCut(verb, k, keep, k);
          const where = `power cut at operation ${k} of ${clean.operations} (unsynced changes kept: ${keep})`;
          const chain = await chainPaths(f.fs, f.overlay);
          expect([oldChain, newChain], where).toContainEqual(chain);
          if (chain.join() === oldChain.join()) sawOld = true;
          if (chain.join() === newChain.join()) sawNew = true;
          expectSameDisk(await readDisk(f.fs, f.overlay), f.disk);
          await verb.verify?.(f);
          await expectChecks(f.fs, f.overlay);
        }
      }
      expect(sawOld).toBe(true);
      if (newChain.join() !== oldChain.join()) expect(sawNew).toBe(true);
    });
  }
});

/** The temporary names the lifecycle verbs give files before renaming them into place. */
const VERB_TEMPORARY = /\.(next|flatten)-\d+$/;

describe('a verb failing at any one operation (an I/O error, a full disk) leaves none of its temporary files', () => {
  for (const verb of verbs) {
    it(verb.name, async () => {
      const clean = await runWithCut(verb, Infinity, 'none', 0);
      const before = (await fixture()).fs.list('/');
      for (let k = 0; k < clean.operations; k++) {
        const f = await fixture();
        const start = f.fs.operations;
        f.fs.inject = () => (f.fs.operations - start - 1 === k ? new Error('injected I/O error') : undefined);
        const failed = await verb.run(f).then(
          () => false,
          (err: Error) => {
            if (!err.message.includes('injected I/O error')) throw err;
            return true;
          },
        );
        f.fs.inject = undefined;
        const where = `an error at operation ${k} of ${clean.operations}`;
        if (failed) expect(f.fs.list('/').filter((file) => !before.includes(file) && VERB_TEMPORARY.test(file)), where).toEqual([]);
        expectSameDisk(await readDisk(f.fs, f.overlay), f.disk);
      }
    });
  }
});
