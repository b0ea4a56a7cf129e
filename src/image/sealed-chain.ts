/**
 * The read-only part of a chain: sealed snapshot layers, top first, optionally ending in a raw
 * base, served as one BlockDevice.
 *
 * Reading a block must not cost a walk down the chain. Because sealed layers never change, which
 * layer serves a block is a fact that can be computed once: the first time a 1024-block page is
 * touched, the layers are asked top to bottom (a directory lookup per layer; table pages are read
 * only from layers that hold some of the page's blocks) and the answer, with the block's location
 * in the serving layer, is kept in a resolution page. After that a read costs the same at depth
 * 1 or 64. Resolution pages are kept in a bounded cache that drops the page loaded first.
 */
import { CowdiskError, ErrorCode } from '../errors.js';
import { BlockKind, TABLE_ENTRIES_PER_PAGE, blockCount } from '../format/constants.js';
import type { RawFile } from '../format/raw.js';
import { formatRawIdentity } from '../format/raw.js';
import { PageCache } from '../format/page-cache.js';
import { SnapshotFile } from '../format/snapshot.js';
import { appendExtent, checkRange, type BlockDevice, type Capabilities, type Extent, type LayerInfo } from './device.js';

export type SealedLayer = SnapshotFile | RawFile;

/** Which layer serves each block of a 1024-block page, and where its bytes are. */
interface Resolution {
  /** Index into the chain's layers, or -1 where no layer has the block (reads as zeros). */
  readonly layer: Int16Array;
  readonly kind: Uint8Array;
  readonly offset: Float64Array;
  readonly length: Uint32Array;
}

const MAX_RESOLUTIONS = 4096;

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

function readOnlyError(): CowdiskError {
  return new CowdiskError(ErrorCode.READ_ONLY, 'this image is read-only: a sealed layer is never modified. Clone it to get a writable overlay.');
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
    this.chain = layers.map((layer): LayerInfo =>
      layer instanceof SnapshotFile
        ? { kind: 'snapshot', path: layer.path, identity: layer.digest }
        : { kind: 'raw', path: layer.path, identity: formatRawIdentity(layer.identity) },
    );
  }

  private async resolve(pageIndex: number): Promise<Resolution> {
    const r: Resolution = {
      layer: new Int16Array(TABLE_ENTRIES_PER_PAGE).fill(-1),
      kind: new Uint8Array(TABLE_ENTRIES_PER_PAGE),
      offset: new Float64Array(TABLE_ENTRIES_PER_PAGE),
      length: new Uint32Array(TABLE_ENTRIES_PER_PAGE),
    };
    const first = pageIndex * TABLE_ENTRIES_PER_PAGE;
    let unresolved = Math.min(TABLE_ENTRIES_PER_PAGE, this.blocks - first);
    for (let li = 0; li < this.layers.length && unresolved > 0; li++) {
      const layer = this.layers[li];
      if (layer instanceof SnapshotFile) {
        const page = await layer.page(pageIndex);
        if (!page) continue;
        for (let slot = 0; slot < TABLE_ENTRIES_PER_PAGE; slot++) {
          if (r.layer[slot] !== -1 || page.kinds[slot] === BlockKind.ABSENT) continue;
          r.layer[slot] = li;
          r.kind[slot] = page.kinds[slot];
          r.offset[slot] = page.offsets[slot];
          r.length[slot] = page.lengths[slot];
          unresolved--;
        }
      } else {
        for (let slot = 0; slot < TABLE_ENTRIES_PER_PAGE; slot++) {
          if (r.layer[slot] !== -1) continue;
          r.layer[slot] = li;
          r.kind[slot] = BlockKind.RAW;
          r.offset[slot] = (first + slot) * this.blockSize;
          r.length[slot] = this.blockSize;
        }
        unresolved = 0;
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
      const pageIndex = Math.floor(block / TABLE_ENTRIES_PER_PAGE);
      const r = this.resolutions.get(pageIndex) ?? (await this.resolutions.fetch(pageIndex));
      let slot = block % TABLE_ENTRIES_PER_PAGE;
      const li = r.layer[slot];
      const kind = r.kind[slot];
      const inBlock = pos - block * bs;
      // Extend the run over following blocks of this page served the same way, contiguously:
      // uncompressed blocks adjacent in the same file become one read, zeros one fill.
      let runEnd = Math.min(end, (block + 1) * bs);
      const zeroish = li === -1 || kind === BlockKind.ZERO;
      if (zeroish || kind === BlockKind.RAW) {
        while (runEnd < end && slot + 1 < TABLE_ENTRIES_PER_PAGE) {
          const next = slot + 1;
          const same = zeroish
            ? r.layer[next] === -1 || r.kind[next] === BlockKind.ZERO
            : r.layer[next] === li && r.kind[next] === BlockKind.RAW && r.offset[next] === r.offset[slot] + bs;
          if (!same) break;
          slot = next;
          runEnd = Math.min(end, runEnd + bs);
        }
      }
      const view = buf.subarray(pos - offset, runEnd - offset);
      const startSlot = block % TABLE_ENTRIES_PER_PAGE;
      if (zeroish) {
        view.fill(0);
      } else {
        const layer = this.layers[li];
        if (kind === BlockKind.RAW) {
          const at = r.offset[startSlot] + inBlock;
          if (layer instanceof SnapshotFile) {
            if ((await layer.file.read(view, at)) !== view.length) throw layer.damaged(`block ${block} is cut short`, block);
          } else {
            await layer.read(view, at);
          }
        } else {
          const whole = await (layer as SnapshotFile).readStoredBlock(block, kind, r.offset[startSlot], r.length[startSlot]);
          whole.copy(view, 0, inBlock, inBlock + view.length);
        }
      }
      pos = runEnd;
    }
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    checkRange(this.size, offset, length);
    const out: Extent[] = [];
    const bs = this.blockSize;
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const block = Math.floor(pos / bs);
      const r = await this.resolutions.fetch(Math.floor(block / TABLE_ENTRIES_PER_PAGE));
      const slot = block % TABLE_ENTRIES_PER_PAGE;
      const li = r.layer[slot];
      const kind: Extent['kind'] = li === -1 ? 'hole' : r.kind[slot] === BlockKind.ZERO ? 'zero' : 'data';
      const until = Math.min(end, (block + 1) * bs);
      appendExtent(out, { offset: pos, length: until - pos, kind, layer: li });
      pos = until;
    }
    return this.splitRawHoles(out);
  }

  /** A raw base's data runs become holes where its file has none (a sparse base maps as such). */
  private async splitRawHoles(extents: Extent[]): Promise<Extent[]> {
    const out: Extent[] = [];
    for (const e of extents) {
      const layer = e.layer === -1 ? undefined : this.layers[e.layer];
      if (e.kind !== 'data' || layer instanceof SnapshotFile || layer === undefined) {
        appendExtent(out, e);
        continue;
      }
      for (const run of await layer.allocation(e.offset, e.offset + e.length)) {
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
