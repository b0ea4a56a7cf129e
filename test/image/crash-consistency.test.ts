/**
 * Crash consistency: power is cut at hundreds of points of a random workload on an overlay over a
 * chain, and the image that remains must keep DESIGN.md's promise.
 *
 * How a crash is made. A workload (writes aligned and not, FUA writes, zero, trim, flush, close
 * and reopen) is drawn from a seed and first run to the end once, to count the file operations it
 * makes (MemoryFileSystem.operations). Then, for each chosen crash point N, the chain is built
 * again from the same seed and the workload replayed with an injected failure at its N-th file
 * operation and every one after it (so nothing issued later reaches the "disk"); the request in
 * progress fails, the workload stops, and MemoryFileSystem.crash() drops what was not synced:
 * everything (keep 'none'), or an arbitrary subset with writes torn at 512-byte sectors (keep
 * 'random' with tear).
 *
 * What is checked after the crash, per byte (test/helpers/model.ts, CrashModel): the image opens;
 * each byte reads either its value at the last completed flush (or at the FUA request that last
 * covered it) or a value some request wrote to it since, including the request cut short by the
 * crash, which may have landed in part. A request adds its bytes to the candidates when it is
 * issued; a flush or clean close that completes collapses every byte to its current value; a FUA
 * request collapses its own range. So "everything flushed is there" and "never zeros or garbage
 * where the parent had data, unless a zero, trim or write covered it" are both this one check: a
 * parent byte no request touched has a single candidate, the parent's value.
 *
 * Then: the dirty flag is set if a change was answered and no close began since; `check`
 * finds no errors; `check --repair` clears the mark and changes no byte the disk reads.
 */
import { describe, expect, test } from 'vitest';
import { CowdiskError, ErrorCode } from '../../src/errors.js';
import type { CrashOptions } from '../../src/io/memory-file.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { checkImage } from '../../src/ops/check.js';
import { type Image, openImage } from '../../src/image/open.js';
import type { OverlayDevice } from '../../src/image/overlay-device.js';
import { type ChainSpec, Random, buildChain, pattern } from '../helpers/engine-chain.js';
import { CrashModel } from '../helpers/model.js';

type Step =
  | { kind: 'write'; offset: number; length: number; seed: number; fua: boolean }
  | { kind: 'zero' | 'trim'; offset: number; length: number; fua: boolean }
  | { kind: 'flush' | 'reopen' };

/** A random workload on a disk of `size` bytes, mostly near block boundaries where copy-up happens. */
function workload(seed: number, size: number, blockSize: number, steps: number): Step[] {
  const rng = new Random(seed);
  const out: Step[] = [];
  for (let i = 0; i < steps; i++) {
    const roll = rng.below(20);
    const aligned = rng.below(3) === 0;
    const unit = aligned ? 4096 : 1;
    let offset = rng.below(size);
    offset -= offset % unit;
    let length = 1 + rng.below(Math.floor(1.5 * blockSize));
    length = Math.max(unit, length - (length % unit));
    length = Math.min(length, size - offset);
    const fua = rng.below(8) === 0;
    if (roll < 11) out.push({ kind: 'write', offset, length, seed: rng.below(1 << 30), fua });
    else if (roll < 13) out.push({ kind: 'zero', offset, length, fua });
    else if (roll < 15) out.push({ kind: 'trim', offset, length, fua });
    else if (roll < 19) out.push({ kind: 'flush' });
    else out.push({ kind: 'reopen' });
  }
  return out;
}

interface Run {
  fs: MemoryFileSystem;
  overlay: string;
  model: CrashModel;
  /** A change was answered and no close has begun since: the dirty flag must be on disk. */
  dirty: boolean;
  /** The failure that stopped the workload (the injected power cut), if any. */
  stoppedBy: unknown;
  /** File operations the workload made. */
  operations: number;
}

function isPowerCut(err: unknown): boolean {
  return err instanceof CowdiskError && err.code === ErrorCode.IO && err.message.includes('(injected)');
}

