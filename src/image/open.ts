/**
 * Opening an image and the chain beneath it.
 *
 * The kind of a file is read from its first bytes: an overlay, a snapshot layer, or (no cowdisk
 * magic) a raw image; an overlay whose first header slot is damaged is known by its second. A
 * child names its parent by a path relative to the child's own directory and by the parent's
 * identity; each link is checked as the chain is opened, top down:
 * - a parent that is not there: PARENT_MISSING, naming both files and the command that re-points;
 * - a raw base whose size, inode or modification time changed: PARENT_CHANGED, saying what changed;
 * - a snapshot whose layer digest is not the recorded one: PARENT_CHANGED;
 * - a writable overlay where a sealed layer belongs: NOT_SEALED;
 * - a loop, or a chain deeper than MAX_CHAIN_DEPTH: CORRUPT.
 * Every file opened is closed again if a later link fails.
 */
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';
import { DEFAULT_BLOCK_SIZE, HEADER_SIZE, MAGIC_LENGTH } from '../format/constants.js';
import { type ParentRef, decodeOverlayHeader, sniffKind } from '../format/header.js';
import { OverlayFile } from '../format/overlay.js';
import { RawFile, rawIdentityChanges } from '../format/raw.js';
import { SnapshotFile } from '../format/snapshot.js';
import type { FileSystem } from '../io/file.js';
import { realFileSystem } from '../io/real-file.js';
import type { BlockDevice } from './device.js';
import { OverlayDevice } from './overlay-device.js';
import { SealedChain, type SealedLayer } from './sealed-chain.js';

export const MAX_CHAIN_DEPTH = 1000;

export interface OpenImageOptions {
  /** Open without writing anything (the dirty mark included). Sealed layers and raw files always are. */
  readOnly?: boolean;
  /**
   * With readOnly: hold a shared lock on an overlay while it is open, so that no process opens it
   * for writing meanwhile (and fail with LOCKED if one has). For serving or attaching read-only.
   */
  sharedLock?: boolean;
  fs?: FileSystem;
  /** Block size used when the image is a bare raw file (it has none of its own). */
  rawBlockSize?: number;
}

export type ImageKind = 'overlay' | 'snapshot' | 'raw';

/** A BlockDevice plus what kind of file is on top. */
export type Image = BlockDevice & { readonly kind: ImageKind; readonly path: string };

/** Reads the first bytes of a file to tell an overlay, a snapshot layer or a raw image apart. */
export async function detectKind(file: string, fs: FileSystem = realFileSystem): Promise<ImageKind> {
  const handle = await fs.open(file, { readOnly: true });
  try {
    const magic = Buffer.alloc(MAGIC_LENGTH);
    const n = await handle.read(magic, 0);
    const kind = n === MAGIC_LENGTH ? sniffKind(magic) : undefined;
    if (kind) return kind;
    // An overlay keeps two header slots so that it survives damage to one: a damaged first slot
    // (its magic included) must not make it pass for a raw image. A valid second slot decides.
    if ((await handle.size()) >= 2 * HEADER_SIZE) {
      const second = Buffer.alloc(HEADER_SIZE);
      await handle.read(second, HEADER_SIZE);
      try {
        decodeOverlayHeader(second, handle.path);
        return 'overlay';
      } catch {
        // Not an overlay header either: a raw image.
      }
    }
    return 'raw';
  } finally {
    await handle.close();
  }
}

export async function openImage(file: string, options: OpenImageOptions = {}): Promise<Image> {
  const fs = options.fs ?? realFileSystem;
  const abs = path.resolve(file);
  const kind = await detectKind(abs, fs);
  if (kind === 'overlay') {
    const overlay = await OverlayFile.open(fs, abs, { readOnly: options.readOnly, sharedLock: options.sharedLock });
    try {
      const { header } = overlay;
      const parent = header.parent.kind === 'none' ? null : await openSealed(fs, header.parent, abs, header.blockSize);
      return Object.assign(new OverlayDevice(overlay, parent, options.readOnly ?? false), { kind, path: abs });
    } catch (err) {
      await overlay.close();
      throw err;
    }
  }
  if (kind === 'snapshot') {
    const top = await SnapshotFile.open(fs, abs);
    const below = await openBelow(fs, top, [abs]).catch(async (err) => {
      await top.close();
      throw err;
    });
    return Object.assign(new SealedChain([top, ...below], top.header.size, top.blockSize), { kind, path: abs });
  }
  const raw = await RawFile.open(fs, abs);
  if (raw.size === 0) {
    await raw.close();
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `${abs} is empty; a raw image must hold at least one byte.`, { path: abs });
  }
  return Object.assign(new SealedChain([raw], raw.size, options.rawBlockSize ?? DEFAULT_BLOCK_SIZE), { kind, path: abs });
}

