/**
 * Every byte cowdisk stores goes through these two interfaces. The real implementation
 * (`real-file.ts`) uses the operating system; the memory one (`memory-file.ts`) keeps what has
 * been synced apart from what has only been written, so a test can "pull the plug" and see what a
 * power loss would leave, and can inject errors.
 *
 * The contract mirrors a POSIX file on a disk with a volatile write cache:
 * - `write` is visible to later reads at once, but durable only after `sync` returns;
 * - namespace changes (create, rename, unlink) are durable only after `syncDir` of the directory;
 * - `punchHole` deallocates a range, which then reads as zeros.
 */

export interface FileStat {
  size: number;
  /** Inode number (or the memory file system's stand-in for it): 64 bits, as overlayfs's xino
   * and other file systems use the high bits. */
  ino: bigint;
  /** Last modification time in nanoseconds since the epoch. */
  mtimeNs: bigint;
  /** Bytes actually allocated on disk (st_blocks * 512); equal to size where unknown. */
  allocated: number;
  /** Permission bits (st_mode & 0o7777). */
  mode: number;
}

export interface BlockFile {
  readonly path: string;
  readonly readOnly: boolean;
  /** Reads up to buf.length bytes at pos into buf; returns how many (fewer only at end of file). */
  read(buf: Buffer, pos: number): Promise<number>;
  /**
   * Fills all of buf with the bytes at pos, at once and only from memory (the page cache): true
   * when it did, false when it could not without waiting (bytes not cached, past the end of the
   * file, an error). After false buf holds anything; the caller reads it with `read`, which then
   * also reports what went wrong. The server's hot read path (docs/PERFORMANCE.md, issue 13).
   */
  readNow(buf: Buffer, pos: number): boolean;
  /** Writes all of buf at pos, extending the file if needed. */
  write(buf: Buffer, pos: number): Promise<void>;
  /** Makes every earlier write and truncate durable (fdatasync). */
  sync(): Promise<void>;
  size(): Promise<number>;
  truncate(size: number): Promise<void>;
  /** Deallocates [pos, pos + length) so it reads as zeros. Returns false when the system cannot. */
  punchHole(pos: number, length: number): Promise<boolean>;
  stat(): Promise<FileStat>;
  /**
   * Takes a lock on the whole file without waiting, held until close (also released if the process
   * dies). Exclusive excludes every other lock; shared excludes exclusive ones. Other opens in the
   * same process conflict too. Returns false when another holder conflicts, null when this system
   * cannot lock (the native addon is not built).
   */
  tryLock(exclusive: boolean): Promise<boolean | null>;
  /**
   * The first offset at or after `pos` where the file has data (lseek SEEK_DATA), or -1 when only
   * holes follow. Lets a walk over a sparse file (the lifecycle verbs over a state map) cost what
   * is allocated, not the file's length.
   *
   * Fallback, where the system cannot tell (no native addon, a file system without SEEK_DATA):
   * `pos` itself, i.e. "data may start right here". Callers stay correct (they read what they
   * would have skipped, and find zeros) and only lose the saving.
   */
  seekData(pos: number): Promise<number>;
  /**
   * The first offset at or after `pos` where a hole starts (lseek SEEK_HOLE; the end of the file
   * counts as one), or -1 past the end. Fallback where the system cannot tell: the file's length
   * (the whole rest of the file is data), which is again correct, only not sparse.
   */
  seekHole(pos: number): Promise<number>;
  close(): Promise<void>;
}

export interface OpenOptions {
  /** Open for reading only (the default is read-write). */
  readOnly?: boolean;
}

export interface CreateOptions {
  /** Fail with EXISTS instead of replacing an existing file. Default true. */
  exclusive?: boolean;
  /** Create the file read-only for everyone (sealed layers are 0444). */
  mode?: number;
}

export interface FileSystem {
  open(path: string, options?: OpenOptions): Promise<BlockFile>;
  /** Creates an empty file opened read-write. */
  create(path: string, options?: CreateOptions): Promise<BlockFile>;
  stat(path: string): Promise<FileStat>;
  exists(path: string): Promise<boolean>;
  /** Atomically replaces `to` with `from` (durable after syncDir). */
  rename(from: string, to: string): Promise<void>;
  /**
   * Gives the file `from` the name `to`, atomically, but never over a file that exists there
   * (EXISTS, naming `to`; `from` is left as it was). How a finished image gets its name: an
   * existing file is never replaced, even one that appeared while the image was being written.
   */
  publish(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
  /** Makes earlier create / rename / unlink in directory `dir` durable. */
  syncDir(dir: string): Promise<void>;
  /** Changes permission bits (sealed layers are made read-only). */
  chmod(path: string, mode: number): Promise<void>;
}
