/**
 * The operating system's files behind the `BlockFile` interface.
 *
 * Reads and writes are issued as synchronous pread/pwrite from the event loop: for the small,
 * page-cache-hot requests a disk server sees, a synchronous syscall (a few microseconds) is cheaper
 * than a round trip through libuv's thread pool (measured in docs/PERFORMANCE.md). A read the
 * page cache cannot answer would stall every connection while the device works, so reads first
 * ask for cached bytes only (preadv2 with RWF_NOWAIT, through the addon) and send just the rest
 * to the thread pool; so do large reads (POOL_READ_MIN), whose copy is worth a second core.
 * Writes land in the page cache and do not wait on the device; a server's large ones (`io:
 * 'serve'`, POOL_WRITE_MIN) go to the thread pool too, where two of them copy into the page cache
 * on two cores. Anything that
 * may block for long (fdatasync, fsync of a directory) goes to the thread pool. `io: 'async'`
 * sends every read and write to the pool.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { ioError } from '../errors.js';
import { native } from '../native.js';
import type { BlockFile, CreateOptions, FileStat, FileSystem, OpenOptions } from './file.js';

const fdatasync = promisify(fs.fdatasync);
const fsyncFd = promisify(fs.fsync);
const fstat = promisify(fs.fstat);
const readAsync = promisify(fs.read);
const writeAsync = promisify(fs.write);

/**
 * 'sync': reads and writes on the event loop, but for large reads (POOL_READ_MIN). 'serve': the
 * same, and large writes (POOL_WRITE_MIN) on the thread pool too, for a server, whose requests
 * overlap. 'async': everything on the pool.
 */
export type IoMode = 'sync' | 'serve' | 'async';

/**
 * Reads of at least this many bytes go to the thread pool even when the page cache holds them:
 * copying 256 KiB or more takes long enough (about 180 µs per MiB here) that doing it on a pool
 * thread, while the event loop sends the previous reply, beats saving the hand-off. Measured with
 * 1 MiB reads at QD4: 0.95x the floor's MiB/s with the copy on the event loop, 1.0x on the pool
 * (docs/PERFORMANCE.md).
 */
const POOL_READ_MIN = 256 * 1024;

/**
 * Writes of at least this many bytes go to the thread pool. Copying 1 MiB into new page-cache
 * pages costs 1-3 ms on this virtual machine (the host faults each page in again: docs/PERFORMANCE.md);
 * on the event loop that copy stops the connection's reads, on the pool two copies run at once.
 * Measured with 1 MiB writes at QD4 into a fresh clone, every tool writing into reported memory:
 * 369-455 MiB/s on the event loop, 495-507 on the pool (nbdkit's cow filter, threaded: 421-445).
 * Only for a server ('serve'): an import writes one stream, with nothing to overlap, while its
 * compression jobs fill the pool, and ran 8% slower with its writes there (587-626 against
 * 544-550 MiB/s, three pairs).
 */
const POOL_WRITE_MIN = 256 * 1024;

function toStat(st: fs.BigIntStats): FileStat {
  return {
    size: Number(st.size),
    ino: st.ino,
    mtimeNs: st.mtimeNs,
    allocated: Number(st.blocks) * 512,
    mode: Number(st.mode) & 0o7777,
  };
}

export class RealFile implements BlockFile {
  private closed = false;
  /** Whether reads may ask for cached bytes only (false: the file system cannot tell, or no addon). */
  private nowait = true;

  constructor(
    readonly path: string,
    private readonly fd: number,
    readonly readOnly: boolean,
    private readonly io: IoMode,
  ) {}

  async read(buf: Buffer, pos: number): Promise<number> {
    let done = 0;
    try {
      if (this.io !== 'async' && buf.length < POOL_READ_MIN) done = this.readHot(buf, pos);
      while (done < buf.length) {
        const n = (await readAsync(this.fd, buf, done, buf.length - done, pos + done)).bytesRead;
        if (n === 0) break;
        done += n;
      }
    } catch (err) {
      throw ioError(err, this.path, `reading ${buf.length} bytes at offset ${pos}`);
    }
    return done;
  }

  readNow(buf: Buffer, pos: number): boolean {
    if (this.closed || this.io === 'async' || buf.length >= POOL_READ_MIN || !this.nowait) return false;
    try {
      return this.readHot(buf, pos) === buf.length;
    } catch {
      return false;
    }
  }

  /**
   * Reads on the event loop what can be read without waiting for the device, and returns how
   * much: all of buf, or less where the page cache stopped (or at the end of the file, which the
   * caller's next read then confirms).
   */
  private readHot(buf: Buffer, pos: number): number {
    let done = 0;
    while (done < buf.length) {
      const binding = this.nowait ? native() : null;
      const n = binding
        ? binding.readCached(this.fd, buf.subarray(done), pos + done)
        : fs.readSync(this.fd, buf, done, buf.length - done, pos + done);
      if (n === -2) {
        this.nowait = false;
        continue;
      }
      if (n <= 0) break;
      done += n;
    }
    return done;
  }

  async write(buf: Buffer, pos: number): Promise<void> {
    let done = 0;
    try {
      while (done < buf.length) {
        done +=
          this.io === 'sync' || (this.io === 'serve' && buf.length < POOL_WRITE_MIN)
            ? fs.writeSync(this.fd, buf, done, buf.length - done, pos + done)
            : (await writeAsync(this.fd, buf, done, buf.length - done, pos + done)).bytesWritten;
      }
    } catch (err) {
      throw ioError(err, this.path, `writing ${buf.length} bytes at offset ${pos}`);
    }
  }

