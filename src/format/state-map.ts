/**
 * The overlay's per-block state map.
 *
 * Each block has two 32-bit masks over its sub-blocks: `present` (the bytes are in this overlay)
 * and `zero` (the bytes read as zeros, hiding the parent: the block-level whiteout). A sub-block
 * in neither mask is absent and is read from the parent. Both bits set is never valid.
 *
 * On disk the map is a run of 4 KiB pages of 510 entries. Every page has two slots; a page is
 * written to the slot that does not hold its last durable version, with the next generation number
 * and a CRC, so a write torn by a power cut leaves the previous version readable. A page never
 * written is a hole: all zeros, which reads as "every block absent".
 *
 * Durability rule (DESIGN.md): the map must never reach the disk before the data it points to.
 * So masks change in memory only after the data write they describe has completed, and a flush
 * first takes a copy of the dirty pages, then syncs the data, then writes the copies and syncs
 * again. Changes made while a flush runs stay dirty for the next one.
 *
 * Memory: nothing is read at open. A page is loaded the first time one of its blocks is touched
 * and then kept (4 KiB of masks per 510 blocks touched: 128 MiB for every page of a 1 TiB disk at
 * 64 KiB blocks, 0 for a disk nobody wrote to).
 */
import { CowdiskError, ErrorCode } from '../errors.js';
import type { BlockFile } from '../io/file.js';
import { MAP_ENTRIES_PER_PAGE, MAP_ENTRY_SIZE, MAP_PAGE_HEADER, MAP_PAGE_MAGIC, MAP_PAGE_SIZE, MAP_SLOT_STRIDE, MapPageField } from './constants.js';
import { zlibCrc32 } from './crc.js';
import { PageCache } from './page-cache.js';

export class MapPage {
  /** Interleaved masks: [present0, zero0, present1, zero1, ...], one pair per block of the page. */
  readonly masks = new Uint32Array(2 * MAP_ENTRIES_PER_PAGE);
  /** Generation of the version last made durable (0 for a page never written, and after a wrap). */
  durableGen = 0;
  dirty = false;
  /** The first block this page describes. */
  readonly first: number;

  constructor(
    readonly index: number,
    /** Blocks of the disk this page describes (the last page may describe fewer than 510). */
    readonly count: number,
  ) {
    this.first = index * MAP_ENTRIES_PER_PAGE;
  }

  /** Sub-blocks of `block` (a block of this page) present in the overlay. */
  present(block: number): number {
    return this.masks[2 * (block - this.first)];
  }

  /** Sub-blocks of `block` that read as zeros. */
  zero(block: number): number {
    return this.masks[2 * (block - this.first) + 1];
  }

  set(block: number, present: number, zero: number): void {
    const at = 2 * (block - this.first);
    this.masks[at] = present;
    this.masks[at + 1] = zero;
    this.dirty = true;
  }
}

export type SlotState = { kind: 'empty' } | { kind: 'valid'; gen: number; masks: Uint32Array } | { kind: 'invalid'; why: string };

/** A page version ready to be written: made by `collectDirty`, applied by `commit`. */
export interface PendingPage {
  page: MapPage;
  gen: number;
  bytes: Buffer;
}

export class StateMap {
  private readonly pages = new PageCache<MapPage>((index) => this.load(index));
  readonly fullMask: number;

  constructor(
    private readonly file: BlockFile,
    readonly mapOffset: number,
    readonly pageCount: number,
    readonly blocks: number,
    readonly subBlocks: number,
  ) {
    this.fullMask = subBlocks === 32 ? 0xffffffff : (1 << subBlocks) - 1;
  }

  /** The page holding `block`, if it is in memory (the hot path: no promise). */
  loaded(block: number): MapPage | undefined {
    return this.pages.get(Math.floor(block / MAP_ENTRIES_PER_PAGE));
  }

