/**
 * Which pieces of a cached layer are in its copy: one byte per piece (table pages first, then
 * blocks), 1 once the piece's bytes are in the copy, verified against their digest and durable.
 *
 * The rules that let any number of processes fill one copy at once, without a lock:
 * - A piece's bytes are written only once they passed their check, and always to the same place:
 *   two processes fetching the same piece write the same bytes, so their writes cannot mix into
 *   anything but the right bytes.
 * - The mark is written only after an fdatasync of the copy that followed the piece's write: a
 *   mark never reaches the disk before the bytes it vouches for (the overlay's rule: data before
 *   map). A crash loses at most marks of bytes that are there, which are fetched again.
 * - A mark is a whole byte of its own, never a bit shared with other pieces, so writing one never
 *   reads-modifies-writes a neighbour's; marks only ever go from 0 to 1.
 * - Before fetching, a process reads the marks again from the file: what another process
 *   fetched meanwhile is not fetched twice. (Two processes missing the same piece at the same
 *   instant may both fetch it; both write the same verified bytes.)
 *
 * In memory a slot may also be "settled": nothing to fetch (a zero block); or "held": fetched,
 * verified and written by this process, which reads it from the copy at once, while its mark
 * waits for the sync (other processes may fetch it meanwhile; a crash loses only the mark).
 * Neither is ever written as such.
 */
import type { BlockFile, FileSystem } from '../io/file.js';

const ABSENT = 0;
const PRESENT = 1;
const SETTLED = 2;
const HELD = 3;
/** Marks read per pread when the whole map is loaded. */
const LOAD_CHUNK = 1024 * 1024;

export class PresentMap {
  /** Pieces marked present in the file, as far as this process knows. */
  marked = 0;
  /** Pieces held: this process's, their marks not written yet. */
  held = 0;

  private constructor(
    private readonly file: BlockFile,
    private readonly marks: Uint8Array,
  ) {}

  /** Opens the map of `pieces` slots at `file` (read-write unless `readOnly`) and loads it. */
  static async open(fs: FileSystem, file: string, pieces: number, readOnly: boolean): Promise<PresentMap> {
    const handle = await fs.open(file, { readOnly });
    const map = new PresentMap(handle, new Uint8Array(pieces));
    try {
      await map.reload(0, pieces);
    } catch (err) {
      await handle.close();
      throw err;
    }
    return map;
  }

  /** Whether slot `index` needs no fetch: present, held, or settled. */
  has(index: number): boolean {
    return this.marks[index] !== ABSENT;
  }

  /** Records, in this process only, that slot `index` has nothing to fetch. */
  settle(index: number): void {
    if (this.marks[index] === ABSENT) this.marks[index] = SETTLED;
  }

  /** Records, in this process only, that `indices` are in the copy, verified; `mark` follows after a sync. */
  hold(indices: readonly number[]): void {
    for (const i of indices) {
      if (this.marks[i] !== ABSENT) continue;
      this.marks[i] = HELD;
      this.held++;
    }
  }

  /** Reads the marks of [first, first + count) from the file again: other processes' fetches. */
  async reload(first: number, count: number): Promise<void> {
    const end = Math.min(this.marks.length, first + count);
    const buf = Buffer.alloc(Math.min(LOAD_CHUNK, Math.max(0, end - first)));
    for (let at = first; at < end; at += buf.length) {
      const view = buf.subarray(0, Math.min(buf.length, end - at));
      const n = await this.file.read(view, at);
      for (let i = 0; i < n; i++) {
        if (view[i] === PRESENT && this.marks[at + i] !== PRESENT) this.set(at + i);
      }
    }
  }

  /**
   * Marks `indices` present in the file. The caller has written their verified bytes and synced
   * the copy since. Consecutive slots go in one write.
   */
  async mark(indices: readonly number[]): Promise<void> {
    const sorted = [...indices].sort((a, b) => a - b);
    for (let i = 0; i < sorted.length; ) {
      let j = i + 1;
      while (j < sorted.length && sorted[j] === sorted[j - 1] + 1) j++;
      await this.file.write(Buffer.alloc(j - i, PRESENT), sorted[i]);
      for (let k = i; k < j; k++) if (this.marks[sorted[k]] !== PRESENT) this.set(sorted[k]);
      i = j;
    }
  }

  private set(index: number): void {
    if (this.marks[index] === HELD) this.held--;
    this.marks[index] = PRESENT;
    this.marked++;
  }

  close(): Promise<void> {
    return this.file.close();
  }
}
