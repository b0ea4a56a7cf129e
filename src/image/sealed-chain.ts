/**
 * The read-only part of a chain: sealed layers, top first (snapshot files, optionally ending in a
 * raw base), served as one BlockDevice.
 *
 * Reading a block must not cost a walk down the chain. Because sealed layers never change, which
 * layer serves a block is a fact that can be computed once: the first time a 1024-block page is
 * touched, the layers are asked top to bottom for the states of its blocks (a layer that has none
 * of them says so from its directory, without reading a table) and the answer, the serving layer
 * and the state of each block, is kept in a resolution page. After that a read costs the same at
 * depth 1 or 64: one lookup, then the serving layer reads its own bytes. Resolution pages are kept
 * in a bounded cache that drops the page loaded first.
 *
 * The chain never asks what a layer is: it only uses the layer interface (layer.ts).
 */
import { CowdiskError, ErrorCode } from '../errors.js';
import { blockCount } from '../format/constants.js';
import { PageCache } from '../format/page-cache.js';
import { appendExtent, checkRange, type BlockDevice, type Capabilities, type Extent, type LayerInfo } from './device.js';
import { BlockState, type SealedLayer } from './layer.js';

/** Blocks per resolution page. */
const RESOLUTION_BLOCKS = 1024;
const MAX_RESOLUTIONS = 4096;

/** Which layer serves each block of a resolution page, and in what state. */
interface Resolution {
  /** Index into the chain's layers, or -1 where no layer has the block (reads as zeros). */
  readonly layer: Int16Array;
  readonly state: Uint8Array;
}

export const READ_ONLY_CAPABILITIES: Capabilities = Object.freeze({
  writable: false,
  flush: false,
  fua: false,
  trim: false,
  zero: false,
  fastZero: false,
  extents: true,
  multiConn: true,
});

export function readOnlyError(what = 'this image is read-only: a sealed layer is never modified. Clone it to get a writable overlay.'): CowdiskError {
  return new CowdiskError(ErrorCode.READ_ONLY, what);
}

export class SealedChain implements BlockDevice {
  readonly capabilities = READ_ONLY_CAPABILITIES;
  readonly chain: readonly LayerInfo[];
  private readonly resolutions = new PageCache<Resolution>((index) => this.resolve(index), MAX_RESOLUTIONS);
  private readonly blocks: number;

  constructor(
    readonly layers: readonly SealedLayer[],
    readonly size: number,
    readonly blockSize: number,
  ) {
    this.blocks = blockCount(size, blockSize);
    this.chain = layers.map((layer): LayerInfo => ({ kind: layer.kind, path: layer.path, identity: layer.identity }));
  }

  private async resolve(index: number): Promise<Resolution> {
    const r: Resolution = { layer: new Int16Array(RESOLUTION_BLOCKS).fill(-1), state: new Uint8Array(RESOLUTION_BLOCKS) };
    const first = index * RESOLUTION_BLOCKS;
    const count = Math.min(RESOLUTION_BLOCKS, this.blocks - first);
    let unresolved = count;
    for (let li = 0; li < this.layers.length && unresolved > 0; li++) {
      const states = await this.layers[li].states(first, count, this.blockSize);
      if (!states) continue;
      for (let slot = 0; slot < count; slot++) {
        if (r.layer[slot] !== -1 || states[slot] === BlockState.ABSENT) continue;
        r.layer[slot] = li;
        r.state[slot] = states[slot];
        unresolved--;
      }
    }
    return r;
  }