  /** The page holding `block`, loading it from disk the first time. */
  page(block: number): MapPage | Promise<MapPage> {
    return this.loaded(block) ?? this.pages.fetch(Math.floor(block / MAP_ENTRIES_PER_PAGE));
  }

  /** Whether the pages of blocks first..last (inclusive) are all in memory. */
  rangeLoaded(first: number, last: number): boolean {
    for (let index = pageOf(first); index <= pageOf(last); index++) if (!this.pages.get(index)) return false;
    return true;
  }

  /** Loads the pages of blocks first..last (inclusive). */
  async loadRange(first: number, last: number): Promise<void> {
    for (let index = pageOf(first); index <= pageOf(last); index++) await this.pages.fetch(index);
  }

  /** The blocks page `index` describes: [first, last] (for messages and repair). */
  blocksOfPage(index: number): [number, number] {
    const first = index * MAP_ENTRIES_PER_PAGE;
    return [first, first + this.countOf(index) - 1];
  }

  /** Calls `fn` for every block that is present or zero in any sub-block, in order (cost: the pages written). */
  async forEachHeld(fn: (block: number, present: number, zero: number) => void | Promise<void>): Promise<void> {
    await this.visit(async (page) => {
      if (!page) return;
      for (let block = page.first; block < page.first + page.count; block++) {
        const p = page.present(block);
        const z = page.zero(block);
        if ((p | z) !== 0) await fn(block, p, z);
      }
    });
  }

  private countOf(index: number): number {
    return Math.min(MAP_ENTRIES_PER_PAGE, this.blocks - index * MAP_ENTRIES_PER_PAGE);
  }

  /**
   * Visits every page in order, for walks over the whole map (info's counts, reclaiming space):
   * a page in memory as it is; a page only on disk read but not kept (a walk over a 1 TiB map
   * must not end up holding all of it); a run of pages never written (holes in the file, found
   * with seekData where the system can tell) as null, without reading them, with the blocks it
   * would describe. The cost follows what was written, not the disk size.
   */
  async visit(fn: (page: MapPage | null, first: number, count: number) => void | Promise<void>): Promise<void> {
    const unwritten = (index: number) => fn(null, index * MAP_ENTRIES_PER_PAGE, this.countOf(index));
    let index = 0;
    while (index < this.pageCount) {
      if (!this.pages.get(index)) {
        const data = await this.file.seekData(this.mapOffset + index * MAP_SLOT_STRIDE);
        const written = data < 0 ? this.pageCount : Math.min(this.pageCount, Math.floor((data - this.mapOffset) / MAP_SLOT_STRIDE));
        // Never written on disk, but a page changed since the last flush may be in memory.
        for (; index < written; index++) {
          const page = this.pages.get(index);
          await (page ? fn(page, page.first, page.count) : unwritten(index));
        }
        if (index >= this.pageCount) return;
      }
      const page = this.pages.get(index) ?? (await this.load(index));
      await fn(page, page.first, page.count);
      index++;
    }
  }

  private async load(index: number): Promise<MapPage> {
    const slots = await this.readSlots(index);
    const chosen = chooseSlot(slots);
    if (!chosen) {
      const first = index * MAP_ENTRIES_PER_PAGE;
      throw new CowdiskError(
        ErrorCode.CORRUPT,
        `${this.file.path}: state map page ${index} (blocks ${first}..${first + MAP_ENTRIES_PER_PAGE - 1}) is damaged in both copies (${describe(slots)}). Run \`cowdisk check --repair\` to reset it (those blocks will read from the parent).`,
        { path: this.file.path, block: first },
      );
    }
    const page = new MapPage(index, this.countOf(index));
    if (chosen.kind === 'valid') {
      page.masks.set(chosen.masks);
      page.durableGen = chosen.gen;
    }
    return page;
  }

