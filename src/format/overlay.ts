/**
 * The overlay file: the writable layer on top of a chain.
 *
 * Layout: two 4 KiB header slots, the state map (two 4 KiB slots per 510-block page), then the data
 * region, aligned to the block size, in which block i lives at a fixed place (data offset + i *
 * block size). The file is sparse: blocks never written take no space, so a clone of a 100 GiB
 * base is a few kilobytes, and a rewrite lands in place with no allocation table to update.
 *
 * Headers are written to the slot not holding the current one, with the next generation, so a
 * torn header write leaves the previous header. Changes that must not roll back (a new parent)
 * are written to both slots in turn.
 */
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';
import type { BlockFile, FileSystem } from '../io/file.js';
import { NewFile, type NewFileOptions } from '../io/new-file.js';
import { HEADER_SIZE, MAGIC_LENGTH, MAX_GENERATION, OVERLAY_HEADER_SLOTS, OVERLAY_MAGIC, UUID_SIZE, blockCount } from './constants.js';
import { type OverlayHeaderFields, type ParentRef, checkNewGeometry, decodeOverlayHeader, encodeOverlayHeader, overlayLayout } from './header.js';
import { StateMap } from './state-map.js';

export interface NewOverlay {
  size: number;
  blockSize: number;
  subBlocks: number;
  parent: ParentRef;
  /** Permission bits for the new file, exactly (no umask); default the file system's own. */
  mode?: number;
}

export class OverlayFile {
  readonly blocks: number;
  readonly subBlockSize: number;
  readonly map: StateMap;

  private constructor(
    readonly file: BlockFile,
    public header: OverlayHeaderFields,
  ) {
    this.blocks = blockCount(header.size, header.blockSize);
    this.subBlockSize = header.blockSize / header.subBlocks;
    this.map = new StateMap(file, header.mapOffset, header.mapPages, this.blocks, header.subBlocks);
  }

  get path(): string {
    return this.file.path;
  }

  get readOnly(): boolean {
    return this.file.readOnly;
  }

  /**
   * The data region by disk offset: the bytes of disk offset `offset` live at one fixed place in
   * the file (data offset + offset), which is what makes a rewrite one pwrite with no table to
   * update. Callers pass ranges inside the disk (checked at the edge).
   */
  async readData(view: Buffer, offset: number): Promise<void> {
    const n = await this.file.read(view, this.header.dataOffset + offset);
    // A file cut short under its data region (checked at open, but a file can shrink meanwhile) reads as zeros.
    if (n < view.length) view.fill(0, n);
  }

  /** readData at once from the page cache, or false (BlockFile.readNow). */
  readDataNow(view: Buffer, offset: number): boolean {
    return this.file.readNow(view, this.header.dataOffset + offset);
  }

  writeData(buf: Buffer, offset: number): Promise<void> {
    return this.file.write(buf, this.header.dataOffset + offset);
  }

  /** Gives back the space of [offset, offset + length) of the disk; false when the system cannot punch holes. */
  punchData(offset: number, length: number): Promise<boolean> {
    return this.file.punchHole(this.header.dataOffset + offset, length);
  }

  /** Bytes the file must span: the end of the data region. */
  get expectedLength(): number {
    return this.header.dataOffset + this.blocks * this.header.blockSize;
  }

  /**
   * Creates an overlay atomically (io/new-file.ts): written and synced under a temporary name, then
   * named, so a crash leaves either nothing or a whole, empty overlay. `replace` is for the switch
   * of an overlay to its emptied successor (ops/reset.ts).
   */
  static async create(fs: FileSystem, file: string, spec: NewOverlay, options: NewFileOptions = {}): Promise<void> {
    checkNewGeometry(spec.size, spec.blockSize, path.resolve(file));
    const out = await NewFile.create(fs, file, options);
    try {
      await OverlayFile.format(out.file, spec);
    } catch (err) {
      // Whatever step failed (EIO, a full disk), the half-made file must not stay behind.
      await out.discard();
      throw err;
    }
    await out.publish({ mode: spec.mode });
  }