  async read(buf: Buffer, offset: number): Promise<void> {
    checkRange(this.size, offset, buf.length);
    const bs = this.blockSize;
    const end = offset + buf.length;
    let pos = offset;
    while (pos < end) {
      const block = Math.floor(pos / bs);
      const index = Math.floor(block / RESOLUTION_BLOCKS);
      const r = this.resolutions.get(index) ?? (await this.resolutions.fetch(index));
      const slot = block - index * RESOLUTION_BLOCKS;
      const li = r.layer[slot];
      const runEnd = this.runEnd(r, slot, block, end);
      const view = buf.subarray(pos - offset, runEnd - offset);
      if (li === -1 || r.state[slot] === BlockState.ZERO) view.fill(0);
      else await this.layers[li].read(view, pos);
      pos = runEnd;
    }
  }

  /**
   * read, when the blocks' resolution is cached and every layer serving them can answer at once
   * (read's loop, without a promise); false as soon as one cannot.
   */
  readNow(buf: Buffer, offset: number): boolean {
    if (offset < 0 || offset + buf.length > this.size) return false;
    const bs = this.blockSize;
    const end = offset + buf.length;
    let pos = offset;
    while (pos < end) {
      const block = Math.floor(pos / bs);
      const index = Math.floor(block / RESOLUTION_BLOCKS);
      const r = this.resolutions.get(index);
      if (r === undefined) return false;
      const slot = block - index * RESOLUTION_BLOCKS;
      const li = r.layer[slot];
      const runEnd = this.runEnd(r, slot, block, end);
      const view = buf.subarray(pos - offset, runEnd - offset);
      if (li === -1 || r.state[slot] === BlockState.ZERO) view.fill(0);
      else if (!this.layers[li].readNow(view, pos)) return false;
      pos = runEnd;
    }
    return true;
  }

  /**
   * Where the run starting in `block` (at `slot` of resolution `r`) ends, at most at `end`: it
   * carries on over the following blocks of this resolution served the same way, zeros (one fill)
   * or data of one layer (one read: the layer joins what is contiguous in its file).
   */
  private runEnd(r: Resolution, slot: number, block: number, end: number): number {
    const bs = this.blockSize;
    const li = r.layer[slot];
    const zeroish = li === -1 || r.state[slot] === BlockState.ZERO;
    let runEnd = Math.min(end, (block + 1) * bs);
    for (let next = slot + 1; runEnd < end && next < RESOLUTION_BLOCKS; next++) {
      const same = zeroish ? r.layer[next] === -1 || r.state[next] === BlockState.ZERO : r.layer[next] === li && r.state[next] === BlockState.DATA;
      if (!same) break;
      runEnd = Math.min(end, runEnd + bs);
    }
    return runEnd;
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    checkRange(this.size, offset, length);
    const runs: Extent[] = [];
    const bs = this.blockSize;
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const block = Math.floor(pos / bs);
      const index = Math.floor(block / RESOLUTION_BLOCKS);
      const r = await this.resolutions.fetch(index);
      const slot = block - index * RESOLUTION_BLOCKS;
      const li = r.layer[slot];
      const kind: Extent['kind'] = li === -1 ? 'hole' : r.state[slot] === BlockState.ZERO ? 'zero' : 'data';
      const until = Math.min(end, (block + 1) * bs);
      appendExtent(runs, { offset: pos, length: until - pos, kind, layer: li });
      pos = until;
    }
    // A layer's data runs become holes where its file has none (a sparse raw base maps as such).
    const out: Extent[] = [];
    for (const e of runs) {
      if (e.kind !== 'data') {
        appendExtent(out, e);
        continue;
      }
      for (const run of await this.layers[e.layer].allocation(e.offset, e.offset + e.length)) {
        appendExtent(out, { offset: run.start, length: run.end - run.start, kind: run.data ? 'data' : 'hole', layer: e.layer });
      }
    }
    return out;
  }

  async write(): Promise<void> {
    throw readOnlyError();
  }

  async zero(): Promise<void> {
    throw readOnlyError();
  }

  async trim(): Promise<void> {
    throw readOnlyError();
  }

  async flush(): Promise<void> {}

  async close(): Promise<void> {
    await Promise.all(this.layers.map((layer) => layer.close()));
  }
}
