/**
 * The writable top of a chain: an overlay file over a parent device (or none).
 *
 * Reads split the range into runs by where the bytes are: here (present sub-blocks: one pread per
 * run, since blocks sit at fixed, contiguous places in the overlay), zero (zero sub-blocks: a
 * fill), or below (absent: one read of the parent per run).
 *
 * Writes:
 * - A write that needs no fill (it covers whole sub-blocks, or its partial ends fall in present
 *   ones) goes straight to its place in the file, with no lock; then, in one synchronous step,
 *   the sub-blocks it covered become present. A rewrite changes no state: one pwrite. A
 *   whole-block first write never reads the parent.
 * - A write that starts or ends inside a sub-block that is not present locks its blocks and
 *   becomes one pwrite of [head fill | data | tail fill], a fill being the rest of that sub-block
 *   read from below (or zeros); the lock keeps two such writes from copying the same sub-block
 *   up at once and losing one's bytes. Here too the map says present only once the bytes are
 *   written.
 * - Zero and trim set the zero state of whole sub-blocks (the whiteout that hides the parent) and
 *   punch the file's hole where data was; partial sub-blocks at the ends are written with zeros.
 *   With no parent, "absent" already reads as zeros, so no whiteout is recorded.
 *
 * Flush follows the durability contract: copy the dirty map pages, sync the data, write the
 * copies, sync again (see state-map.ts). The first change after an open marks the header dirty;
 * a clean close clears the mark.
 */
import { CowdiskError, ErrorCode } from '../errors.js';
import type { OverlayFile } from '../format/overlay.js';
import type { MapPage } from '../format/state-map.js';
import { BlockLocks } from './block-locks.js';
import { appendExtent, checkRange, type BlockDevice, type Capabilities, type Extent, type LayerInfo, type WriteOptions, type ZeroOptions } from './device.js';
import { type Layer, runsOf } from './layer.js';

export const OVERLAY_CAPABILITIES: Capabilities = Object.freeze({
  writable: true,
  flush: true,
  fua: true,
  trim: true,
  zero: true,
  fastZero: true,
  extents: true,
  multiConn: true,
});

/** Where a run of bytes comes from. */
const enum Source {
  Here = 0,
  Zero = 1,
  Below = 2,
}

/** Blocks handled per lock acquisition by zero/trim over long ranges, to bound memory and latency. */
const ZERO_CHUNK_BLOCKS = 256;
const ZERO_BUFFER = Buffer.alloc(1024 * 1024);