  /**
   * Writes an empty overlay into an empty file: both header slots valid (the second one current)
   * and the file as long as its data region, sparse. The caller makes it durable and names it.
   */
  static async format(handle: BlockFile, spec: NewOverlay): Promise<void> {
    const layout = overlayLayout(spec.size, spec.blockSize);
    const header: OverlayHeaderFields = {
      generation: 1n,
      dirty: false,
      size: spec.size,
      blockSize: spec.blockSize,
      subBlocks: spec.subBlocks,
      ...layout,
      uuid: randomBytes(UUID_SIZE),
      createdNs: BigInt(Date.now()) * 1_000_000n,
      parent: spec.parent,
    };
    await handle.write(encodeOverlayHeader(header), HEADER_SIZE);
    await handle.write(encodeOverlayHeader({ ...header, generation: 2n }), 0);
    await handle.truncate(layout.dataOffset + blockCount(spec.size, spec.blockSize) * spec.blockSize);
  }

  /**
   * Opens an overlay. A writable open takes an exclusive lock: one writer at a time, since a second
   * writer would corrupt the state map the first keeps in memory. A read-only open takes no lock
   * unless `sharedLock` asks for one (serving or attaching read-only: no writer may change the
   * image under a kernel caching its pages), which excludes writers but not other readers.
   */
  static async open(fs: FileSystem, file: string, options: { readOnly?: boolean; sharedLock?: boolean } = {}): Promise<OverlayFile> {
    // `snapshot` and `commit` replace an overlay by renaming a new file over it while they hold the
    // old one's lock. An open that found the old file just before that rename gets its lock just
    // after, on a file nothing reaches any more: its writes would be lost. So a lock counts only if
    // the name still leads to the locked file; otherwise open again, the new file this time.
    for (let attempt = 0; attempt < 3; attempt++) {
      const overlay = await OverlayFile.openOnce(fs, file, options);
      if (overlay) return overlay;
    }
    throw new CowdiskError(ErrorCode.LOCKED, `${path.resolve(file)} was replaced three times while it was being opened; another command is working on it. Try again once it is done.`, {
      path: path.resolve(file),
    });
  }

