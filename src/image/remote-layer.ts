/**
 * A sealed layer that lives in the layer cache (layer-cache.ts) and is fetched on demand: a local
 * sparse copy of the layer's file, filled piece by piece from a source that hands out byte ranges
 * (an OCI registry, through range-source.ts), as DADI/overlaybd, eStargz and SOCI do for
 * container layers and EBS for volumes.
 *
 * A piece is what a reader checks on its own (format/sealed-file.ts): a table page, or one
 * block's stored bytes. The header and directory came whole at clone time. A read that touches a
 * piece not yet present
 *   1. reads the present map again (another process may have fetched it meanwhile),
 *   2. fetches the piece with one range request (neighbouring missing pieces of the same read
 *      share one request; a piece already being fetched by this process is waited for),
 *   3. checks it (`checkTable`, `checkStored`): bytes that fail are never written, never marked,
 *      never handed out; the read fails (EIO to an NBD client) and the next read fetches again,
 *   4. writes it to the copy and lets the reader read it from there at once; in the background
 *      the copy is synced (one fdatasync shared by the fetches that finished meanwhile) and only
 *      then the piece marked present for every process (present-map.ts has the rules that make
 *      this safe without a lock between processes). The sync is off the read's path: a reader
 *      of this process needs the bytes, not their durability, which only the mark vouches for.
 * Everything else (states, reads, allocation, counts, verification) is the local reader's, so a
 * cached layer behaves exactly as the same file on disk, and once every piece is present it is
 * one: nothing is fetched or checked on the read path any more.
 *
 * A layer's header names its parent by the path it had when it was pushed, which means nothing
 * in the cache; `parent` names the sibling entry of the parent's layer digest instead, so the
 * chain opens through the cache unchanged.
 */
import diagnostics from 'node:diagnostics_channel';
import * as path from 'node:path';
import { debuglog } from 'node:util';
import { CowdiskError, ErrorCode } from '../errors.js';
import type { ParentRef } from '../format/header.js';
import type { SealedFile } from '../format/sealed-file.js';
import type { BlockFile, FileSystem } from '../io/file.js';
import { completeBlob } from './blob-copy.js';
import { GroupSync } from './group-sync.js';
import type { AllocationRun, FillOptions, FillResult, RemoteCache, RemoteStats, SealedLayer, SealedLayerCounts, VerifySink } from './layer.js';
import { COPY_NAME, type CacheRecord, entryName, presentPath } from './layer-cache.js';
import { PresentMap } from './present-map.js';
import { type RangeSource, rangeSourceFor } from './range-source.js';
import { SnapshotLayer } from './snapshot-layer.js';
import { type FillTarget, type Piece, fillLayer, groupPieces } from './remote-fill.js';

const log = debuglog('cowdisk:remote');
/** Every range request a remote layer makes: `{layer, source, offset, length, pieces, ms, error?}`. */
export const fetchChannel = diagnostics.channel('cowdisk:remote:fetch');
/** Every piece refused because its bytes failed their check: `{layer, source, piece, block, error}`. */
export const refusedChannel = diagnostics.channel('cowdisk:remote:refused');

/** Sealed layers are read-only for everyone once whole. */
const WHOLE_MODE = 0o444;

export class RemoteLayer implements SealedLayer, RemoteCache {
  readonly kind = 'snapshot';
  private readonly inner: SnapshotLayer;
  private readonly sync: GroupSync | null;
  private readonly storedPieces: number;
  private src: RangeSource | undefined;
  private readonly inflight = new Map<number, Promise<void>>();
  /** Syncs and the marks that follow them, not yet done. */
  private readonly marking = new Set<Promise<void>>();
  private foreground = 0;
  private idleWaiters: Array<() => void> = [];
  private readonly counters: RemoteStats = { requests: 0, bytes: 0, pieces: 0, refused: 0, syncs: 0, syncMs: 0 };

