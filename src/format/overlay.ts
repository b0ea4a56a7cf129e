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
import { HEADER_SIZE, MAGIC_LENGTH, OVERLAY_MAGIC, blockCount } from './constants.js';
import { type OverlayHeaderFields, type ParentRef, decodeOverlayHeader, encodeOverlayHeader, overlayLayout, checkNewGeometry } from './header.js';
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

  /** Where block `block`'s byte `inBlock` lives in the file. */
  dataPos(block: number, inBlock = 0): number {
    return this.header.dataOffset + block * this.header.blockSize + inBlock;
  }

  /** Bytes the file must span: the end of the data region. */
  get expectedLength(): number {
    return this.header.dataOffset + this.blocks * this.header.blockSize;
  }

  /**
   * Creates an overlay atomically: written and synced under a temporary name, then renamed, so a
   * crash leaves either nothing or a whole, empty overlay.
   */
  static async create(fs: FileSystem, file: string, spec: NewOverlay): Promise<void> {
    const abs = path.resolve(file);
    checkNewGeometry(spec.size, spec.blockSize, abs);
    if (await fs.exists(abs)) {
      throw new CowdiskError(ErrorCode.EXISTS, `${abs} already exists; choose another name or remove it first.`, { path: abs });
    }
    const layout = overlayLayout(spec.size, spec.blockSize);
    const header: OverlayHeaderFields = {
      generation: 1n,
      dirty: false,
      size: spec.size,
      blockSize: spec.blockSize,
      subBlocks: spec.subBlocks,
      ...layout,
      uuid: randomBytes(16),
      createdNs: BigInt(Date.now()) * 1_000_000n,
      parent: spec.parent,
    };
    const tmp = `${abs}.partial-${process.pid}`;
    const handle = await fs.create(tmp, { exclusive: false });
    try {
      await handle.write(encodeOverlayHeader(header), HEADER_SIZE);
      await handle.write(encodeOverlayHeader({ ...header, generation: 2n }), 0);
      await handle.truncate(layout.dataOffset + blockCount(spec.size, spec.blockSize) * spec.blockSize);
      if (spec.mode !== undefined) await fs.chmod(tmp, spec.mode);
      await handle.sync();
      await handle.close();
      await fs.publish(tmp, abs);
    } catch (err) {
      // Whatever step failed (EIO, a full disk), the half-made file must not stay behind.
      await handle.close().catch(() => undefined);
      await fs.unlink(tmp).catch(() => undefined);
      throw err;
    }
    await fs.syncDir(path.dirname(abs));
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
    for (let i = 0; i < (both ? 2 : 1); i++) {
      const generation = this.header.generation + 1n;
      const header = { ...next, generation };
      await this.file.write(encodeOverlayHeader(header), Number(generation % 2n) * HEADER_SIZE);
      await this.file.sync();
      this.header = header;
    }
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

/** Reads both header slots and keeps the valid one with the higher generation. */
async function readHeader(handle: BlockFile): Promise<OverlayHeaderFields> {
  const both = Buffer.alloc(2 * HEADER_SIZE);
  const n = await handle.read(both, 0);
  const slots = [both.subarray(0, HEADER_SIZE), both.subarray(HEADER_SIZE)];
  if (!slots.some((s) => s.subarray(0, MAGIC_LENGTH).equals(OVERLAY_MAGIC))) {
    throw new CowdiskError(ErrorCode.BAD_MAGIC, `${handle.path} is not a cowdisk overlay (its first bytes are not the overlay magic).`, {
      path: handle.path,
    });
  }
  if (n < 2 * HEADER_SIZE) {
    throw new CowdiskError(ErrorCode.TRUNCATED, `${handle.path} is truncated: ${n} bytes, shorter than its headers. Restore it from a copy.`, {
      path: handle.path,
    });
  }
  const decoded: OverlayHeaderFields[] = [];
  const errors: CowdiskError[] = [];
  for (const slot of slots) {
    try {
      decoded.push(decodeOverlayHeader(slot, handle.path));
    } catch (err) {
      if (!(err instanceof CowdiskError)) throw err;
      errors.push(err);
    }
  }
  if (decoded.length === 0) {
    // Prefer the most specific explanation: a newer version over plain damage.
    throw errors.find((e) => e.code === ErrorCode.BAD_VERSION) ?? errors[0];
  }
  return decoded.reduce((a, b) => (b.generation > a.generation ? b : a));
}
