/**
 * Fuzzing: fast-check damages a small valid chain (an overlay with data, zero and absent blocks
 * over a snapshot with data, lz4 and zero blocks over a snapshot base; sealed layers of format
 * version 1 in one run, version 2 in another) with random byte flips
 * and truncations, aimed at whichever structure it picks, and, half the time, recomputes every
 * checksum afterwards so the damage reaches the parsers' bounds checks instead of stopping at a
 * CRC. Then the chain is opened, read whole and asked for its extents: that must either work or
 * throw a CowdiskError, and nothing else; no read may leave its file; and it must finish (a
 * generous per-case deadline turns a hang into a failure rather than a stuck suite).
 *
 * 300 cases per version run by default; COWDISK_FUZZ_RUNS=20000 runs a longer campaign (about 15 s here).
 */
import fc from 'fast-check';
import { expect, test } from 'vitest';
import { CowdiskError } from '../../src/errors.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { openImage } from '../../src/image/open.js';
import { type LayerVersion, buildChain, pattern } from '../helpers/engine-chain.js';
import { resealOverlay, resealSnapshot, snapshotRegions } from '../helpers/engine-damage.js';
import { WatchedFileSystem } from '../helpers/engine-files.js';

const BS = 4096;
const SIZE = 20 * BS - 300;
const DEADLINE_MS = 10_000;

interface Pristine {
  files: Map<string, Buffer>;
  overlay: string;
  sealed: string[];
}

/** The chain, built once; each case starts from a fresh file system holding these exact files. */
async function pristine(version: LayerVersion): Promise<Pristine> {
  const fs = new MemoryFileSystem();
  const chain = await buildChain(fs, '/f', { depth: 3, base: 'snapshot', size: SIZE, blockSize: BS, subBlocks: 1, seed: 31, version });
  const image = (await openImage(chain.overlay, { fs })).device;
  await image.write(pattern(2, 3 * BS + 77), 2 * BS + 5);
  await image.trim(9 * BS, 2 * BS);
  await image.close();
  const files = new Map(fs.list('/f').map((f) => [f, fs.get(f)]));
  return { files, overlay: chain.overlay, sealed: chain.sealed };
}

/** Byte ranges worth aiming at in each file: its metadata first, then anything. */
function targets(p: Pristine): Array<{ file: string; ranges: Array<[number, number]> }> {
  const overlay = p.files.get(p.overlay) as Buffer;
  const out = [{ file: p.overlay, ranges: [[0, 4096], [4096, 8192], [8192, 16384], [0, overlay.length]] as Array<[number, number]> }];
  for (const layer of p.sealed) {
    const bytes = p.files.get(layer) as Buffer;
    const r = snapshotRegions(bytes);
    const pieces = [...r.tables, ...r.blocks, ...r.frames].map((t): [number, number] => [t[0], t[1]]);
    out.push({ file: layer, ranges: [r.header, r.directory, ...pieces, [0, bytes.length]] });
  }
  return out;
}

const damageArb = fc.record({
  target: fc.nat(),
  flips: fc.array(fc.record({ range: fc.nat(), at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) }), { minLength: 0, maxLength: 6 }),
  /** Cut the file to this fraction of its length (in millionths), or leave it whole. */
  cut: fc.option(fc.integer({ min: 0, max: 999_999 }), { freq: 4 }),
  reseal: fc.boolean(),
});

type Damage = typeof damageArb extends fc.Arbitrary<infer T> ? T : never;

function apply(p: Pristine, d: Damage): { fs: MemoryFileSystem; file: string } {
  const fs = new MemoryFileSystem();
  for (const [file, bytes] of p.files) fs.put(file, bytes);
  const all = targets(p);
  const { file, ranges } = all[d.target % all.length];
  let bytes = Buffer.from(p.files.get(file) as Buffer);
  for (const flip of d.flips) {
    const [start, end] = ranges[flip.range % ranges.length];
    if (end > start) bytes[start + (flip.at % (end - start))] ^= flip.xor;
  }
  if (d.reseal) (file === p.overlay ? resealOverlay : resealSnapshot)(bytes);
  if (d.cut !== null) bytes = bytes.subarray(0, Math.floor((d.cut / 1e6) * bytes.length));
  fs.put(file, bytes);
  return { fs, file };
}

async function exercise(fs: WatchedFileSystem, top: string): Promise<void> {
  const image = (await openImage(top, { fs, readOnly: true })).device;
  try {
    await image.read(Buffer.alloc(image.size), 0);
    await image.extents(0, image.size);
  } finally {
    await image.close();
  }
}

function deadline<T>(work: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${DEADLINE_MS} ms (a hang?)`)), DEADLINE_MS);
  });
  return Promise.race([work, late]).finally(() => clearTimeout(timer));
}

for (const version of [1, 2] as const) test(`a damaged chain (format version ${version}) opens, reads and maps, or fails with a CowdiskError: nothing else, never outside its files`, async () => {
  const p = await pristine(version);
  await fc.assert(
    fc.asyncProperty(damageArb, fc.boolean(), async (damage, fromTop) => {
      const { fs, file } = apply(p, damage);
      const watched = new WatchedFileSystem(fs);
      const top = fromTop ? p.overlay : file;
      try {
        await deadline(exercise(watched, top), `opening ${top} with ${file} damaged`);
      } catch (err) {
        if (!(err instanceof CowdiskError)) throw err;
        expect(err.message.length).toBeGreaterThan(0);
      }
      expect(watched.outside).toEqual([]);
      expect(watched.leaked).toEqual([]);
    }),
    { numRuns: Number(process.env.COWDISK_FUZZ_RUNS ?? 300) },
  );
});
