/**
 * What every lifecycle verb asks first: which layers make up an image, and which blocks does each
 * one hold?
 *
 * A verb's cost must follow the data the layers hold, not the size of the disk: sealing an
 * overlay that holds 10 MiB of a 1 TiB disk reads 10 MiB. So the blocks a layer holds are found
 * from what each format keeps anyway:
 * - an overlay: the state-map pages that exist. A page never written is a hole in the sparse
 *   file, so `seekData` over the map region jumps from one written page to the next;
 * - a snapshot layer: its block directory says which table pages exist, the pages say which
 *   blocks are there (zero blocks included: they hide what lies below);
 * - a raw base: the blocks where the file has data (`RawFile.allocation`, one SEEK_DATA and one
 *   SEEK_HOLE per extent; holes read as zeros).
 *
 * Two chains that share their lower layers (an overlay and the snapshot made from its sibling, an
 * image and a layer beneath it) can only differ where a layer above the shared part holds a block.
 * `commonBase` finds that shared part; `blocksWhereChainsMayDiffer` collects the blocks the layers
 * above it hold. With nothing shared, every block is a candidate, and the verb says that it is
 * reading the disk.
 */
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';
import { BlockKind, MAP_ENTRIES_PER_PAGE, MAP_SLOT_STRIDE, TABLE_ENTRIES_PER_PAGE } from '../format/constants.js';
import type { ParentRef } from '../format/header.js';
import type { OverlayFile } from '../format/overlay.js';
import type { RawFile } from '../format/raw.js';
import { SnapshotFile } from '../format/snapshot.js';
import type { BlockFile } from '../io/file.js';
import type { BlockDevice } from '../image/device.js';
import { OverlayDevice } from '../image/overlay-device.js';
import { SealedChain } from '../image/sealed-chain.js';
import { BlockSet } from './block-set.js';

export type Layer =
  | { kind: 'overlay'; path: string; file: OverlayFile }
  | { kind: 'snapshot'; path: string; file: SnapshotFile }
  | { kind: 'raw'; path: string; file: RawFile };

export type SealedLayerRef = Exclude<Layer, { kind: 'overlay' }>;

/** The layers of an opened image (from `openImage`), top first. */
export function layersOf(device: BlockDevice): Layer[] {
  if (device instanceof OverlayDevice) {
    return [{ kind: 'overlay', path: device.overlay.path, file: device.overlay }, ...(device.parent ? layersOf(device.parent) : [])];
  }
  if (device instanceof SealedChain) {
    return device.layers.map((file): Layer => (file instanceof SnapshotFile ? { kind: 'snapshot', path: file.path, file } : { kind: 'raw', path: file.path, file }));
  }
  throw new CowdiskError(ErrorCode.UNSUPPORTED, 'this device is not a cowdisk image opened from files.');
}

/** The reference a child file at `child` records for the sealed layer `layer`. */
export function referenceTo(layer: SealedLayerRef, child: string): ParentRef {
  const relative = path.relative(path.dirname(path.resolve(child)), layer.path);
  if (layer.kind === 'snapshot') {
    return { kind: 'snapshot', path: relative, size: layer.file.header.size, digest: layer.file.header.layerDigest };
  }
  return { kind: 'raw', path: relative, ...layer.file.identity };
}

/** The first offset at or after `pos` where `file` may hold data, or -1. */
async function nextData(file: BlockFile, pos: number): Promise<number> {
  return file.seekData ? file.seekData(pos) : pos;
}