  private constructor(
    private readonly fs: FileSystem,
    private readonly file: SealedFile,
    private readonly record: CacheRecord,
    /** null once whole. */
    private marks: PresentMap | null,
    /** The copy open for writing; null once whole. */
    private rw: BlockFile | null,
  ) {
    this.inner = new SnapshotLayer(file);
    this.storedPieces = file.tableRanges(0, file.blocks).length + file.header.storedBlocks;
    this.sync = rw ? new GroupSync(rw, this.counters) : null;
  }

  /** Opens the cached copy `file` (its reader already open) with its record. */
  static async open(fs: FileSystem, file: SealedFile, record: CacheRecord): Promise<RemoteLayer> {
    const copy = file.path;
    const bad = (why: string) => new CowdiskError(ErrorCode.CORRUPT, `${copy}: the layer cache's entry is damaged (${why}). Remove its directory and clone again.`, { path: copy });
    if (`sha256:${file.header.layerDigest.toString('hex')}` !== record.layerDigest) throw bad(`the copy is layer sha256:${file.header.layerDigest.toString('hex')}, its record says ${record.layerDigest}`);
    if (record.blocks !== file.blocks || file.tableRanges(0, file.blocks).some((r) => r.index >= record.tablePages)) throw bad('its record counts other pieces than the copy has');
    if (!(await fs.exists(presentPath(copy)))) return new RemoteLayer(fs, file, record, null, null);
    // A cache this user may only read (another user's) still serves what it holds.
    let rw: BlockFile | null = null;
    try {
      rw = await fs.open(copy);
    } catch (err) {
      if (!(err instanceof CowdiskError) || !['EACCES', 'EPERM', 'EROFS'].includes((err.cause as NodeJS.ErrnoException)?.code ?? '')) throw err;
    }
    try {
      return new RemoteLayer(fs, file, record, await PresentMap.open(fs, presentPath(copy), record.tablePages + record.blocks, rw === null), rw);
    } catch (err) {
      await rw?.close();
      throw err;
    }
  }

  get path(): string {
    return this.file.path;
  }
  get identity(): string {
    return this.inner.identity;
  }
  get size(): number {
    return this.inner.size;
  }
  get blockSize(): number {
    return this.inner.blockSize;
  }
  get version(): number {
    return this.inner.version;
  }
  get createdNs(): bigint {
    return this.inner.createdNs;
  }
  get remote(): RemoteCache {
    return this;
  }
  get source(): string {
    return this.record.source;
  }
  get blob(): { digest: string; size: number } {
    return this.record.blob;
  }
  get origin(): Readonly<Record<string, unknown>> {
    return this.record.origin;
  }
  get metadata(): CacheRecord['metadata'] {
    return this.record.metadata;
  }
  /** Every piece is here (for this process: its own fetches count before their marks are written). */
  get whole(): boolean {
    return this.marks === null || this.marks.marked + this.marks.held === this.storedPieces;
  }

  /** The parent's entry in the same cache, by the parent digest the header records. */
  get parent(): ParentRef {
    const p = this.file.header.parent;
    if (p.kind !== 'snapshot') return p;
    return { kind: 'snapshot', path: path.join('..', entryName(p.digest), COPY_NAME), size: p.size, digest: p.digest };
  }

  reference(child: string): ParentRef {
    return this.inner.reference(child);
  }

  changesFrom(ref: ParentRef, blockSize: number): string[] {
    return this.inner.changesFrom(ref, blockSize);
  }

  // Not async: once the pieces are here, a read costs the local reader's and nothing more.
  states(first: number, count: number): Promise<Uint8Array | null> {
    if (this.whole) return this.inner.states(first, count);
    return this.ensureTables(first, count).then(() => this.inner.states(first, count));
  }

  /** Only what is already in the cache, and then only as the layer inside reads it. */
  readNow(buf: Buffer, offset: number): boolean {
    return (this.whole || !this.lacks(offset, buf.length)) && this.inner.readNow(buf, offset);
  }

  read(buf: Buffer, offset: number): Promise<void> {
    if (this.whole || !this.lacks(offset, buf.length)) return this.inner.read(buf, offset);
    return this.ensureBlocks(offset, buf.length).then(() => this.inner.read(buf, offset));
  }

