/**
 * A FileSystem wrapper for the engine's tests: it passes everything to the file system it wraps
 * and records every read (file, offset, length), so a test can count what a code path touched
 * (table pages per layer, parent reads) and assert that no read left the file.
 *
 * "Inside the file" means the whole range [pos, pos + length) is below the file's size, with one
 * exception: reads at offset 0 are the probes that find out what a file is (magic, headers) and
 * may be longer than a damaged or truncated file. Every other read is of a range some structure
 * pointed to, which the parser must have bounds-checked first.
 */
import type { BlockFile, CreateOptions, FileStat, FileSystem, OpenOptions } from '../../src/io/file.js';

export interface ReadRecord {
  path: string;
  pos: number;
  length: number;
}

export class WatchedFileSystem implements FileSystem {
  readonly reads: ReadRecord[] = [];
  /** Reads that reached past the end of their file (see the header comment). */
  readonly outside: string[] = [];
  /** Handles opened or created and not yet closed, by path. */
  readonly handles = new Map<string, number>();

  constructor(readonly inner: FileSystem) {}

  async open(path: string, options?: OpenOptions): Promise<BlockFile> {
    return new WatchedFile(this, await this.inner.open(path, options));
  }

  async create(path: string, options?: CreateOptions): Promise<BlockFile> {
    return new WatchedFile(this, await this.inner.create(path, options));
  }

  /** Paths with handles still open. */
  get leaked(): string[] {
    return [...this.handles].filter(([, n]) => n > 0).map(([p]) => p);
  }

  stat(path: string): Promise<FileStat> {
    return this.inner.stat(path);
  }

  exists(path: string): Promise<boolean> {
    return this.inner.exists(path);
  }

  rename(from: string, to: string): Promise<void> {
    return this.inner.rename(from, to);
  }

  publish(from: string, to: string): Promise<void> {
    return this.inner.publish(from, to);
  }

  unlink(path: string): Promise<void> {
    return this.inner.unlink(path);
  }

  syncDir(dir: string): Promise<void> {
    return this.inner.syncDir(dir);
  }

  chmod(path: string, mode: number): Promise<void> {
    return this.inner.chmod(path, mode);
  }

  /** Reads of `path`, optionally only those starting in [from, to). */
  readsOf(path: string, from = 0, to = Infinity): ReadRecord[] {
    return this.reads.filter((r) => r.path === path && r.pos >= from && r.pos < to);
  }

  forget(): void {
    this.reads.length = 0;
  }
}

class WatchedFile implements BlockFile {
  private closed = false;

  constructor(
    private readonly fs: WatchedFileSystem,
    private readonly inner: BlockFile,
  ) {
    fs.handles.set(inner.path, (fs.handles.get(inner.path) ?? 0) + 1);
  }

  get path(): string {
    return this.inner.path;
  }

  get readOnly(): boolean {
    return this.inner.readOnly;
  }

  async read(buf: Buffer, pos: number): Promise<number> {
    this.fs.reads.push({ path: this.inner.path, pos, length: buf.length });
    if (pos !== 0 && buf.length > 0) {
      const size = await this.inner.size();
      if (pos + buf.length > size) this.fs.outside.push(`${this.inner.path}: ${buf.length} bytes at ${pos}, file size ${size}`);
    }
    return this.inner.read(buf, pos);
  }

  /** Every read is watched: none is answered past `read`. */
  readNow(): boolean {
    return false;
  }

  write(buf: Buffer, pos: number): Promise<void> {
    return this.inner.write(buf, pos);
  }

  sync(): Promise<void> {
    return this.inner.sync();
  }

  size(): Promise<number> {
    return this.inner.size();
  }

  truncate(size: number): Promise<void> {
    return this.inner.truncate(size);
  }

  punchHole(pos: number, length: number): Promise<boolean> {
    return this.inner.punchHole(pos, length);
  }

  stat(): Promise<FileStat> {
    return this.inner.stat();
  }

  tryLock(exclusive: boolean): Promise<boolean | null> {
    return this.inner.tryLock(exclusive);
  }

  seekData(pos: number): Promise<number> {
    return this.inner.seekData(pos);
  }

  seekHole(pos: number): Promise<number> {
    return this.inner.seekHole(pos);
  }

  close(): Promise<void> {
    if (!this.closed) this.fs.handles.set(this.inner.path, (this.fs.handles.get(this.inner.path) ?? 1) - 1);
    this.closed = true;
    return this.inner.close();
  }
}
