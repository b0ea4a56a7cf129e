/**
 * Builds chains for the engine's tests: raw bases, sealed snapshot layers (imported, or written
 * with a parent through a snapshot writer: format version 2 as every cowdisk verb writes, or
 * version 1 for the tests that keep version 1 readable) and an overlay on top,
 * all from a seed so a failing case can be rebuilt exactly. Alongside the files comes what the
 * disk must read: the flat content of the whole chain, computed independently of the engine by
 * laying each layer's blocks over the one below.
 */
import * as path from 'node:path';
import type { ParentRef } from '../../src/format/header.js';
import { SnapshotWriter } from '../../src/format/snapshot-writer.js';
import { SnapshotV2Writer } from '../../src/format/snapshot-v2-writer.js';
import type { FileSystem } from '../../src/io/file.js';
import { cloneImage, createImage } from '../../src/ops/create.js';
import { importRaw } from '../../src/ops/import.js';

/** A small deterministic generator (mulberry32): tests derive everything random from a seed. */
export class Random {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  below(n: number): number {
    return Math.floor(this.next() * n);
  }

  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)];
  }
}

/**
 * `length` bytes from `seed`: random (incompressible), a short repeated pattern (lz4 pays), or
 * mostly zeros with a few bytes set (lz4 pays a lot, and a block of it is not a zero block).
 */
export function pattern(seed: number, length: number): Buffer {
  const rng = new Random(seed);
  const out = Buffer.alloc(length);
  const style = seed % 3;
  if (style === 0) {
    for (let i = 0; i < length; i += 4) {
      const v = (rng.next() * 4294967296) >>> 0;
      out[i] = v;
      if (i + 1 < length) out[i + 1] = v >>> 8;
      if (i + 2 < length) out[i + 2] = v >>> 16;
      if (i + 3 < length) out[i + 3] = v >>> 24;
    }
  } else if (style === 1) {
    const unit = Buffer.from(Array.from({ length: 1 + rng.below(61) }, () => 1 + rng.below(255)));
    for (let i = 0; i < length; i += unit.length) unit.copy(out, i);
  } else {
    for (let n = 0; n < Math.max(1, length >> 9); n++) out[rng.below(length)] = 1 + rng.below(255);
  }
  return out;
}

/** Writes a file whole and durably (data and directory entry). */
export async function putFile(fs: FileSystem, file: string, data: Buffer): Promise<void> {
  const handle = await fs.create(file, { exclusive: false });
  await handle.write(data, 0);
  await handle.sync();
  await handle.close();
  await fs.syncDir(path.dirname(file));
}

export type BlockContent = Buffer | null;

/** A sealed layer's format version, as the tests choose it. */
export type LayerVersion = 1 | 2;

/**
 * Writes a sealed layer over `parent` holding `blocks` (block index -> bytes, or null for a zero
 * block; indexes not in the map are absent), in format `version` (default 2). Returns the
 * reference a child records.
 */
export async function writeSnapshotLayer(
  fs: FileSystem,
  file: string,
  spec: { size: number; blockSize: number; parent: ParentRef; blocks: Map<number, BlockContent>; version?: LayerVersion },
): Promise<Extract<ParentRef, { kind: 'snapshot' }>> {
  const options = { size: spec.size, blockSize: spec.blockSize, parent: spec.parent };
  const writer = spec.version === 1 ? await SnapshotWriter.create(fs, file, options) : await SnapshotV2Writer.create(fs, file, options);
  for (const block of [...spec.blocks.keys()].sort((a, b) => a - b)) {
    const data = spec.blocks.get(block) ?? null;
    let padded = data;
    if (data && data.length < spec.blockSize) {
      padded = Buffer.alloc(spec.blockSize);
      data.copy(padded);
    }
    await writer.add(block, padded);
  }
  const header = await writer.finish();
  return { kind: 'snapshot', path: file, size: spec.size, digest: header.layerDigest };
}

/** The reference a child in `childDir` records for `parent` (a path relative to the child). */
export function relativeTo(childFile: string, parent: Extract<ParentRef, { kind: 'snapshot' | 'raw' }>): ParentRef {
  return { ...parent, path: path.relative(path.dirname(childFile), parent.path) };
}