  /**
   * Whether a block [offset, offset + length) touches is not here yet: the read path's only cost
   * once the blocks are. A block that is here implies its table page is (it was fetched after).
   */
  private lacks(offset: number, length: number): boolean {
    const bs = this.file.header.blockSize;
    const marks = this.marks!;
    const base = this.record.tablePages;
    const end = Math.ceil((offset + length) / bs);
    for (let b = Math.floor(offset / bs); b < end; b++) if (!marks.has(base + b)) return true;
    return false;
  }

  allocation(from: number, to: number): Promise<AllocationRun[]> {
    return this.inner.allocation(from, to);
  }

  async heldBlocks(blockSize: number, fn: (first: number, end: number) => void): Promise<void> {
    if (!this.whole) await this.ensureTables(0, this.file.blocks);
    return this.inner.heldBlocks(blockSize, fn);
  }

  counts(): SealedLayerCounts {
    return this.inner.counts();
  }

  /**
   * Fetches what is not here yet (saying how much to `sink.fetched`), then verifies the copy as
   * any local layer. A piece the source sent damaged is reported once, as the fetch found it.
   */
  async verify(sink: VerifySink): Promise<void> {
    const refused = new Set<number>();
    if (!this.whole) {
      const result = await this.fill();
      sink.fetched?.(result.fetched);
      for (const err of result.failed) {
        sink.problem(err);
        if (err.block !== undefined) refused.add(err.block);
      }
    }
    await this.inner.verify({
      verified: (bytes) => sink.verified(bytes),
      problem: (err) => {
        if (err.block === undefined || !refused.has(err.block)) sink.problem(err);
      },
    });
  }

  cached(): { present: number; total: number } {
    return { present: this.marks ? this.marks.marked + this.marks.held : this.storedPieces, total: this.storedPieces };
  }

  stats(): RemoteStats {
    return { ...this.counters };
  }

  useSource(source: RangeSource): void {
    void this.src?.close();
    this.src = source;
  }

  fill(options: FillOptions = {}): Promise<FillResult> {
    return fillLayer(this.fillTarget(), options);
  }

  /** The table pages that describe blocks [first, first + count), fetched if missing. */
  private async ensureTables(first: number, count: number): Promise<void> {
    if (this.whole) return;
    const marks = this.marks!;
    let need = this.file.tableRanges(first, count).filter((r) => !marks.has(r.index));
    if (need.length === 0) return;
    await marks.reload(need[0].index, need[need.length - 1].index - need[0].index + 1);
    need = need.filter((r) => !marks.has(r.index));
    await this.fetch(need.map((r) => ({ slot: r.index, offset: r.offset, length: r.length, table: true, id: r.index })));
  }

  /** The stored bytes of every block [offset, offset + length) touches, fetched if missing. */
  private async ensureBlocks(offset: number, length: number): Promise<void> {
    const bs = this.file.header.blockSize;
    const first = Math.floor(offset / bs);
    const end = Math.ceil((offset + length) / bs);
    await this.ensureTables(first, end - first);
    // Another fetch may have made the layer whole meanwhile (its present map is gone then).
    if (this.whole) return;
    const marks = this.marks!;
    const base = this.record.tablePages;
    await marks.reload(base + first, end - first);
    const pieces: Piece[] = [];
    for (let b = first; b < end; b++) {
      if (marks.has(base + b)) continue;
      const piece = await this.blockPiece(b);
      if (piece) pieces.push(piece);
    }
    await this.fetch(pieces);
  }

  /** Block `block`'s stored bytes as a piece, or null (settling it) when it stores none. */
  private async blockPiece(block: number): Promise<Piece | null> {
    const range = await this.file.storedRange(block);
    if (!range) {
      this.marks!.settle(this.record.tablePages + block);
      return null;
    }
    return { slot: this.record.tablePages + block, offset: range.offset, length: range.length, table: false, id: block };
  }