  /** Reads and decodes both slots of a page (also used by `check`). */
  async readSlots(index: number): Promise<[SlotState, SlotState]> {
    const raw = Buffer.alloc(MAP_SLOT_STRIDE);
    const n = await this.file.read(raw, this.mapOffset + index * MAP_SLOT_STRIDE);
    if (n < raw.length) raw.fill(0, n);
    return [this.decodeSlot(raw.subarray(0, MAP_PAGE_SIZE), index), this.decodeSlot(raw.subarray(MAP_PAGE_SIZE), index)];
  }

  decodeSlot(bytes: Buffer, index: number): SlotState {
    const magic = bytes.readUInt32LE(MapPageField.MAGIC);
    if (magic === 0 && isAllZero(bytes)) return { kind: 'empty' };
    if (magic !== MAP_PAGE_MAGIC) return { kind: 'invalid', why: 'bad magic' };
    if (zlibCrc32(bytes.subarray(MapPageField.PAGE_INDEX)) !== bytes.readUInt32LE(MapPageField.CRC)) return { kind: 'invalid', why: 'checksum mismatch' };
    const holds = bytes.readUInt32LE(MapPageField.PAGE_INDEX);
    if (holds !== index) return { kind: 'invalid', why: `holds page ${holds}` };
    const gen = bytes.readUInt32LE(MapPageField.GENERATION);
    const masks = new Uint32Array(2 * MAP_ENTRIES_PER_PAGE);
    const first = index * MAP_ENTRIES_PER_PAGE;
    for (let slot = 0; slot < MAP_ENTRIES_PER_PAGE; slot++) {
      const present = bytes.readUInt32LE(MAP_PAGE_HEADER + MAP_ENTRY_SIZE * slot);
      const zero = bytes.readUInt32LE(MAP_PAGE_HEADER + MAP_ENTRY_SIZE * slot + 4);
      if ((present | zero) === 0) continue;
      if (first + slot >= this.blocks) return { kind: 'invalid', why: `entry for block ${first + slot} past the end` };
      if ((present & zero) !== 0 || ((present | zero) & ~this.fullMask) !== 0) {
        return { kind: 'invalid', why: `entry for block ${first + slot} has impossible masks` };
      }
      masks[2 * slot] = present;
      masks[2 * slot + 1] = zero;
    }
    return { kind: 'valid', gen, masks };
  }

  /**
   * Makes every map change so far durable, after the data it describes: take copies of the dirty
   * pages, sync the file (the data), write the copies, sync again. Pages changed meanwhile stay
   * dirty for the next call; on failure the copies are queued again.
   */
  async persist(): Promise<void> {
    const pending = this.collectDirty();
    try {
      await this.file.sync();
      if (pending.length === 0) return;
      await this.writePending(pending);
      await this.file.sync();
      this.commit(pending);
      await this.writeMirrors(pending);
    } catch (err) {
      this.requeue(pending);
      throw err;
    }
  }

  /** Copies every dirty page into the bytes of its next version and marks it clean. */
  collectDirty(): PendingPage[] {
    const out: PendingPage[] = [];
    for (const page of this.pages.values()) {
      if (!page.dirty) continue;
      page.dirty = false;
      const gen = nextGen(page.durableGen);
      out.push({ page, gen, bytes: encodePage(page, gen) });
    }
    return out;
  }

  /** Writes collected versions, each to the slot not holding the page's durable version. */
  async writePending(pending: PendingPage[]): Promise<void> {
    for (const p of pending) {
      await this.file.write(p.bytes, slotOffset(this.mapOffset, p.page.index, p.gen));
    }
  }

  /** After the writes are synced: they are the durable versions now. */
  commit(pending: PendingPage[]): void {
    for (const p of pending) if (newerGen(p.gen, p.page.durableGen)) p.page.durableGen = p.gen;
  }