/** Builds the chain and runs the workload, cutting the power at its `crashAt`-th file operation. */
async function runWorkload(spec: ChainSpec, steps: Step[], crashAt = Infinity): Promise<Run> {
  const fs = new MemoryFileSystem();
  const chain = await buildChain(fs, '/k', spec);
  const model = new CrashModel(chain.content);
  const start = fs.operations;
  fs.inject = () => (fs.operations - start >= crashAt ? new Error('power cut') : undefined);
  const run: Run = { fs, overlay: chain.overlay, model, dirty: false, stoppedBy: undefined, operations: 0 };
  let dev: Image | undefined;
  try {
    dev = (await openImage(chain.overlay, { fs })).device;
    for (const step of steps) {
      switch (step.kind) {
        case 'write':
        case 'zero':
        case 'trim': {
          const data = step.kind === 'write' ? pattern(step.seed, step.length) : Buffer.alloc(step.length);
          model.issue(step.offset, data);
          if (step.kind === 'write') await dev.write(data, step.offset, { fua: step.fua });
          else await dev[step.kind](step.offset, step.length, { fua: step.fua });
          if (step.fua) model.answeredFua(step.offset, data);
          else model.answered(step.offset, data);
          run.dirty = true;
          break;
        }
        case 'flush':
          await dev.flush();
          model.flushed();
          break;
        case 'reopen':
          // Once a close has begun, its flush may complete and the mark be cleared at any moment.
          run.dirty = false;
          await dev.close();
          model.flushed();
          dev = (await openImage(chain.overlay, { fs })).device;
          break;
      }
    }
    run.dirty = false;
    await dev.close();
    model.flushed();
  } catch (err) {
    if (!isPowerCut(err)) throw err;
    run.stoppedBy = err;
  }
  fs.inject = undefined;
  run.operations = fs.operations - start;
  return run;
}

function overlayOf(image: Image): OverlayDevice {
  if (!image.overlay) throw new Error(`${image.path} opened as a ${image.kind}, not an overlay`);
  return image.overlay;
}

async function readWhole(image: Image): Promise<Buffer> {
  const buf = Buffer.alloc(image.device.size);
  await image.device.read(buf, 0);
  return buf;
}

/** Cuts the power, reopens, and checks everything the header comment promises. */
async function crashAndVerify(spec: ChainSpec, steps: Step[], crashAt: number, crash: CrashOptions, check: boolean): Promise<void> {
  const run = await runWorkload(spec, steps, crashAt);
  const where = `crash at file operation ${crashAt} (${JSON.stringify({ keep: crash.keep ?? 'none', tear: crash.tear ?? false })})`;
  run.fs.crash(crash);
  const image = await openImage(run.overlay, { fs: run.fs });
  const actual = await readWhole(image);
  const violation = run.model.violation(actual);
  if (violation) expect.fail(`${where}: ${violation}`);
  if (run.dirty) expect(overlayOf(image).file.header.dirty, `${where}: the dirty flag`).toBe(true);
  await image.close();
  if (!check) return;

  const report = await checkImage(run.overlay, { fs: run.fs });
  const errors = report.problems.filter((p) => p.severity === 'error');
  if (errors.length > 0) expect.fail(`${where}: check found ${JSON.stringify(errors)}`);
  await checkImage(run.overlay, { fs: run.fs, repair: true });
  const repaired = await openImage(run.overlay, { fs: run.fs, readOnly: true });
  expect(overlayOf(repaired).file.header.dirty, `${where}: repair clears the dirty flag`).toBe(false);
  if (!(await readWhole(repaired)).equals(actual)) expect.fail(`${where}: repair changed what the disk reads`);
  await repaired.close();
}

/** At most `count` crash points spread over 1..total, always including the first and last. */
function crashPoints(total: number, count: number): number[] {
  if (total <= count) return Array.from({ length: total }, (_, i) => i + 1);
  return [...new Set(Array.from({ length: count }, (_, i) => 1 + Math.round((i * (total - 1)) / (count - 1))))];
}

