/**
 * Chains for the remote-layer tests, made by the engine itself: a base layer imported from a raw
 * disk of random blocks (incompressible, so a block's stored size is its size), zero blocks and
 * lz4-friendly blocks between them, and a second layer on it holding a few rewritten blocks,
 * sealed by `snapshot`. Plus what the tests measure against: each block's stored range in the
 * local files, and the bytes a disk reads.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openSealedFile } from '../../src/image/open-layer.js';
import { realFileSystem } from '../../src/io/real-file.js';
import type { BlockDevice } from '../../src/image/device.js';
import { openImage } from '../../src/image/open.js';
import { cloneImage } from '../../src/ops/create.js';
import { importRaw } from '../../src/ops/import.js';
import { snapshotOverlay } from '../../src/ops/snapshot.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;

export interface TestChain {
  dir: string;
  base: string;
  /** The top layer, on `base`. */
  app: string;
  size: number;
  blockSize: number;
  /** What the disk reads through `app`. */
  contents: Buffer;
}

/** Block `b` of the base: random (b % 4 of 0, 1), zeros (2), or a compressible pattern (3). */
function baseBlock(b: number, blockSize: number): Buffer {
  if (b % 4 === 2) return Buffer.alloc(blockSize);
  if (b % 4 === 3) return Buffer.alloc(blockSize, `block ${b} `);
  return randomBytes(blockSize);
}

/** Blocks the top layer rewrites. */
export const APP_BLOCKS = [1, 5, 6, 40];

export async function makeTestChain(dir: string, options: { size?: number; blockSize?: number } = {}): Promise<TestChain> {
  const size = options.size ?? 4 * MiB;
  const blockSize = options.blockSize ?? 64 * KiB;
  const raw = path.join(dir, 'base.raw');
  const contents = Buffer.concat(Array.from({ length: size / blockSize }, (_, b) => baseBlock(b, blockSize)));
  fs.writeFileSync(raw, contents);
  const base = path.join(dir, 'base.snap');
  await importRaw(raw, base, { blockSize });
  fs.rmSync(raw);
  const overlay = path.join(dir, 'app.cow');
  await cloneImage(base, overlay);
  const image = await openImage(overlay);
  for (const b of APP_BLOCKS) {
    const data = randomBytes(blockSize);
    await image.device.write(data, b * blockSize);
    data.copy(contents, b * blockSize);
  }
  await image.close();
  const app = path.join(dir, 'app.snap');
  await snapshotOverlay(overlay, app);
  fs.rmSync(overlay);
  return { dir, base, app, size, blockSize, contents };
}

/** The whole disk a device reads. */
export async function readAll(device: BlockDevice): Promise<Buffer> {
  const out = Buffer.alloc(device.size);
  await device.read(out, 0);
  return out;
}

/** Where a local layer file keeps block `b`'s stored bytes, and its table pages: what a lazy read of it must fetch. */
export async function storedRanges(file: string): Promise<{ blocks: Map<number, { offset: number; length: number }>; tables: Array<{ offset: number; length: number }> }> {
  const sealed = await openSealedFile(realFileSystem, file);
  try {
    const blocks = new Map<number, { offset: number; length: number }>();
    const tables = sealed.tableRanges(0, sealed.blocks);
    for (let b = 0; b < sealed.blocks; b++) {
      const r = await sealed.storedRange(b);
      if (r) blocks.set(b, r);
    }
    return { blocks, tables };
  } finally {
    await sealed.close();
  }
}

export interface RangeRequest {
  /** The blob asked for. */
  digest: string;
  /** [first, end) of the bytes asked for. */
  first: number;
  end: number;
}

/** The blob range GETs a proxy log shows (`Range: bytes=a-b`). */
export function rangeRequests(log: ReadonlyArray<{ method: string; path: string; headers: Record<string, unknown> }>): RangeRequest[] {
  return log
    .filter((r) => r.method === 'GET' && /\/blobs\/sha256:/.test(r.path) && typeof r.headers.range === 'string')
    .map((r) => {
      const m = /^bytes=([0-9]+)-([0-9]+)$/.exec(r.headers.range as string)!;
      return { digest: /sha256:[0-9a-f]{64}/.exec(r.path)![0], first: Number(m[1]), end: Number(m[2]) + 1 };
    });
}

/** SHA-256 of a file, as a registry names its blob. */
export function blobDigest(file: string): string {
  return `sha256:${createHash('sha256').update(fs.readFileSync(file)).digest('hex')}`;
}
