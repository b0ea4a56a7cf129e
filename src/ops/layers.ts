/**
 * What every lifecycle verb asks first: which blocks does each layer of an image hold?
 *
 * A verb's cost must follow the data the layers hold, not the size of the disk: sealing an
 * overlay that holds 10 MiB of a 1 TiB disk reads 10 MiB. Each layer answers from what its format
 * keeps anyway (`Layer.heldBlocks`): an overlay from the state-map pages that exist (a page never
 * written is a hole in the sparse file), a snapshot layer from its directory and table pages (zero
 * blocks included: they hide what lies below), a raw base from where its file has data.
 *
 * Two chains that share their lower layers (an overlay and the snapshot made from its sibling, an
 * image and a layer beneath it) can only differ where a layer above the shared part holds a block.
 * `commonBase` finds that shared part; `blocksWhereChainsMayDiffer` collects the blocks the layers
 * above it hold. With nothing shared, every block is a candidate, and the verb says that it is
 * reading the disk.
 */
import type { Layer } from '../image/layer.js';
import { BlockSet } from './block-set.js';

/** Every block any of `layers` holds, in blocks of `blockSize` (of a disk of `blocks` blocks). */
export async function heldBlocks(layers: readonly Layer[], blocks: number, blockSize: number): Promise<BlockSet> {
  const set = new BlockSet(blocks, blockSize);
  for (const layer of layers) await layer.heldBlocks(blockSize, (first, end) => set.addRange(first, Math.min(end, blocks)));
  return set;
}

/** Whether two layers are the same: the same file, with the same identity. */
function sameLayer(a: Layer, b: Layer): boolean {
  return a.path === b.path && a.kind === b.kind && a.identity === b.identity;
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