  /**
   * Makes `pieces` present: those another fetch of this process is bringing are waited for, the
   * rest fetched in groups of neighbours. Throws the first piece's failure, after all settled.
   */
  private async fetch(pieces: Piece[], background = false): Promise<void> {
    const waits: Promise<void>[] = [];
    const todo: Piece[] = [];
    for (const piece of pieces) {
      const pending = this.inflight.get(piece.slot);
      if (pending) waits.push(pending);
      else todo.push(piece);
    }
    for (const group of groupPieces(todo)) {
      const done = this.fetchGroup(group, background);
      for (const piece of group) {
        const one: Promise<void> = done.then((failed) => {
          if (this.inflight.get(piece.slot) === one) this.inflight.delete(piece.slot);
          const err = failed.get(piece.slot);
          if (err) throw err;
        });
        one.catch(() => undefined);
        this.inflight.set(piece.slot, one);
        waits.push(one);
      }
    }
    const settled = await Promise.allSettled(waits);
    const failure = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failure) throw failure.reason;
  }

  /** One range request for a group of pieces; resolves (never rejects) with the pieces that failed. */
  private async fetchGroup(group: Piece[], background: boolean): Promise<Map<number, CowdiskError>> {
    const failed = new Map<number, CowdiskError>();
    const offset = group[0].offset;
    const length = Math.max(...group.map((p) => p.offset + p.length)) - offset;
    const started = performance.now();
    if (!background) this.foreground++;
    try {
      if (!this.rw) {
        throw new CowdiskError(ErrorCode.IO, `the layer cache is not writable by this user, so what it lacks cannot be fetched into it; use a cache of your own (--cache) or its owner's account`, { path: this.path });
      }
      const bytes = await this.sourceNow().read(offset, length);
      this.counters.requests++;
      this.counters.bytes += bytes.length;
      const good: Piece[] = [];
      for (const piece of group) {
        const slice = bytes.subarray(piece.offset - offset, piece.offset - offset + piece.length);
        try {
          if (piece.table) this.file.checkTable(piece.id, slice);
          else await this.file.checkStored(piece.id, slice);
        } catch (err) {
          failed.set(piece.slot, this.refused(piece, err));
          continue;
        }
        await this.rw!.write(slice, piece.offset);
        good.push(piece);
      }
      if (good.length > 0) {
        this.marks!.hold(good.map((p) => p.slot));
        this.counters.pieces += good.length;
        this.markWhenDurable(good.map((p) => p.slot));
      }
      this.published(offset, length, group.length, started);
    } catch (err) {
      for (const piece of group) if (!failed.has(piece.slot)) failed.set(piece.slot, this.unreachable(piece, err));
      this.published(offset, length, group.length, started, err);
    } finally {
      if (!background && --this.foreground === 0) this.idleWaiters.splice(0).forEach((wake) => wake());
    }
    return failed;
  }

  /** Marks `slots` present once a sync that began after their writes completes: data before mark. */
  private markWhenDurable(slots: number[]): void {
    const marks = this.marks!;
    const done: Promise<void> = this.sync!.sync()
      .then(() => marks.mark(slots))
      .catch((err: unknown) => log('%s: marking %d pieces failed (they will be fetched again): %s', this.path, slots.length, (err as Error).message))
      .finally(() => this.marking.delete(done));
    this.marking.add(done);
  }

  /** Waits until every mark this process owes is written. */
  private async marked(): Promise<void> {
    while (this.marking.size > 0) await Promise.all([...this.marking]);
  }

  private published(offset: number, length: number, pieces: number, started: number, error?: unknown): void {
    const ms = performance.now() - started;
    log('%s: %d bytes at %d (%d pieces) from %s in %d ms%s', this.record.layerDigest, length, offset, pieces, this.source, Math.round(ms), error ? `: ${(error as Error).message}` : '');
    if (fetchChannel.hasSubscribers) fetchChannel.publish({ layer: this.record.layerDigest, source: this.source, offset, length, pieces, ms, error });
  }

  private sourceNow(): RangeSource {
    this.src ??= rangeSourceFor(this.record.origin, this.record.blob, this.path);
    return this.src;
  }

  private describe(piece: Piece): string {
    return piece.table ? `block table page ${piece.id}` : `block ${piece.id}`;
  }

  /** The error for a piece whose bytes failed their check: logged, counted, published. */
  private refused(piece: Piece, cause: unknown): CowdiskError {
    this.counters.refused++;
    const block = piece.table ? (cause as CowdiskError)?.block : piece.id;
    const err = new CowdiskError(
      ErrorCode.CORRUPT,
      `${this.path}: ${this.describe(piece)} of layer ${this.record.layerDigest}, as fetched from ${this.source}, fails its check; it was not used and not cached. The registry's copy, or something on the way, damages it; the next read fetches it again.`,
      { path: this.path, block, cause },
    );
    log('%s: refused %s from %s: %s', this.record.layerDigest, this.describe(piece), this.source, (cause as Error)?.message);
    if (refusedChannel.hasSubscribers) refusedChannel.publish({ layer: this.record.layerDigest, source: this.source, piece: this.describe(piece), block, error: err });
    return err;
  }

  /**
   * The error for a piece that could not be fetched (or written): the source's own code kept
   * where it says more. Every one of them is EIO to an NBD client (src/nbd/errno.ts); a code that
   * maps otherwise there (UNSUPPORTED is EINVAL, OUT_OF_RANGE too) becomes REGISTRY.
   */
  private unreachable(piece: Piece, cause: unknown): CowdiskError {
    const kept = new Set<string>([ErrorCode.REGISTRY, ErrorCode.AUTH, ErrorCode.TLS, ErrorCode.NOT_FOUND, ErrorCode.IO]);
    const code = cause instanceof CowdiskError && kept.has(cause.code) ? cause.code : ErrorCode.REGISTRY;
    return new CowdiskError(code, `${this.path}: cannot fetch ${this.describe(piece)} of layer ${this.record.layerDigest} from ${this.source}: ${(cause as Error)?.message ?? String(cause)}`, {
      path: this.path,
      block: piece.table ? undefined : piece.id,
      cause,
    });
  }

  /** What the fill (remote-fill.ts) works with: this layer's pieces and fetch, nothing else. */
  private fillTarget(): FillTarget {
    return {
      whole: () => this.whole,
      blocks: this.file.blocks,
      tables: () => this.file.tableRanges(0, this.file.blocks).map((r) => ({ slot: r.index, offset: r.offset, length: r.length, table: true, id: r.index })),
      blockPiece: (block) => this.blockPiece(block),
      marks: () => this.marks!,
      base: this.record.tablePages,
      fetch: (pieces, background) => this.fetch(pieces, background),
      idle: () => (this.foreground === 0 ? Promise.resolve() : new Promise<void>((wake) => this.idleWaiters.push(wake))),
      bytes: () => this.counters.bytes,
      finish: () => this.finishWhole(),
    };
  }

  /**
   * Once every piece is present: the present map goes (its marks all say 1, and every byte they
   * vouch for was synced before them), and the copy becomes read-only like any sealed layer.
   */
  private async finishWhole(): Promise<void> {
    // A fetch still in flight (of a piece another process marked meanwhile) writes to the copy.
    await Promise.allSettled([...this.inflight.values()]);
    await this.marked();
    if (!this.marks || !this.rw || this.marks.marked !== this.storedPieces) return;
    await this.rw.sync();
    await this.marks.close();
    await this.rw!.close();
    this.marks = null;
    this.rw = null;
    await this.fs.unlink(presentPath(this.path)).catch((err: unknown) => {
      if (!(err instanceof CowdiskError && err.code === ErrorCode.NOT_FOUND)) throw err;
    });
    await this.fs.chmod(this.path, WHOLE_MODE);
    await this.fs.syncDir(path.dirname(this.path));
  }

  async completeBlob(): Promise<void> {
    if (!this.whole) throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `${this.path}: the copy is not whole yet; fill it first.`, { path: this.path });
    await completeBlob({ fs: this.fs, file: this.file, record: this.record, source: () => this.sourceNow(), counters: this.counters });
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.inflight.values()]);
    await this.marked();
    if (this.whole) await this.finishWhole().catch((err: unknown) => log('%s: finishing the whole copy failed: %s', this.path, (err as Error).message));
    await Promise.all([this.marks?.close(), this.rw?.close(), this.src?.close(), this.inner.close()]);
  }
}