  /**
   * A page written for the first time has one valid copy beside an empty slot, and "one empty,
   * one damaged" must only ever mean a torn first write. So its content is also written to the
   * other slot as the next generation. That copy needs no sync of its own: if it is lost the first
   * copy stands, and the next flush syncs the file before it overwrites the first copy's slot.
   */
  async writeMirrors(committed: PendingPage[]): Promise<void> {
    for (const p of committed) {
      if (p.gen !== 1 || p.page.durableGen !== 1) continue;
      const mirror = Buffer.from(p.bytes);
      mirror.writeUInt32LE(2, MapPageField.GENERATION);
      sealPage(mirror);
      await this.file.write(mirror, slotOffset(this.mapOffset, p.page.index, 2));
      p.page.durableGen = 2;
    }
  }

  /** A failed flush: the pages must be written again next time. */
  requeue(pending: PendingPage[]): void {
    for (const p of pending) p.page.dirty = true;
  }

  /** Puts a page in memory with given masks (repair), marked dirty. */
  replace(index: number, masks: Uint32Array | undefined, durableGen: number): MapPage {
    const page = new MapPage(index, this.countOf(index));
    if (masks) page.masks.set(masks);
    page.durableGen = durableGen;
    page.dirty = true;
    this.pages.set(index, page);
    return page;
  }

  hasDirty(): boolean {
    for (const page of this.pages.values()) if (page.dirty) return true;
    return false;
  }
}

export function slotOffset(mapOffset: number, index: number, gen: number): number {
  return mapOffset + index * MAP_SLOT_STRIDE + (gen % 2) * MAP_PAGE_SIZE;
}

export function encodePage(page: MapPage, gen: number): Buffer {
  const bytes = Buffer.alloc(MAP_PAGE_SIZE);
  bytes.writeUInt32LE(MAP_PAGE_MAGIC, MapPageField.MAGIC);
  bytes.writeUInt32LE(page.index, MapPageField.PAGE_INDEX);
  bytes.writeUInt32LE(gen, MapPageField.GENERATION);
  for (let i = 0; i < page.masks.length; i++) bytes.writeUInt32LE(page.masks[i], MAP_PAGE_HEADER + 4 * i);
  return sealPage(bytes);
}

/** Sets a page's CRC over everything after it. */
function sealPage(bytes: Buffer): Buffer {
  bytes.writeUInt32LE(zlibCrc32(bytes.subarray(MapPageField.PAGE_INDEX)), MapPageField.CRC);
  return bytes;
}

function pageOf(block: number): number {
  return Math.floor(block / MAP_ENTRIES_PER_PAGE);
}

/**
 * Page generations are u32 and wrap after 0xffffffff to 0 (a hot page of a long-lived disk can
 * get there). The two copies of a page always hold consecutive generations, so the newer one is
 * the one ahead by less than half the range (serial-number arithmetic, as RFC 1982).
 */
export function newerGen(a: number, b: number): boolean {
  return a !== b && ((a - b) >>> 0) < 0x80000000;
}

function nextGen(gen: number): number {
  return (gen + 1) >>> 0;
}

/** The slot to believe: the valid one with the newer generation, else empty, else none. */
export function chooseSlot(slots: [SlotState, SlotState]): SlotState | undefined {
  const valid = slots.filter((s): s is Extract<SlotState, { kind: 'valid' }> => s.kind === 'valid');
  if (valid.length === 2) return newerGen(valid[1].gen, valid[0].gen) ? valid[1] : valid[0];
  if (valid.length === 1) return valid[0];
  if (slots.some((s) => s.kind === 'empty')) return { kind: 'empty' };
  return undefined;
}

function describe(slots: [SlotState, SlotState]): string {
  return slots.map((s, i) => `copy ${i}: ${s.kind === 'invalid' ? s.why : s.kind}`).join(', ');
}

const ZERO_PAGE = Buffer.alloc(MAP_PAGE_SIZE);

function isAllZero(bytes: Buffer): boolean {
  return bytes.equals(ZERO_PAGE);
}