export class OverlayDevice implements BlockDevice, Layer {
  readonly kind = 'overlay';
  readonly identity: string;
  readonly size: number;
  readonly blockSize: number;
  readonly capabilities: Capabilities;
  readonly chain: readonly LayerInfo[];
  private readonly subBlockSize: number;
  private readonly locks = new BlockLocks();
  private dirtying: Promise<void> | undefined;
  private unsynced = false;
  private flushing: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    readonly file: OverlayFile,
    readonly parent: BlockDevice | null,
    readonly readOnly: boolean,
  ) {
    this.size = file.header.size;
    this.blockSize = file.header.blockSize;
    this.subBlockSize = file.subBlockSize;
    this.capabilities = readOnly ? { ...OVERLAY_CAPABILITIES, writable: false, flush: false, fua: false, trim: false, zero: false, fastZero: false } : OVERLAY_CAPABILITIES;
    this.identity = `uuid:${file.header.uuid.toString('hex')}`;
    this.chain = [{ kind: 'overlay', path: file.path, identity: this.identity }, ...(parent?.chain ?? [])];
  }

  get path(): string {
    return this.file.path;
  }

  /** Runs of blocks with any sub-block present or zero: found from the map pages that exist. */
  async heldBlocks(_blockSize: number, fn: (first: number, end: number) => void): Promise<void> {
    const runs = runsOf(fn);
    await this.file.map.forEachHeld((block) => runs.add(block));
    runs.close();
  }

  private page(block: number): MapPage | Promise<MapPage> {
    return this.file.map.page(block);
  }

  /** Mask of the sub-blocks of a block that [from, to) (offsets within the block) touches. */
  private bits(from: number, to: number): number {
    const lo = Math.floor(from / this.subBlockSize);
    const hi = Math.floor((to - 1) / this.subBlockSize);
    const upTo = hi === 31 ? 0xffffffff : (1 << (hi + 1)) - 1;
    return (upTo & ~((1 << lo) - 1)) >>> 0;
  }

  /** The source at `pos` in block `block` (entry p/z) and the end of that run within the block. */
  private classify(p: number, z: number, blockStart: number, pos: number, end: number): [Source, number] {
    const full = this.file.map.fullMask;
    const blockEnd = Math.min(end, blockStart + this.blockSize);
    if ((p | z) === 0) return [Source.Below, blockEnd];
    if (p === full) return [Source.Here, blockEnd];
    if (z === full) return [Source.Zero, blockEnd];
    const sbs = this.subBlockSize;
    let sub = Math.floor((pos - blockStart) / sbs);
    const source = sourceOf(p, z, sub);
    let until = blockStart + (sub + 1) * sbs;
    while (until < blockEnd && sourceOf(p, z, sub + 1) === source) {
      sub++;
      until += sbs;
    }
    return [source, Math.min(until, blockEnd)];
  }

  async read(buf: Buffer, offset: number): Promise<void> {
    this.checkOpen();
    checkRange(this.size, offset, buf.length);
    const end = offset + buf.length;
    const bs = this.blockSize;
    let pos = offset;
    let runSource = -1;
    let runStart = offset;
    while (pos < end) {
      const block = Math.floor(pos / bs);
      const page = this.file.map.loaded(block) ?? (await this.file.map.page(block));
      const [source, until] = this.classify(page.present(block), page.zero(block), block * bs, pos, end);
      if (source !== runSource) {
        if (runSource !== -1) await this.readRun(runSource, buf.subarray(runStart - offset, pos - offset), runStart);
        runSource = source;
        runStart = pos;
      }
      pos = until;
    }
    await this.readRun(runSource, buf.subarray(runStart - offset), runStart);
  }

  /**
   * read, at once, when the map pages are loaded and every run can be read without waiting (this
   * file's data and the parent's from the page cache); false otherwise, and nothing has changed.
   * Nothing can interleave with it, so it sees one consistent state of every block it reads.
   */
  readNow(buf: Buffer, offset: number): boolean {
    if (this.closed || offset < 0 || offset + buf.length > this.size) return false;
    const end = offset + buf.length;
    const bs = this.blockSize;
    const map = this.file.map;
    let pos = offset;
    let runSource = -1;
    let runStart = offset;
    while (pos < end) {
      const block = Math.floor(pos / bs);
      const page = map.loaded(block);
      if (page === undefined) return false;
      const [source, until] = this.classify(page.present(block), page.zero(block), block * bs, pos, end);
      if (source !== runSource) {
        if (runSource !== -1 && !this.readRunNow(runSource, buf.subarray(runStart - offset, pos - offset), runStart)) return false;
        runSource = source;
        runStart = pos;
      }
      pos = until;
    }
    return this.readRunNow(runSource, buf.subarray(runStart - offset), runStart);
  }

  private readRunNow(source: number, view: Buffer, at: number): boolean {
    if (source === Source.Here) return this.file.readDataNow(view, at);
    if (source === Source.Below && this.parent) return this.parent.readNow?.(view, at) ?? false;
    view.fill(0);
    return true;
  }

  private async readRun(source: number, view: Buffer, at: number): Promise<void> {
    if (source === Source.Here) {
      await this.file.readData(view, at);
    } else if (source === Source.Below && this.parent) {
      await this.parent.read(view, at);
    } else {
      view.fill(0);
    }
  }

  async write(buf: Buffer, offset: number, options?: WriteOptions): Promise<void> {
    this.checkWritable();
    checkRange(this.size, offset, buf.length);
    if (!this.file.header.dirty) await this.markDirty();
    const end = offset + buf.length;
    const map = this.file.map;
    const first = Math.floor(offset / this.blockSize);
    const last = Math.floor((end - 1) / this.blockSize);
    if (!map.rangeLoaded(first, last)) await map.loadRange(first, last);
    if (this.needsFill(offset, end)) {
      await this.copyOnWrite(buf, offset);
    } else {
      await this.file.writeData(buf, offset);
      this.markPresent(offset, end);
    }
    this.unsynced = true;
    if (options?.fua) await this.flush();
  }

  /**
   * Whether [from, to) starts or ends inside a sub-block that is not present: only then must the
   * rest of that sub-block be filled from below, under the block lock. A write covering whole
   * sub-blocks (or ending in present ones) needs no lock: it touches no byte another request
   * could be copying up, and its state change is made in one synchronous step after its data.
   */
  private needsFill(from: number, to: number): boolean {
    const sbs = this.subBlockSize;
    return (from % sbs !== 0 && !this.isPresent(from)) || (to % sbs !== 0 && !this.isPresent(to - 1));
  }

  private isPresent(pos: number): boolean {
    const block = Math.floor(pos / this.blockSize);
    const page = this.file.map.loaded(block) as MapPage;
    return (page.present(block) & (1 << Math.floor((pos - block * this.blockSize) / this.subBlockSize))) !== 0;
  }

  /**
   * Records that the sub-blocks [from, to) touches are present (their bytes are written). Entries
   * already saying so are left alone, so a rewrite changes no state and dirties no map page.
   * The pages are in memory: write paths load them first.
   */
  private markPresent(from: number, to: number): void {
    const bs = this.blockSize;
    const last = Math.floor((to - 1) / bs);
    for (let block = Math.floor(from / bs); block <= last; block++) {
      const page = this.file.map.loaded(block) as MapPage;
      const start = block * bs;
      const mask = this.bits(Math.max(from, start) - start, Math.min(to, start + bs) - start);
      const p = page.present(block);
      const z = page.zero(block);
      if ((p & mask) === mask && (z & mask) === 0) continue;
      page.set(block, (p | mask) >>> 0, (z & ~mask) >>> 0);
    }
  }

  private async copyOnWrite(buf: Buffer, offset: number): Promise<void> {
    const bs = this.blockSize;
    const sbs = this.subBlockSize;
    const end = offset + buf.length;
    const first = Math.floor(offset / bs);
    const last = Math.floor((end - 1) / bs);
    const unlock = await this.locks.acquire(first, last);
    try {
      const headStart = Math.floor(offset / sbs) * sbs;
      const tailEnd = Math.ceil(end / sbs) * sbs;
      const head = await this.fillSource(headStart);
      const tail = await this.fillSource(tailEnd - sbs);
      const needHead = offset > headStart && head !== Source.Here;
      const needTail = tailEnd > end && tail !== Source.Here;
      const start = needHead ? headStart : offset;
      const stop = needTail ? tailEnd : end;
      let out = buf;
      if (start !== offset || stop !== end) {
        out = Buffer.allocUnsafe(stop - start);
        if (needHead) await this.readBelow(head, out.subarray(0, offset - start), start);
        buf.copy(out, offset - start);
        if (needTail) await this.readBelow(tail, out.subarray(end - start), end);
      }
      await this.file.writeData(out, start);
      // Only now that the bytes are written may the map say they are here.
      this.markPresent(offset, end);
    } finally {
      unlock();
    }
  }

  /** The source of the sub-block starting at `pos` (for a fill). */
  private async fillSource(pos: number): Promise<Source> {
    const bs = this.blockSize;
    const block = Math.floor(pos / bs);
    const page = await this.page(block);
    return sourceOf(page.present(block), page.zero(block), Math.floor((pos - block * bs) / this.subBlockSize));
  }

  /** Reads what lies under a not-present sub-block: zeros, or the parent's bytes (zeros past its end). */
  private async readBelow(source: Source, view: Buffer, at: number): Promise<void> {
    if (source === Source.Zero || !this.parent || at >= this.size) {
      view.fill(0);
      return;
    }
    const inside = Math.min(view.length, this.size - at);
    await this.parent.read(view.subarray(0, inside), at);
    view.fill(0, inside);
  }

  async zero(offset: number, length: number, options?: ZeroOptions): Promise<void> {
    this.checkWritable();
    checkRange(this.size, offset, length);
    if (options?.noHole) {
      if (options.fastZero) {
        throw new CowdiskError(ErrorCode.UNSUPPORTED, 'zeroing with storage kept allocated means writing zeros, which is not fast.');
      }
      await this.writeZeros(offset, length);
    } else {
      await this.release(offset, length);
    }
    if (options?.fua) await this.flush();
  }

  async trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    this.checkWritable();
    checkRange(this.size, offset, length);
    await this.release(offset, length);
    if (options?.fua) await this.flush();
  }

  /** Makes [offset, offset+length) read as zeros without storing zeros where whole sub-blocks allow. */
  private async release(offset: number, length: number): Promise<void> {
    if (length === 0) return;
    if (!this.file.header.dirty) await this.markDirty();
    const sbs = this.subBlockSize;
    const end = offset + length;
    const innerStart = Math.ceil(offset / sbs) * sbs;
    const innerEnd = Math.max(innerStart, Math.floor(end / sbs) * sbs);
    if (innerStart >= end || innerEnd <= offset) {
      await this.writeZeros(offset, length);
      return;
    }
    if (offset < innerStart) await this.writeZeros(offset, innerStart - offset);
    if (innerEnd < end) await this.writeZeros(innerEnd, end - innerEnd);
    const bs = this.blockSize;
    for (let chunk = innerStart; chunk < innerEnd; chunk += ZERO_CHUNK_BLOCKS * bs) {
      await this.releaseWhole(chunk, Math.min(innerEnd, chunk + ZERO_CHUNK_BLOCKS * bs));
    }
    this.unsynced = true;
  }

  /** Writes zeros over [offset, offset + length) in pieces of the shared buffer (a sub-block may be larger). */
  private async writeZeros(offset: number, length: number): Promise<void> {
    for (let at = offset; at < offset + length; at += ZERO_BUFFER.length) {
      await this.write(ZERO_BUFFER.subarray(0, Math.min(ZERO_BUFFER.length, offset + length - at)), at);
    }
  }

  /** Sets whole sub-blocks [from, to) to zero (or absent, with no parent) and punches their data. */
  private async releaseWhole(from: number, to: number): Promise<void> {
    const bs = this.blockSize;
    const sbs = this.subBlockSize;
    const first = Math.floor(from / bs);
    const last = Math.floor((to - 1) / bs);
    const whiteout = this.parent !== null;
    const unlock = await this.locks.acquire(first, last);
    try {
      const punches: Array<[number, number]> = [];
      for (let block = first; block <= last; block++) {
        const page = await this.page(block);
        const blockStart = block * bs;
        const mask = this.bits(Math.max(from, blockStart) - blockStart, Math.min(to, blockStart + bs) - blockStart);
        const p = page.present(block);
        const z = page.zero(block);
        const nextP = (p & ~mask) >>> 0;
        const nextZ = whiteout ? (z | mask) >>> 0 : (z & ~mask) >>> 0;
        if (nextP !== p || nextZ !== z) page.set(block, nextP, nextZ);
        // Only the released sub-blocks are punched, never the rest of the block: a write that
        // needs no fill runs without the block lock and may be writing another sub-block of this
        // block right now, before the map says it is present.
        const freed = p & mask;
        if (freed === 0) continue;
        for (let sub = 0; sub < 32; sub++) {
          if (freed & (1 << sub)) addPunch(punches, blockStart + sub * sbs, sbs);
        }
      }
      for (const [at, len] of punches) await this.file.punchData(at, len);
    } finally {
      unlock();
    }
  }

  async flush(): Promise<void> {
    this.checkOpen();
    if (this.readOnly) return;
    const run = this.flushing.then(() => this.flushOnce());
    this.flushing = run.catch(() => undefined);
    return run;
  }

  private async flushOnce(): Promise<void> {
    if (!this.unsynced && !this.file.map.hasDirty()) return;
    this.unsynced = false;
    try {
      await this.file.map.persist();
    } catch (err) {
      this.unsynced = true;
      throw err;
    }
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    this.checkOpen();
    checkRange(this.size, offset, length);
    const out: Extent[] = [];
    const push = (e: Extent) => appendExtent(out, e);
    const end = offset + length;
    const bs = this.blockSize;
    let pos = offset;
    while (pos < end) {
      const block = Math.floor(pos / bs);
      const page = await this.page(block);
      const [source, until] = this.classify(page.present(block), page.zero(block), block * bs, pos, end);
      if (source === Source.Here) push({ offset: pos, length: until - pos, kind: 'data', layer: 0 });
      else if (source === Source.Zero) push({ offset: pos, length: until - pos, kind: 'zero', layer: 0 });
      else if (!this.parent) push({ offset: pos, length: until - pos, kind: 'hole', layer: -1 });
      else {
        // Gather the whole run of absent blocks so the parent is asked once.
        let runEnd = until;
        while (runEnd < end && runEnd % bs === 0) {
          const next = Math.floor(runEnd / bs);
          const nextPage = await this.page(next);
          if ((nextPage.present(next) | nextPage.zero(next)) !== 0) break;
          runEnd = Math.min(end, runEnd + bs);
        }
        for (const e of await this.parent.extents(pos, runEnd - pos)) push({ ...e, layer: e.layer === -1 ? -1 : e.layer + 1 });
        pos = runEnd;
        continue;
      }
      pos = until;
    }
    return out;
  }

  /** Counts of blocks by state (for info): any present, any zero (and none present), untouched. */
  async allocation(): Promise<{ present: number; zero: number; bytesPresent: number }> {
    let present = 0;
    let zero = 0;
    let subPresent = 0;
    await this.file.map.forEachHeld((_block, p) => {
      if (p !== 0) {
        present++;
        subPresent += popcount(p);
      } else zero++;
    });
    return { present, zero, bytesPresent: subPresent * this.subBlockSize };
  }

  private markDirty(): Promise<void> {
    this.dirtying ??= this.file.setDirty(true).finally(() => {
      this.dirtying = undefined;
    });
    return this.dirtying;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    try {
      if (!this.readOnly) {
        await this.flush();
        await this.file.setDirty(false);
      }
    } finally {
      this.closed = true;
      await this.file.close();
      await this.parent?.close();
    }
  }

  private checkOpen(): void {
    if (this.closed) throw new CowdiskError(ErrorCode.CLOSED, `${this.file.path} is closed.`, { path: this.file.path });
  }

  private checkWritable(): void {
    this.checkOpen();
    if (this.readOnly) {
      throw new CowdiskError(ErrorCode.READ_ONLY, `${this.file.path} was opened read-only.`, { path: this.file.path });
    }
  }
}

function sourceOf(p: number, z: number, sub: number): Source {
  const bit = 1 << sub;
  if (p & bit) return Source.Here;
  if (z & bit) return Source.Zero;
  return Source.Below;
}

function addPunch(punches: Array<[number, number]>, at: number, length: number): void {
  const last = punches[punches.length - 1];
  if (last && last[0] + last[1] === at) last[1] += length;
  else punches.push([at, length]);
}

function popcount(n: number): number {
  let count = 0;
  for (let v = n >>> 0; v !== 0; v >>>= 1) count += v & 1;
  return count;
}
