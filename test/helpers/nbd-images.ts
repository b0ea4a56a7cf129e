/**
 * Real cowdisk images for the interop tests: a raw base with known contents, sealed into a
 * snapshot layer, with a writable overlay cloned on top, all made by the engine itself, and served
 * by an in-process NbdServer exactly as `cowdisk serve` would serve them.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cloneImage, createImage } from '../../src/ops/create.js';
import { importRaw } from '../../src/ops/import.js';
import { openImage } from '../../src/image/open.js';
import type { NbdServerOptions } from '../../src/nbd/index.js';
import { startServer, type TestServer } from './nbd-server.js';

export const MiB = 1024 * 1024;

export interface Chain {
  dir: string;
  /** The raw base: data in BASE_DATA_BLOCKS, zeros elsewhere (sparse). */
  raw: string;
  /** The raw base sealed as a snapshot layer. */
  snapshot: string;
  /** A writable overlay cloned from the snapshot. */
  overlay: string;
  size: number;
  blockSize: number;
  /** The bytes every layer of the chain reads as, before anything is written to the overlay. */
  contents: Buffer;
}

/** Blocks of the base that hold data (the rest reads as zeros). */
export const BASE_DATA_BLOCKS = [0, 1, 2, 3, 8, 9, 30];

/** A temporary directory removed by `cleanup`. */
export function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'cowdisk-nbd-'));
}

export async function makeChain(options: { size?: number; blockSize?: number; dir?: string } = {}): Promise<Chain> {
  const size = options.size ?? 32 * MiB;
  const blockSize = options.blockSize ?? 64 * 1024;
  const dir = options.dir ?? tempDir();
  const raw = path.join(dir, 'base.raw');
  const contents = Buffer.alloc(size);
  for (const b of BASE_DATA_BLOCKS) {
    for (let i = b * blockSize; i < (b + 1) * blockSize; i += 4) contents.writeUInt32BE((i * 2654435761) >>> 0, i);
  }
  const fd = fs.openSync(raw, 'w');
  fs.ftruncateSync(fd, size);
  for (const b of BASE_DATA_BLOCKS) fs.writeSync(fd, contents, b * blockSize, blockSize, b * blockSize);
  fs.closeSync(fd);
  const snapshot = path.join(dir, 'base.snap');
  const overlay = path.join(dir, 'disk.cow');
  await importRaw(raw, snapshot, { blockSize });
  await cloneImage(snapshot, overlay);
  return { dir, raw, snapshot, overlay, size, blockSize, contents };
}

/** An empty overlay with no parent. */
export async function makeEmpty(dir: string, size: number, name = 'empty.cow'): Promise<string> {
  const file = path.join(dir, name);
  await createImage(file, { size });
  return file;
}

export interface ServedImage {
  name: string;
  file: string;
  readOnly?: boolean;
}

/** Opens each image with the engine and serves it; `close()` closes the images too. */
export async function serveImages(images: ServedImage[], options: Partial<NbdServerOptions> = {}): Promise<TestServer> {
  const exports = [];
  for (const image of images) {
    const opened = await openImage(image.file, { readOnly: image.readOnly });
    exports.push({ name: image.name, device: opened.device, readOnly: image.readOnly, description: `${opened.kind} ${image.file}` });
  }
  return startServer(exports, options);
}
