/**
 * Opening an image and the chain beneath it.
 *
 * A child names its parent by a path relative to the child's own directory and by the parent's
 * identity; each link is checked as the chain is opened, top down:
 * - a parent that is not there: PARENT_MISSING, naming both files and the command that re-points;
 * - a parent that is not the layer the child was made on (a raw base whose size, inode or
 *   modification time changed; a snapshot whose layer digest differs): PARENT_CHANGED, saying what;
 * - a writable overlay where a sealed layer belongs: NOT_SEALED;
 * - a loop, or a chain deeper than MAX_CHAIN_DEPTH: CORRUPT.
 * Every file opened is closed again if a later link fails.
 *
 * What comes back is a plain value: the whole chain as one device, the writable overlay on top
 * (if the image is one) and the sealed layers beneath it, each behind the layer interface.
 */
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';
import { DEFAULT_BLOCK_SIZE } from '../format/constants.js';
import type { ParentRef } from '../format/header.js';
import { OverlayFile } from '../format/overlay.js';
import type { FileSystem } from '../io/file.js';
import { fileSystemOf } from '../io/real-file.js';
import type { BlockDevice } from './device.js';
import type { Layer, SealedLayer } from './layer.js';
import { type ImageFormat, type ImageKind, detectKind, openSealedLayer, parentKind } from './open-layer.js';
import { OverlayDevice } from './overlay-device.js';
import { SealedChain } from './sealed-chain.js';

export { detectKind, type ImageFormat, type ImageKind };

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
  /** 'raw': take the file as a raw disk image whatever its bytes say (see detectKind). */
  format?: ImageFormat;
}

export interface Image {
  /** Absolute path of the image's own file (the top layer). */
  readonly path: string;
  readonly kind: ImageKind;
  /** The whole chain as one disk. */
  readonly device: BlockDevice;
  /** The writable top when the image is an overlay (the same object as `device`), else null. */
  readonly overlay: OverlayDevice | null;
  /** The sealed layers: beneath the overlay, or the image's own chain when it is sealed; top first. */
  readonly layers: readonly SealedLayer[];
  /** Closes the device and every file of the chain (flushing an overlay opened for writing). */
  close(): Promise<void>;
}

/** Every layer of an image, top first: the overlay (if any), then the sealed layers. */
export function allLayers(image: Image): Layer[] {
  return image.overlay ? [image.overlay, ...image.layers] : [...image.layers];
}

export async function openImage(file: string, options: OpenImageOptions = {}): Promise<Image> {
  const fs = fileSystemOf(options);
  const abs = path.resolve(file);
  const kind = await detectKind(abs, fs, options.format);
  if (kind === 'overlay') {
    const overlayFile = await OverlayFile.open(fs, abs, { readOnly: options.readOnly, sharedLock: options.sharedLock });
    let layers: SealedLayer[];
    try {
      const { header } = overlayFile;
      layers = header.parent.kind === 'none' ? [] : await openChain(fs, header.parent, abs, header.blockSize);
    } catch (err) {
      await overlayFile.close();
      throw err;
    }
    const parent = layers.length > 0 ? new SealedChain(layers, overlayFile.header.size, overlayFile.header.blockSize) : null;
    const overlay = new OverlayDevice(overlayFile, parent, options.readOnly ?? false);
    return { path: abs, kind, device: overlay, overlay, layers, close: () => overlay.close() };
  }
  const top = await openSealedLayer(fs, abs, kind);
  if (kind === 'raw' && top.size === 0) {
    await top.close();
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `${abs} is empty; a raw image must hold at least one byte.`, { path: abs });
  }
  const blockSize = top.blockSize ?? options.rawBlockSize ?? DEFAULT_BLOCK_SIZE;
  let layers: SealedLayer[];
  try {
    layers = [top, ...(top.parent.kind === 'none' ? [] : await openChain(fs, top.parent, abs, blockSize, [abs]))];
  } catch (err) {
    await top.close();
    throw err;
  }
  const device = new SealedChain(layers, top.size, blockSize);
  return { path: abs, kind, device, overlay: null, layers, close: () => device.close() };
}

/**
 * Opens the sealed chain a child at `child` refers to with `ref`, link by link, checking each.
 * `seen` holds the files already in the chain above (to find a loop).
 */
export async function openChain(fs: FileSystem, ref: Exclude<ParentRef, { kind: 'none' }>, child: string, blockSize: number, seen: string[] = [child]): Promise<SealedLayer[]> {
  const layers: SealedLayer[] = [];
  try {
    let next: ParentRef = ref;
    let from = child;
    while (next.kind !== 'none') {
      if (seen.length > MAX_CHAIN_DEPTH) {
        throw new CowdiskError(ErrorCode.CORRUPT, `${child}: the chain is deeper than ${MAX_CHAIN_DEPTH} layers; it probably loops.`, { path: child });
      }
      const layer = await openLink(fs, next, from, blockSize);
      layers.push(layer);
      if (seen.includes(layer.path)) {
        throw new CowdiskError(ErrorCode.CORRUPT, `${from}: the chain loops back to ${layer.path}.`, { path: from });
      }
      seen.push(layer.path);
      next = layer.parent;
      from = layer.path;
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
  const kind = await parentKind(where, fs);
  if (kind === 'overlay') {
    throw new CowdiskError(
      ErrorCode.NOT_SEALED,
      `${child}: its parent ${where} is a writable overlay; a parent must be a sealed snapshot or a raw base.`,
      { path: where },
    );
  }
  // A file of the other kind than recorded is refused before it is opened as the recorded kind.
  if ((ref.kind === 'raw') !== (kind === 'raw')) {
    throw changed(child, where, [ref.kind === 'raw' ? 'it is no longer a raw file' : 'it is no longer a snapshot layer']);
  }
  const layer = await openSealedLayer(fs, where, kind);
  const changes = layer.changesFrom(ref, blockSize);
  if (changes.length > 0) {
    await layer.close();
    throw changed(child, where, changes);
  }
  return layer;
}

function changed(child: string, parent: string, changes: string[]): CowdiskError {
  return new CowdiskError(
    ErrorCode.PARENT_CHANGED,
    `${child}: its parent ${parent} is not the file it was made on (${changes.join('; ')}). Reading through it would show wrong data. Restore the original parent; \`cowdisk rebase --unsafe\` accepts the new one only if you know its contents are the same.`,
    { path: parent },
  );
}