export async function rawRef(fs: FileSystem, file: string): Promise<Extract<ParentRef, { kind: 'raw' }>> {
  const st = await fs.stat(file);
  return { kind: 'raw', path: file, size: st.size, ino: st.ino, mtimeNs: st.mtimeNs };
}

export interface ChainSpec {
  /** Layers including the overlay: 1 is a bare overlay, 2 an overlay over a base, up to 5. */
  depth: number;
  /** What the bottom of a chain of depth >= 2 is. */
  base: 'raw' | 'snapshot';
  size: number;
  blockSize: number;
  /** Sub-blocks per overlay block (default: the format's default). */
  subBlocks?: number;
  seed: number;
  /** The format version of every sealed layer (default 2); a version 1 base is written from the raw file, not imported. */
  version?: LayerVersion;
}

export interface Chain {
  overlay: string;
  /** The sealed files below the overlay, top first. */
  sealed: string[];
  /** What the whole disk reads right after the chain is built. */
  content: Buffer;
}

/**
 * Builds a chain in `dir`: a base (a random raw file, imported as a snapshot or used raw), then
 * snapshot layers each holding a random mix of absent, zero and new data blocks, then an overlay.
 */
export async function buildChain(fs: FileSystem, dir: string, spec: ChainSpec): Promise<Chain> {
  const rng = new Random(spec.seed);
  const { size, blockSize } = spec;
  const blocks = Math.ceil(size / blockSize);
  const overlay = path.join(dir, 'top.overlay');
  const content = Buffer.alloc(size);
  const sealed: string[] = [];
  if (spec.depth === 1) {
    await createImage(overlay, { size, blockSize, subBlocks: spec.subBlocks, fs });
    return { overlay, sealed, content };
  }
  // The base: some blocks of data, some of zeros, so an import has zero and stored blocks.
  const raw = Buffer.alloc(size);
  for (let b = 0; b < blocks; b++) {
    if (rng.below(4) === 0) continue;
    const start = b * blockSize;
    pattern(rng.below(1 << 30), Math.min(blockSize, size - start)).copy(raw, start);
  }
  raw.copy(content);
  const rawPath = path.join(dir, 'base.raw');
  await putFile(fs, rawPath, raw);
  let below: Extract<ParentRef, { kind: 'snapshot' | 'raw' }>;
  if (spec.base === 'snapshot' && spec.version === 1) {
    // What a version 1 import made: zero blocks as zero entries, the rest stored.
    const baseBlocks = new Map<number, BlockContent>();
    for (let b = 0; b < blocks; b++) {
      const data = raw.subarray(b * blockSize, Math.min(size, (b + 1) * blockSize));
      baseBlocks.set(b, data.every((byte) => byte === 0) ? null : Buffer.from(data));
    }
    below = await writeSnapshotLayer(fs, path.join(dir, 'base.snap'), { size, blockSize, parent: { kind: 'none' }, blocks: baseBlocks, version: 1 });
    await fs.unlink(rawPath);
  } else if (spec.base === 'snapshot') {
    const basePath = path.join(dir, 'base.snap');
    const made = await importRaw(rawPath, basePath, { blockSize, fs });
    below = { kind: 'snapshot', path: basePath, size, digest: Buffer.from(made.digest.replace(/^sha256:/, ''), 'hex') };
    await fs.unlink(rawPath);
  } else {
    below = await rawRef(fs, rawPath);
  }
  sealed.unshift(below.path);
  for (let level = 1; level <= spec.depth - 2; level++) {
    const file = path.join(dir, `layer${level}.snap`);
    const layerBlocks = new Map<number, BlockContent>();
    for (let b = 0; b < blocks; b++) {
      const roll = rng.below(6);
      if (roll < 3) continue;
      const start = b * blockSize;
      const length = Math.min(blockSize, size - start);
      const data = roll === 3 ? null : pattern(rng.below(1 << 30), length);
      layerBlocks.set(b, data);
      if (data) data.copy(content, start);
      else content.fill(0, start, start + length);
    }
    below = await writeSnapshotLayer(fs, file, { size, blockSize, parent: relativeTo(file, below), blocks: layerBlocks, version: spec.version });
    sealed.unshift(file);
  }
  await cloneImage(below.path, overlay, { fs, subBlocks: spec.subBlocks, blockSize: below.kind === 'raw' ? blockSize : undefined });
  return { overlay, sealed, content };
}