  /** One try at `open`; null when the locked file is no longer the one the name leads to. */
  private static async openOnce(fs: FileSystem, file: string, options: { readOnly?: boolean; sharedLock?: boolean }): Promise<OverlayFile | null> {
    const handle = await fs.open(file, { readOnly: options.readOnly });
    try {
      const exclusive = !options.readOnly;
      const locked = exclusive || options.sharedLock === true;
      if (locked && (await handle.tryLock(exclusive)) === false) {
        throw new CowdiskError(
          ErrorCode.LOCKED,
          exclusive
            ? `${handle.path} is in use: another process has it open (a \`cowdisk serve\`, \`cowdisk attach\` or another command). Stop that process first, or open the image read-only.`
            : `${handle.path} is open for writing by another process (a \`cowdisk serve\`, \`cowdisk attach\` or another command); it cannot be served read-only while it may change.`,
          { path: handle.path },
        );
      }
      if (locked && !(await stillNamed(fs, handle, file))) {
        await handle.close();
        return null;
      }
      const header = await readHeader(handle);
      const length = await handle.size();
      const overlay = new OverlayFile(handle, header);
      if (length < overlay.expectedLength) {
        throw new CowdiskError(
          ErrorCode.TRUNCATED,
          `${handle.path} is truncated: ${length} bytes where its header needs ${overlay.expectedLength}. Restore it from a copy.`,
          { path: handle.path },
        );
      }
      return overlay;
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  /** Writes `next` as the new header: to the other slot, or (both) to both slots in turn. */
  async writeHeader(next: Omit<OverlayHeaderFields, 'generation'>, both = false): Promise<void> {
    const writes = both ? 2 : 1;
    if (this.header.generation + BigInt(writes) > MAX_GENERATION) await this.renumber();
    for (let i = 0; i < writes; i++) await this.writeSlot({ ...next, generation: this.header.generation + 1n });
  }

  /**
   * Every header this writer produces must be one the reader accepts, and the reader takes
   * generations up to MAX_GENERATION only. A header about to pass it starts again from the
   * bottom, its content unchanged, without a moment at which no slot holds the current header:
   * first the other slot gets generation 1 or 2 (whichever belongs in that slot), which the
   * current one still outranks; then the current slot gets the next one, which now outranks it.
   * A write torn in either step leaves the other slot, with the same content.
   */
  private async renumber(): Promise<void> {
    const other = 1 - headerSlot(this.header.generation);
    const low = BigInt(other === 1 ? 1 : 2);
    const current = this.header;
    await this.writeSlot({ ...current, generation: low });
    this.header = current;
    await this.writeSlot({ ...current, generation: low + 1n });
  }

  private async writeSlot(header: OverlayHeaderFields): Promise<void> {
    await this.file.write(encodeOverlayHeader(header), headerSlot(header.generation) * HEADER_SIZE);
    await this.file.sync();
    this.header = header;
  }

  async setDirty(dirty: boolean): Promise<void> {
    if (this.header.dirty === dirty) return;
    await this.writeHeader({ ...this.header, dirty });
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}

/** Whether `file` still names the file `handle` has open (not renamed over or removed since). */
async function stillNamed(fs: FileSystem, handle: BlockFile, file: string): Promise<boolean> {
  const named = await fs.stat(file).catch(() => undefined);
  return named !== undefined && named.ino === (await handle.stat()).ino;
}

/** The slot a header of this generation is written to: the one not holding the previous generation. */
function headerSlot(generation: bigint): number {
  return Number(generation % BigInt(OVERLAY_HEADER_SLOTS));
}

/**
 * Every header slot of an overlay, decoded, or the error that slot gives (for `check`, which
 * reports a damaged copy the reader survived).
 */
export async function readHeaderSlots(handle: BlockFile): Promise<Array<OverlayHeaderFields | CowdiskError>> {
  const all = Buffer.alloc(OVERLAY_HEADER_SLOTS * HEADER_SIZE);
  const n = await handle.read(all, 0);
  const slots = Array.from({ length: OVERLAY_HEADER_SLOTS }, (_, i) => all.subarray(i * HEADER_SIZE, (i + 1) * HEADER_SIZE));
  if (!slots.some((s) => s.subarray(0, MAGIC_LENGTH).equals(OVERLAY_MAGIC))) {
    throw new CowdiskError(ErrorCode.BAD_MAGIC, `${handle.path} is not a cowdisk overlay (its first bytes are not the overlay magic).`, {
      path: handle.path,
    });
  }
  if (n < all.length) {
    throw new CowdiskError(ErrorCode.TRUNCATED, `${handle.path} is truncated: ${n} bytes, shorter than its headers. Restore it from a copy.`, {
      path: handle.path,
    });
  }
  return slots.map((slot) => {
    try {
      return decodeOverlayHeader(slot, handle.path);
    } catch (err) {
      if (!(err instanceof CowdiskError)) throw err;
      return err;
    }
  });
}

/** Reads every header slot and keeps the valid one with the higher generation. */
async function readHeader(handle: BlockFile): Promise<OverlayHeaderFields> {
  const slots = await readHeaderSlots(handle);
  const decoded = slots.filter((s): s is OverlayHeaderFields => !(s instanceof CowdiskError));
  const errors = slots.filter((s): s is CowdiskError => s instanceof CowdiskError);
  if (decoded.length === 0) {
    // Prefer the most specific explanation: a newer version over plain damage.
    throw errors.find((e) => e.code === ErrorCode.BAD_VERSION) ?? errors[0];
  }
  return decoded.reduce((a, b) => (b.generation > a.generation ? b : a));
}
