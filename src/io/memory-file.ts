/**
 * A file system in memory that knows what a power cut would keep.
 *
 * Each file holds two states: `current` (what reads see) and `durable` (what survived the last
 * sync), plus the log of writes, truncates and punches made since. Namespace changes (create,
 * rename, unlink) are likewise durable only after `syncDir`. `crash()` throws away what was not
 * made durable, the way a disk with a volatile write cache does: by default every unsynced change
 * is lost; with `keep: 'random'` an arbitrary subset of them survives, in any order, and a write
 * may be torn at a 512-byte sector boundary. Handles opened before the crash stop working.
 *
 * `inject` lets a test fail any operation (EIO on the 7th write, ENOSPC on sync, ...), and
 * `yieldEvery` makes every operation give way to other tasks so that concurrent requests really
 * interleave.
 */
import * as path from 'node:path';
import { CowdiskError, ErrorCode, ioError } from '../errors.js';
import type { BlockFile, CreateOptions, FileStat, FileSystem, OpenOptions } from './file.js';

type Change =
  | { kind: 'write'; pos: number; data: Buffer }
  | { kind: 'truncate'; size: number }
  | { kind: 'punch'; pos: number; length: number };

export interface FileOperation {
  op: 'read' | 'write' | 'sync' | 'truncate' | 'punch' | 'open' | 'create' | 'rename' | 'unlink' | 'syncDir';
  path: string;
  pos?: number;
  length?: number;
}

export interface CrashOptions {
  /** 'none' (default): every unsynced change is lost. 'random': each survives with probability 1/2. */
  keep?: 'none' | 'random';
  /** With keep 'random': a surviving write may keep only a prefix of its 512-byte sectors. */
  tear?: boolean;
  /** Random source in [0, 1) for keep 'random' (tests pass a seeded one). */
  random?: () => number;
}

class Content {
  buf: Buffer;
  length: number;

  constructor(buf = Buffer.alloc(0), length = 0) {
    this.buf = buf;
    this.length = length;
  }

  clone(): Content {
    return new Content(Buffer.from(this.buf.subarray(0, this.length)), this.length);
  }

  private reserve(size: number): void {
    if (size <= this.buf.length) return;
    const grown = Buffer.alloc(Math.max(size, this.buf.length * 2, 4096));
    this.buf.copy(grown, 0, 0, this.length);
    this.buf = grown;
  }

  apply(change: Change): void {
    switch (change.kind) {
      case 'write': {
        const end = change.pos + change.data.length;
        this.reserve(end);
        if (change.pos > this.length) this.buf.fill(0, this.length, change.pos);
        change.data.copy(this.buf, change.pos);
        this.length = Math.max(this.length, end);
        break;
      }
      case 'truncate':
        if (change.size > this.length) {
          this.reserve(change.size);
          this.buf.fill(0, this.length, change.size);
        }
        this.length = change.size;
        break;
      case 'punch': {
        const end = Math.min(this.length, change.pos + change.length);
        if (change.pos < end) this.buf.fill(0, change.pos, end);
        break;
      }
    }
  }
}

class Inode {
  /** Open files holding a lock: each with whether it is exclusive. */
  readonly locks = new Map<object, boolean>();
  current = new Content();
  durable = new Content();
  pending: Change[] = [];
  mtimeNs: bigint;
  mode = 0o644;

  constructor(
    readonly ino: number,
    clock: bigint,
  ) {
    this.mtimeNs = clock;
  }
}

const SECTOR = 512;

export class MemoryFileSystem implements FileSystem {
  /** Called before every operation; an Error it returns is thrown by that operation. */
  inject: ((op: FileOperation) => Error | undefined) | undefined;
  /** Every operation awaits a macrotask first, so that concurrent callers interleave. */
  yieldEvery = false;

  private names = new Map<string, Inode>();
  private durableNames = new Map<string, Inode>();
  private nextIno = 1;
  private clock = 1_700_000_000_000_000_000n;
  /** Bumped by crash(): handles from an earlier epoch are dead. */
  epoch = 0;
  /** How many operations have run (tests use it to pick crash points). */
  operations = 0;

  private tick(): bigint {
    this.clock += 1000n;
    return this.clock;
  }

  async before(op: FileOperation): Promise<void> {
    this.operations++;
    if (this.yieldEvery) await new Promise<void>((resolve) => setImmediate(resolve));
    const err = this.inject?.(op);
    if (err) throw ioError(err, op.path, `${op.op} (injected)`);
  }