const SCENARIOS: Array<{ name: string; spec: ChainSpec; steps: number; points: number }> = [
  {
    name: '64 KiB blocks, 16 sub-blocks, over a snapshot over a raw base',
    spec: { depth: 3, base: 'raw', size: 6 * 65536 - 1000, blockSize: 65536, seed: 11 },
    steps: 24,
    points: 60,
  },
  {
    name: '4 KiB blocks over an imported snapshot',
    spec: { depth: 2, base: 'snapshot', size: 20 * 4096, blockSize: 4096, subBlocks: 1, seed: 12 },
    steps: 30,
    points: 60,
  },
  {
    name: '64 KiB blocks, whole-block copy-up, four layers deep',
    spec: { depth: 4, base: 'snapshot', size: 5 * 65536, blockSize: 65536, subBlocks: 1, seed: 13 },
    steps: 24,
    points: 45,
  },
  {
    name: 'an overlay with no parent',
    spec: { depth: 1, base: 'raw', size: 6 * 65536, blockSize: 65536, seed: 14 },
    steps: 24,
    points: 30,
  },
];

describe('a crash at any point leaves an image that opens and reads old or new data, never anything else', () => {
  for (const scenario of SCENARIOS) {
    test(scenario.name, async () => {
      const steps = workload(scenario.spec.seed * 101, scenario.spec.size, scenario.spec.blockSize, scenario.steps);
      const full = await runWorkload(scenario.spec, steps);
      expect(full.stoppedBy).toBeUndefined();
      const points = crashPoints(full.operations, scenario.points);
      for (const [i, point] of points.entries()) {
        // check and repair (the slow part: every sealed block is hashed) at every other point.
        await crashAndVerify(scenario.spec, steps, point, { keep: 'none' }, i % 2 === 0);
        const rng = new Random(point * 7919 + i);
        await crashAndVerify(scenario.spec, steps, point, { keep: 'random', tear: true, random: () => rng.next() }, i % 2 === 1);
      }
    });
  }
});

test('the crash model itself rejects a byte that no crash could produce', () => {
  const model = new CrashModel(Buffer.from([1, 2, 3, 4]));
  model.issue(1, Buffer.from([9]));
  model.answered(1, Buffer.from([9]));
  expect(model.violation(Buffer.from([1, 9, 3, 4]))).toBeUndefined();
  expect(model.violation(Buffer.from([1, 2, 3, 4]))).toBeUndefined();
  expect(model.violation(Buffer.from([1, 0, 3, 4]))).toMatch(/byte 1/);
  model.flushed();
  expect(model.violation(Buffer.from([1, 2, 3, 4]))).toMatch(/byte 1/);
  model.issue(2, Buffer.from([7, 7]));
  model.answeredFua(2, Buffer.from([7, 7]));
  expect(model.violation(Buffer.from([1, 9, 3, 7]))).toMatch(/byte 2/);
});

test('the crash model keeps a failed request possible until a later answered request covering it is flushed', () => {
  const model = new CrashModel(Buffer.from([1, 2, 3, 4]));
  model.issue(0, Buffer.from([5]));
  model.answered(0, Buffer.from([5]));
  model.issue(0, Buffer.from([6, 6]));
  model.failed(0, Buffer.from([6, 6]));
  model.flushed();
  // The write answered before the failure does not settle it.
  expect(model.violation(Buffer.from([6, 6, 3, 4]))).toBeUndefined();
  model.issue(1, Buffer.from([7]));
  model.answered(1, Buffer.from([7]));
  expect(model.violation(Buffer.from([6, 6, 3, 4]))).toBeUndefined();
  model.flushed();
  expect(model.violation(Buffer.from([6, 7, 3, 4]))).toBeUndefined();
  expect(model.violation(Buffer.from([6, 6, 3, 4]))).toMatch(/byte 1/);
});

test('the crash model lets an abandoned device lose what it answered since its last flush, and nothing before', () => {
  const model = new CrashModel(Buffer.from([1, 2, 3, 4]));
  model.issue(0, Buffer.from([5]));
  model.answered(0, Buffer.from([5]));
  model.flushed();
  model.issue(2, Buffer.from([8]));
  model.answered(2, Buffer.from([8]));
  model.abandoned();
  model.flushed();
  expect(model.violation(Buffer.from([5, 2, 3, 4]))).toBeUndefined();
  expect(model.violation(Buffer.from([5, 2, 8, 4]))).toBeUndefined();
  expect(model.violation(Buffer.from([1, 2, 3, 4]))).toMatch(/byte 0/);
});