/** Adds to `into` every block `layer` holds (present, zero or stored): those it serves or hides. */
async function addHeldBlocks(layer: Layer, into: BlockSet): Promise<void> {
  if (layer.kind === 'overlay') {
    const overlay = layer.file;
    const { mapOffset, mapPages } = overlay.header;
    const mapEnd = mapOffset + mapPages * MAP_SLOT_STRIDE;
    let index = 0;
    while (index < mapPages) {
      const data = await nextData(overlay.file, mapOffset + index * MAP_SLOT_STRIDE);
      if (data < 0 || data >= mapEnd) break;
      index = Math.floor((data - mapOffset) / MAP_SLOT_STRIDE);
      const first = index * MAP_ENTRIES_PER_PAGE;
      const page = overlay.map.loaded(first) ?? (await overlay.map.page(first));
      const count = Math.min(MAP_ENTRIES_PER_PAGE, overlay.blocks - first);
      for (let slot = 0; slot < count; slot++) {
        if ((page.present(slot) | page.zero(slot)) !== 0) into.add(first + slot);
      }
      index++;
    }
  } else if (layer.kind === 'snapshot') {
    const snap = layer.file;
    for (let index = 0; index < snap.header.dirPages; index++) {
      if (!snap.hasPage(index)) continue;
      const page = await snap.page(index);
      if (!page) continue;
      const first = index * TABLE_ENTRIES_PER_PAGE;
      for (let slot = 0; slot < TABLE_ENTRIES_PER_PAGE; slot++) {
        if (page.kinds[slot] !== BlockKind.ABSENT) into.add(first + slot);
      }
    }
  } else {
    const bs = into.blockSize;
    for (const run of await layer.file.allocation(0, into.blocks * bs)) {
      if (!run.data) continue;
      for (let block = Math.floor(run.start / bs); block * bs < run.end; block++) into.add(block);
    }
  }
}

/** Every block any of `layers` holds. */
export async function heldBlocks(layers: readonly Layer[], blocks: number, blockSize: number): Promise<BlockSet> {
  const set = new BlockSet(blocks, blockSize);
  for (const layer of layers) await addHeldBlocks(layer, set);
  return set;
}

function sameLayer(a: Layer, b: Layer): boolean {
  if (a.path !== b.path || a.kind !== b.kind) return false;
  if (a.kind === 'snapshot' && b.kind === 'snapshot') return a.file.header.layerDigest.equals(b.file.header.layerDigest);
  if (a.kind === 'raw' && b.kind === 'raw') return a.file.identity.ino === b.file.identity.ino && a.file.identity.mtimeNs === b.file.identity.mtimeNs;
  return false;
}

/**
 * Where two chains meet: the index in `a` and in `b` of the highest layer both share (the same
 * file, with the same identity), or null. Below a shared layer the chains are the same, because a
 * layer's file names its own parent.
 */
export function commonBase(a: readonly Layer[], b: readonly Layer[]): { a: number; b: number } | null {
  for (let i = 0; i < a.length; i++) {
    const j = b.findIndex((layer) => sameLayer(a[i], layer));
    if (j !== -1) return { a: i, b: j };
  }
  return null;
}

/**
 * The blocks (of `a`'s block size) in which chains `a` and `b`, disks of `size` bytes, may read
 * differently: those held above their common base, or every block when they share nothing.
 * `whole` says which case it was.
 *
 * The two block sizes differ when the chains share only a raw base (which has none of its own:
 * each clone of it chose one), so `b`'s layers are read in `b`'s blocks and each run of them
 * marks every block of `a` it overlaps.
 */
export async function blocksWhereChainsMayDiffer(
  a: readonly Layer[],
  b: readonly Layer[],
  size: number,
  aBlockSize: number,
  bBlockSize: number,
): Promise<{ set: BlockSet; whole: boolean }> {
  const blocks = Math.ceil(size / aBlockSize);
  const base = commonBase(a, b);
  if (!base) return { set: BlockSet.all(blocks, aBlockSize), whole: true };
  const set = await heldBlocks(a.slice(0, base.a), blocks, aBlockSize);
  const theirs = await heldBlocks(b.slice(0, base.b), Math.ceil(size / bBlockSize), bBlockSize);
  for (const [first, end] of theirs.runs()) {
    const last = Math.min(blocks, Math.ceil((end * bBlockSize) / aBlockSize));
    for (let block = Math.floor((first * bBlockSize) / aBlockSize); block < last; block++) set.add(block);
  }
  return { set, whole: false };
}