/** Opens the sealed chain a child refers to, checking every link. */
export async function openSealed(fs: FileSystem, ref: Exclude<ParentRef, { kind: 'none' }>, child: string, blockSize: number): Promise<SealedChain> {
  const first = await openLink(fs, ref, child, blockSize);
  const layers: SealedLayer[] = [first];
  try {
    if (first instanceof SnapshotFile) layers.push(...(await openBelow(fs, first, [child, first.path])));
  } catch (err) {
    await first.close();
    throw err;
  }
  return new SealedChain(layers, ref.size, blockSize);
}

/** Opens every layer below a snapshot, in order. */
async function openBelow(fs: FileSystem, top: SnapshotFile, seen: string[]): Promise<SealedLayer[]> {
  const layers: SealedLayer[] = [];
  try {
    let current: SnapshotFile = top;
    while (current.header.parent.kind !== 'none') {
      if (seen.length > MAX_CHAIN_DEPTH) {
        throw new CowdiskError(ErrorCode.CORRUPT, `${top.path}: the chain is deeper than ${MAX_CHAIN_DEPTH} layers; it probably loops.`, { path: top.path });
      }
      const next = await openLink(fs, current.header.parent, current.path, current.blockSize);
      layers.push(next);
      if (seen.includes(next.path)) {
        throw new CowdiskError(ErrorCode.CORRUPT, `${current.path}: the chain loops back to ${next.path}.`, { path: current.path });
      }
      seen.push(next.path);
      if (!(next instanceof SnapshotFile)) break;
      current = next;
    }
    return layers;
  } catch (err) {
    await Promise.all(layers.map((l) => l.close()));
    throw err;
  }
}

/** Resolves and opens one parent, refusing a missing, changed or writable one. */
async function openLink(fs: FileSystem, ref: Exclude<ParentRef, { kind: 'none' }>, child: string, blockSize: number): Promise<SealedLayer> {
  const where = path.resolve(path.dirname(child), ref.path);
  if (!(await fs.exists(where))) {
    throw new CowdiskError(
      ErrorCode.PARENT_MISSING,
      `${child}: its parent ${where} (recorded as "${ref.path}") is missing. Put the parent back, or if it moved, run \`cowdisk rebase --unsafe ${child} NEW-PATH\`.`,
      { path: where },
    );
  }
  const kind = await detectKind(where, fs);
  if (kind === 'overlay') {
    throw new CowdiskError(
      ErrorCode.NOT_SEALED,
      `${child}: its parent ${where} is a writable overlay; a parent must be a sealed snapshot or a raw base.`,
      { path: where },
    );
  }
  if (ref.kind === 'raw') {
    if (kind !== 'raw') throw changed(child, where, ['it is no longer a raw file']);
    const raw = await RawFile.open(fs, where);
    const changes = rawIdentityChanges(ref, raw.identity);
    if (changes.length > 0) {
      await raw.close();
      throw changed(child, where, changes);
    }
    return raw;
  }
  if (kind !== 'snapshot') throw changed(child, where, ['it is no longer a snapshot layer']);
  const snap = await SnapshotFile.open(fs, where);
  const changes: string[] = [];
  if (!snap.header.layerDigest.equals(ref.digest)) {
    changes.push(`its layer digest is ${snap.digest}, not sha256:${ref.digest.toString('hex')}`);
  }
  if (snap.header.size !== ref.size) changes.push(`its size is ${snap.header.size}, not ${ref.size}`);
  if (snap.blockSize !== blockSize) changes.push(`its block size is ${snap.blockSize}, not ${blockSize}`);
  if (changes.length > 0) {
    await snap.close();
    throw changed(child, where, changes);
  }
  return snap;
}

function changed(child: string, parent: string, changes: string[]): CowdiskError {
  return new CowdiskError(
    ErrorCode.PARENT_CHANGED,
    `${child}: its parent ${parent} is not the file it was made on (${changes.join('; ')}). Reading through it would show wrong data. Restore the original parent; \`cowdisk rebase --unsafe\` accepts the new one only if you know its contents are the same.`,
    { path: parent },
  );
}
