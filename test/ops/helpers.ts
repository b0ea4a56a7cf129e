/**
 * Helpers for the lifecycle tests: what a whole disk reads, random work done through an overlay
 * while a flat model follows it, and the check every image a test leaves behind must pass.
 */
import { expect } from 'vitest';
import type { FileSystem } from '../../src/io/file.js';
import { checkImage } from '../../src/ops/check.js';
import type { BlockDevice } from '../../src/image/device.js';
import { openImage } from '../../src/image/open.js';
import { DiskModel } from '../helpers/model.js';
import { type Random, pattern } from '../helpers/engine-chain.js';

/** The whole disk `file` presents, read through a fresh read-only open. */
export async function readDisk(fs: FileSystem, file: string): Promise<Buffer> {
  const image = (await openImage(file, { fs, readOnly: true })).device;
  try {
    const out = Buffer.alloc(image.size);
    await image.read(out, 0);
    return out;
  } finally {
    await image.close();
  }
}

/**
 * `count` random writes (aligned or not, of data or of zeros), zeroes and trims through
 * `device`, mirrored in `model`. Ranges stay within `window` (default: the whole disk) so that a
 * test can keep its changes to a part of the disk.
 */
export async function scribble(device: BlockDevice, model: DiskModel, rng: Random, count: number, window?: [number, number]): Promise<void> {
  const [lo, hi] = window ?? [0, device.size];
  for (let i = 0; i < count; i++) {
    const span = hi - lo;
    const offset = lo + rng.below(span);
    const length = 1 + rng.below(Math.min(hi - offset, 3 * device.blockSize));
    const kind = rng.below(6);
    if (kind < 3) {
      const data = pattern(rng.below(1 << 30), length);
      await device.write(data, offset);
      model.write(data, offset);
    } else if (kind === 3) {
      const data = Buffer.alloc(length);
      await device.write(data, offset);
      model.write(data, offset);
    } else if (kind === 4) {
      await device.zero(offset, length);
      model.zero(offset, length);
    } else {
      await device.trim(offset, length);
      model.zero(offset, length);
    }
  }
}

/** Opens `file` for writing, runs `count` random changes mirrored in `model`, closes it. */
export async function scribbleFile(fs: FileSystem, file: string, model: DiskModel, rng: Random, count: number, window?: [number, number]): Promise<void> {
  const image = (await openImage(file, { fs })).device;
  try {
    await scribble(image, model, rng, count, window);
  } finally {
    await image.close();
  }
}

/** The paths of the layers of `file`'s chain, top first. */
export async function chainPaths(fs: FileSystem, file: string): Promise<string[]> {
  const image = (await openImage(file, { fs, readOnly: true })).device;
  try {
    return image.chain.map((l) => l.path);
  } finally {
    await image.close();
  }
}

/** `check` finds no error in `file` (and the chain beneath it). */
export async function expectChecks(fs: FileSystem, file: string): Promise<void> {
  const report = await checkImage(file, { fs });
  expect(report.problems.filter((p) => p.severity === 'error')).toEqual([]);
  expect(report.ok).toBe(true);
}

/** Asserts two disks read the same, naming the first differing byte (a Buffer diff is unreadable). */
export function expectSameDisk(actual: Buffer, expected: Buffer): void {
  expect(actual.length).toBe(expected.length);
  if (actual.equals(expected)) return;
  let i = 0;
  while (actual[i] === expected[i]) i++;
  expect.fail(`the disks differ first at byte ${i} (block of 64K ${Math.floor(i / 65536)}): ${actual[i]} where ${expected[i]} was expected`);
}
