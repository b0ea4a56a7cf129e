/**
 * What the CLI tests share: the spawned `cowdisk` (test/helpers/cli.ts runs the built bin as a
 * user does; `npm test` builds first), a scratch directory per test file, raw images of known
 * content, and the few facts a test reads back from files (bytes on disk, byte equality by cmp).
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, mkdtempSync, openSync, readSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll } from 'vitest';
import { run } from '../helpers/nbd-tools.js';
import { cowdisk, type CliResult } from '../helpers/cli.js';

export { cowdisk, type CliResult };

/** A directory removed when the test file ends; `at(name)` is a path inside it. */
export function scratchDir(): { dir: string; at: (name: string) => string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'cowdisk-cli-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  return { dir, at: (name) => path.join(dir, name) };
}

export const KiB = 1024;
export const MiB = 1024 * KiB;

/**
 * Writes a raw image block by block from a pattern, one letter a block: `r` random bytes (stored
 * raw, lz4 cannot shrink them), `t` repetitive text (stored lz4), `z` zeros (a zero entry),
 * `h` half random, half zeros (stored: a block is zero only if all of it is). Zeros are written
 * as bytes, not holes, so the file is as large on disk as it says. Returns the file's content.
 */
export function writeRaw(file: string, pattern: string, blockSize = 64 * KiB): Buffer {
  const text = Buffer.from('cowdisk test block; '.repeat(Math.ceil(blockSize / 20))).subarray(0, blockSize);
  const blocks = [...pattern].map((letter) => {
    switch (letter) {
      case 'r':
        return randomBytes(blockSize);
      case 't':
        return text;
      case 'z':
        return Buffer.alloc(blockSize);
      case 'h':
        return Buffer.concat([randomBytes(blockSize / 2), Buffer.alloc(blockSize / 2)]);
      default:
        throw new Error(`unknown block letter ${letter}`);
    }
  });
  const content = Buffer.concat(blocks);
  writeFileSync(file, content);
  return content;
}

/** A pattern of `blocks` letters mixing every kind in runs of different lengths. */
export function mixedPattern(blocks: number): string {
  const cycle = 'rrrzzzzttrhzzzzzzzzrrtzz';
  return cycle.repeat(Math.ceil(blocks / cycle.length)).slice(0, blocks);
}

/** Bytes a file occupies on disk (st_blocks * 512), what `du` reports. */
export function bytesOnDisk(file: string): number {
  return statSync(file).blocks * 512;
}

/** Whether two files hold the same bytes, by cmp(1) as a user would check. */
export async function sameBytes(a: string, b: string): Promise<boolean> {
  if (!existsSync('/usr/bin/cmp')) throw new Error('cmp is missing: install the Debian package diffutils');
  const result = await run('/usr/bin/cmp', [a, b], { allowFailure: true });
  if (result.code === 2) throw new Error(`cmp could not compare ${a} and ${b}: ${result.stderr}`);
  return result.code === 0;
}

/** Runs cowdisk and fails the test with its output unless it exits 0. */
export async function ok(args: string[]): Promise<CliResult> {
  const result = await cowdisk(args);
  if (result.code !== 0) throw new Error(`cowdisk ${args.join(' ')} exited with ${result.code}:\n${result.stderr}${result.stdout}`);
  return result;
}

/** Runs `cowdisk ... --json` and parses what it prints. */
export async function json<T = any>(args: string[]): Promise<T> {
  return JSON.parse((await ok([...args, '--json'])).stdout) as T;
}

/** Flips every bit of one byte of a file (sealed layers are 0444: made writable first). */
export function flipByte(file: string, at: number): void {
  chmodSync(file, 0o644);
  const fd = openSync(file, 'r+');
  try {
    const byte = Buffer.alloc(1);
    readSync(fd, byte, 0, 1, at);
    byte[0] ^= 0xff;
    writeSync(fd, byte, 0, 1, at);
  } finally {
    closeSync(fd);
  }
}
