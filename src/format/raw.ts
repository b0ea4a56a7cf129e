/**
 * A raw base: any plain image file, used read-only at the bottom of a chain. It has no header of
 * its own, so a child records the base's identity: its size plus a cheap fingerprint (inode and
 * modification time, both changed by any write or replacement). A base whose identity no longer
 * matches is refused rather than silently read through.
 */
import type { BlockFile, FileStat, FileSystem } from '../io/file.js';
import type { ParentRef } from './header.js';

export interface RawIdentity {
  size: number;
  ino: bigint;
  mtimeNs: bigint;
}

export function rawIdentity(stat: FileStat): RawIdentity {
  return { size: stat.size, ino: stat.ino, mtimeNs: stat.mtimeNs };
}

export function formatRawIdentity(id: RawIdentity): string {
  return `raw:size=${id.size},ino=${id.ino},mtime=${id.mtimeNs}`;
}

/** What differs between a recorded identity and the file's, in words; empty when they agree. */
export function rawIdentityChanges(recorded: Extract<ParentRef, { kind: 'raw' }>, now: RawIdentity): string[] {
  const changes: string[] = [];
  if (recorded.size !== now.size) changes.push(`its size is ${now.size} bytes, not ${recorded.size}`);
  if (recorded.ino !== now.ino) changes.push('it is a different file (inode changed)');
  if (recorded.mtimeNs !== now.mtimeNs) changes.push('it was modified after the clone was made (modification time changed)');
  return changes;
}

export class RawFile {
  private constructor(
    readonly file: BlockFile,
    readonly identity: RawIdentity,
  ) {}

  static async open(fs: FileSystem, file: string): Promise<RawFile> {
    const handle = await fs.open(file, { readOnly: true });
    try {
      return new RawFile(handle, rawIdentity(await handle.stat()));
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  get path(): string {
    return this.file.path;
  }

  get size(): number {
    return this.identity.size;
  }

  /** read's synchronous fast path (BlockFile.readNow); false past the end of the file. */
  readNow(buf: Buffer, pos: number): boolean {
    return this.file.readNow(buf, pos);
  }

  /** Reads at pos, filling with zeros past the end of the file. */
  async read(buf: Buffer, pos: number): Promise<void> {
    const n = await this.file.read(buf, pos);
    if (n < buf.length) buf.fill(0, n);
  }

  /**
   * The runs of [from, to) that hold data and the holes between them (read as zeros), from the
   * file system (SEEK_DATA / SEEK_HOLE; where it cannot tell, everything is data). Past the end of
   * the file is a hole.
   */
  async allocation(from: number, to: number): Promise<Array<{ start: number; end: number; data: boolean }>> {
    const runs: Array<{ start: number; end: number; data: boolean }> = [];
    const push = (start: number, end: number, data: boolean) => {
      if (end > start) runs.push({ start, end, data });
    };
    const fileEnd = Math.min(to, this.size);
    let pos = from;
    while (pos < fileEnd) {
      const foundData = await this.file.seekData(pos);
      const data = foundData < 0 ? fileEnd : Math.min(foundData, fileEnd);
      push(pos, data, false);
      if (data >= fileEnd) break;
      const foundHole = await this.file.seekHole(data);
      const hole = foundHole < 0 ? fileEnd : Math.min(foundHole, fileEnd);
      push(data, hole, true);
      pos = hole;
    }
    push(Math.max(from, fileEnd), to, false);
    return runs;
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}
