/**
 * What every hostile-file test does with a damaged file: open it, read it whole and ask its
 * extents, through WatchedFileSystem (which records reads past a file's end and files left open),
 * and expect either success or a typed CowdiskError naming the file.
 */
import { expect } from 'vitest';
import { CowdiskError } from '../../src/errors.js';
import { openImage } from '../../src/image/open.js';
import type { MemoryFileSystem } from '../../src/io/memory-file.js';
import { WatchedFileSystem } from './engine-files.js';

/** Opens `file`, reads it whole and asks its extents, returning what was thrown (or undefined). */
export async function exercise(fs: MemoryFileSystem, file: string): Promise<{ error: unknown; watched: WatchedFileSystem }> {
  const watched = new WatchedFileSystem(fs);
  let error: unknown;
  try {
    const image = (await openImage(file, { fs: watched, readOnly: true })).device;
    try {
      await image.read(Buffer.alloc(image.size), 0);
      await image.extents(0, image.size);
    } finally {
      await image.close();
    }
  } catch (err) {
    error = err;
  }
  expect(watched.outside, 'reads outside the file').toEqual([]);
  expect(watched.leaked, 'files left open').toEqual([]);
  return { error, watched };
}

/** Expects `error` to be a CowdiskError with one of `codes`, naming `file` in its path and message. */
export function expectTyped(error: unknown, codes: string[], file: string, what: string): void {
  if (!(error instanceof CowdiskError)) expect.fail(`${what}: expected a CowdiskError, got ${error instanceof Error ? error.stack : String(error)}`);
  expect(codes, `${what}: code ${error.code} (${error.message})`).toContain(error.code);
  expect(error.path, what).toBe(file);
  expect(error.message, what).toContain(file);
}

export function damaged(fs: MemoryFileSystem, file: string, change: (bytes: Buffer) => Buffer | void): void {
  const bytes = fs.get(file);
  fs.put(file, change(bytes) ?? bytes);
}

/** Lengths to cut a file of `length` bytes to: every structure boundary and a spread in between. */
export function cutPoints(length: number, boundaries: number[]): number[] {
  const points = new Set<number>();
  for (const b of boundaries) for (const d of [-1, 0, 1]) if (b + d >= 8 && b + d < length) points.add(b + d);
  for (let at = 8; at < length; at += Math.max(1, Math.floor(length / 40))) points.add(at);
  points.add(length - 1);
  return [...points].sort((a, b) => a - b);
}