  lookup(file: string): Inode {
    const node = this.names.get(path.resolve(file));
    if (!node) {
      const err = Object.assign(new Error('no such file'), { code: 'ENOENT' });
      throw ioError(err, file, 'opening');
    }
    return node;
  }

  async open(file: string, options: OpenOptions = {}): Promise<BlockFile> {
    await this.before({ op: 'open', path: file });
    return new MemoryFile(this, path.resolve(file), this.lookup(file), options.readOnly ?? false);
  }

  async create(file: string, options: CreateOptions = {}): Promise<BlockFile> {
    const abs = path.resolve(file);
    await this.before({ op: 'create', path: abs });
    if (this.names.has(abs) && options.exclusive !== false) {
      throw ioError(Object.assign(new Error('exists'), { code: 'EEXIST' }), abs, 'creating');
    }
    const node = new Inode(this.nextIno++, this.tick());
    if (options.mode !== undefined) node.mode = options.mode;
    this.names.set(abs, node);
    return new MemoryFile(this, abs, node, false);
  }

  async stat(file: string): Promise<FileStat> {
    return statOf(this.lookup(file));
  }

  async exists(file: string): Promise<boolean> {
    return this.names.has(path.resolve(file));
  }

  async rename(from: string, to: string): Promise<void> {
    await this.before({ op: 'rename', path: from });
    const node = this.lookup(from);
    this.names.delete(path.resolve(from));
    this.names.set(path.resolve(to), node);
  }

  async publish(from: string, to: string): Promise<void> {
    // One operation, as the rename it replaces (tests count operations to pick crash points).
    await this.before({ op: 'rename', path: from });
    const node = this.lookup(from);
    const target = path.resolve(to);
    if (this.names.has(target)) throw ioError(Object.assign(new Error('exists'), { code: 'EEXIST' }), target, `naming ${from}`);
    this.names.delete(path.resolve(from));
    this.names.set(target, node);
  }

  async unlink(file: string): Promise<void> {
    await this.before({ op: 'unlink', path: file });
    this.lookup(file);
    this.names.delete(path.resolve(file));
  }

  async syncDir(dir: string): Promise<void> {
    const abs = path.resolve(dir);
    await this.before({ op: 'syncDir', path: abs });
    for (const name of [...this.durableNames.keys()]) {
      if (path.dirname(name) === abs && !this.names.has(name)) this.durableNames.delete(name);
    }
    for (const [name, node] of this.names) {
      if (path.dirname(name) === abs) this.durableNames.set(name, node);
    }
  }

  async chmod(file: string, mode: number): Promise<void> {
    this.lookup(file).mode = mode & 0o7777;
  }

  /** Sets a file's bytes directly, durable at once (to build fixtures, or to damage a file in a test). */
  put(file: string, data: Buffer): void {
    const abs = path.resolve(file);
    let node = this.names.get(abs);
    if (!node) {
      node = new Inode(this.nextIno++, this.tick());
      this.names.set(abs, node);
    }
    node.current = new Content(Buffer.from(data), data.length);
    node.durable = node.current.clone();
    node.pending = [];
    node.mtimeNs = this.tick();
    this.durableNames.set(abs, node);
  }

  /** The bytes a read would see now. */
  get(file: string): Buffer {
    const node = this.lookup(file);
    return Buffer.from(node.current.buf.subarray(0, node.current.length));
  }

  /** Lists files whose path starts with `prefix`. */
  list(prefix = '/'): string[] {
    return [...this.names.keys()].filter((n) => n.startsWith(path.resolve(prefix))).sort();
  }

  /** Power cut: keep what was synced (and, with keep 'random', some of what was not). */
  crash(options: CrashOptions = {}): void {
    const random = options.random ?? Math.random;
    const nodes = new Set([...this.names.values(), ...this.durableNames.values()]);
    for (const node of nodes) {
      const survivor = node.durable.clone();
      if (options.keep === 'random') {
        for (const change of node.pending) {
          if (random() < 0.5) continue;
          if (change.kind === 'write' && options.tear && change.data.length > SECTOR && random() < 0.3) {
            const sectors = Math.ceil(change.data.length / SECTOR);
            const kept = Math.floor(random() * sectors);
            survivor.apply({ kind: 'write', pos: change.pos, data: change.data.subarray(0, kept * SECTOR) });
          } else {
            survivor.apply(change);
          }
        }
      }
      node.current = survivor;
      node.durable = survivor.clone();
      node.pending = [];
      node.locks.clear();
    }
    this.names = new Map(this.durableNames);
    this.epoch++;
  }