  async sync(): Promise<void> {
    try {
      await fdatasync(this.fd);
    } catch (err) {
      throw ioError(err, this.path, 'syncing');
    }
  }

  async size(): Promise<number> {
    return (await this.stat()).size;
  }

  async truncate(size: number): Promise<void> {
    try {
      fs.ftruncateSync(this.fd, size);
    } catch (err) {
      throw ioError(err, this.path, `truncating to ${size} bytes`);
    }
  }

  async punchHole(pos: number, length: number): Promise<boolean> {
    const binding = native();
    if (!binding || length <= 0) return false;
    try {
      return binding.punchHole(this.fd, pos, length);
    } catch (err) {
      throw ioError(err, this.path, `punching a hole of ${length} bytes at offset ${pos}`);
    }
  }

  async stat(): Promise<FileStat> {
    try {
      return toStat((await fstat(this.fd, { bigint: true })) as fs.BigIntStats);
    } catch (err) {
      throw ioError(err, this.path, 'reading file status');
    }
  }

  async tryLock(exclusive: boolean): Promise<boolean | null> {
    const binding = native();
    if (!binding) return null;
    try {
      return binding.lock(this.fd, exclusive);
    } catch (err) {
      throw ioError(err, this.path, 'locking');
    }
  }

  async seekData(pos: number): Promise<number> {
    const binding = native();
    if (!binding) return pos;
    try {
      return binding.seekData(this.fd, pos);
    } catch (err) {
      throw ioError(err, this.path, `looking for data from offset ${pos}`);
    }
  }

  async seekHole(pos: number): Promise<number> {
    const binding = native();
    if (!binding) return this.size();
    try {
      return binding.seekHole(this.fd, pos);
    } catch (err) {
      throw ioError(err, this.path, `looking for a hole from offset ${pos}`);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      fs.closeSync(this.fd);
    } catch (err) {
      throw ioError(err, this.path, 'closing');
    }
  }
}

export class RealFileSystem implements FileSystem {
  constructor(private readonly io: IoMode = 'sync') {}

  async open(file: string, options: OpenOptions = {}): Promise<BlockFile> {
    const readOnly = options.readOnly ?? false;
    try {
      const fd = fs.openSync(file, readOnly ? 'r' : 'r+');
      return new RealFile(path.resolve(file), fd, readOnly, this.io);
    } catch (err) {
      throw ioError(err, file, readOnly ? 'opening for reading' : 'opening for writing');
    }
  }

  async create(file: string, options: CreateOptions = {}): Promise<BlockFile> {
    const flags = options.exclusive === false ? 'w+' : 'wx+';
    try {
      const fd = fs.openSync(file, flags, options.mode ?? 0o644);
      return new RealFile(path.resolve(file), fd, false, this.io);
    } catch (err) {
      throw ioError(err, file, 'creating');
    }
  }

  async stat(file: string): Promise<FileStat> {
    try {
      return toStat(fs.statSync(file, { bigint: true }));
    } catch (err) {
      throw ioError(err, file, 'reading file status');
    }
  }

  async exists(file: string): Promise<boolean> {
    return fs.existsSync(file);
  }

  async rename(from: string, to: string): Promise<void> {
    try {
      fs.renameSync(from, to);
    } catch (err) {
      throw ioError(err, from, `renaming to ${to}`);
    }
  }

  async publish(from: string, to: string): Promise<void> {
    // link() fails with EEXIST rather than replace; then the temporary name goes. File systems
    // without hard links fall back to a check and a rename (a window, but no worse than before).
    try {
      fs.linkSync(from, to);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') throw ioError(err, to, `naming ${from}`);
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS' && code !== 'EMLINK') {
        throw ioError(err, from, `naming it ${to}`);
      }
      if (fs.existsSync(to)) throw ioError(Object.assign(new Error('exists'), { code: 'EEXIST' }), to, `naming ${from}`);
      return this.rename(from, to);
    }
    await this.unlink(from);
  }

  async unlink(file: string): Promise<void> {
    try {
      fs.unlinkSync(file);
    } catch (err) {
      throw ioError(err, file, 'removing');
    }
  }

  async syncDir(dir: string): Promise<void> {
    let fd: number | undefined;
    try {
      fd = fs.openSync(dir, 'r');
      await fsyncFd(fd);
    } catch (err) {
      throw ioError(err, dir, 'syncing the directory');
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
  }

  async chmod(file: string, mode: number): Promise<void> {
    try {
      fs.chmodSync(file, mode);
    } catch (err) {
      throw ioError(err, file, 'changing permissions');
    }
  }
}

/** The file system cowdisk uses unless a test hands it another. */
export const realFileSystem: FileSystem = new RealFileSystem();

/** The file system images are served from (serve, attach, bench's server): large writes on the pool. */
export const servingFileSystem: FileSystem = new RealFileSystem('serve');

/**
 * The file system an operation works on: the one its options name (a test's memory file system,
 * one that injects faults), else the operating system's. The one place that default is chosen.
 */
export function fileSystemOf(options: { fs?: FileSystem }): FileSystem {
  return options.fs ?? realFileSystem;
}