  /** Records a change on `node` (visible at once, durable after sync). */
  change(node: Inode, change: Change): void {
    node.current.apply(change);
    node.pending.push(change);
    node.mtimeNs = this.tick();
  }
}

function isZero(buf: Buffer, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (buf[i] !== 0) return false;
  return true;
}

function statOf(node: Inode): FileStat {
  const { buf, length } = node.current;
  let allocated = 0;
  for (let pos = 0; pos < length; pos += 4096) {
    const end = Math.min(length, pos + 4096);
    if (!isZero(buf, pos, end)) allocated += end - pos;
  }
  return { size: length, ino: BigInt(node.ino), mtimeNs: node.mtimeNs, allocated, mode: node.mode };
}

class MemoryFile implements BlockFile {
  private readonly epoch: number;
  private closed = false;

  constructor(
    private readonly fs: MemoryFileSystem,
    readonly path: string,
    private readonly node: Inode,
    readonly readOnly: boolean,
  ) {
    this.epoch = fs.epoch;
  }

  private async enter(op: FileOperation['op'], pos?: number, length?: number): Promise<void> {
    if (this.closed || this.epoch !== this.fs.epoch) {
      throw new CowdiskError(ErrorCode.IO, `${this.path}: file handle is no longer valid (closed, or lost in a crash).`, {
        path: this.path,
      });
    }
    await this.fs.before({ op, path: this.path, pos, length });
    if (this.readOnly && op !== 'read' && op !== 'sync') {
      throw ioError(Object.assign(new Error('bad file descriptor'), { code: 'EBADF' }), this.path, op);
    }
  }

  async read(buf: Buffer, pos: number): Promise<number> {
    await this.enter('read', pos, buf.length);
    const { current } = this.node;
    if (pos >= current.length) return 0;
    return current.buf.copy(buf, 0, pos, Math.min(current.length, pos + buf.length));
  }

  /**
   * Copies at once, when nothing is watching reads: with an injected fault or interleaving asked
   * for, every read goes through `read` so that the test sees it.
   */
  readNow(buf: Buffer, pos: number): boolean {
    const fs = this.fs;
    if (this.closed || this.epoch !== fs.epoch || fs.inject || fs.yieldEvery) return false;
    const { current } = this.node;
    if (pos + buf.length > current.length) return false;
    fs.operations++;
    current.buf.copy(buf, 0, pos, pos + buf.length);
    return true;
  }

  async write(buf: Buffer, pos: number): Promise<void> {
    await this.enter('write', pos, buf.length);
    this.fs.change(this.node, { kind: 'write', pos, data: Buffer.from(buf) });
  }

  async sync(): Promise<void> {
    await this.enter('sync');
    this.node.durable = this.node.current.clone();
    this.node.pending = [];
  }

  async size(): Promise<number> {
    await this.enter('read');
    return this.node.current.length;
  }

  async truncate(size: number): Promise<void> {
    await this.enter('truncate', size);
    this.fs.change(this.node, { kind: 'truncate', size });
  }

  async punchHole(pos: number, length: number): Promise<boolean> {
    await this.enter('punch', pos, length);
    this.fs.change(this.node, { kind: 'punch', pos, length });
    return true;
  }

  async stat(): Promise<FileStat> {
    await this.enter('read');
    return statOf(this.node);
  }

  async tryLock(exclusive: boolean): Promise<boolean | null> {
    await this.enter('read');
    for (const [holder, held] of this.node.locks) {
      if (holder !== this && (exclusive || held)) return false;
    }
    this.node.locks.set(this, exclusive);
    return true;
  }

  /** Memory keeps no holes: a 4 KiB page of zeros counts as one, as `stat` counts allocation. */
  async seekData(pos: number): Promise<number> {
    await this.enter('read', pos);
    const { buf, length } = this.node.current;
    for (let page = Math.floor(pos / 4096) * 4096; page < length; page += 4096) {
      const end = Math.min(length, page + 4096);
      if (!isZero(buf, Math.max(page, pos), end)) return Math.max(page, pos);
    }
    return -1;
  }

  /** The first 4 KiB page of zeros (or the end) at or after `pos`, as `seekData` sees holes. */
  async seekHole(pos: number): Promise<number> {
    await this.enter('read', pos);
    const { buf, length } = this.node.current;
    if (pos >= length) return -1;
    for (let page = Math.floor(pos / 4096) * 4096; page < length; page += 4096) {
      const end = Math.min(length, page + 4096);
      if (isZero(buf, page, end)) return Math.max(page, pos);
    }
    return length;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.node.locks.delete(this);
  }
}
