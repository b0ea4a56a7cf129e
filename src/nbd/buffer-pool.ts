/**
 * Large buffers kept for reuse, so a server answering 1 MiB reads does not allocate 1 MiB of
 * fresh memory per request.
 *
 * Why: a new large Buffer is new memory, and new memory costs the kernel a page fault and a
 * zeroed page per 4 KiB on first touch (on a virtual machine whose free memory the host takes
 * back, a host fault too). Measured here, reading 1 MiB from the page cache into a fresh buffer
 * each time took twice the CPU of reading into a reused one (0.33 against 0.17 ms per MiB).
 * Small buffers are carved out of a shared arena instead, as Node's own allocUnsafe does below
 * 4 KiB (a 4 KiB read is just over Node's limit, and a malloc and free of its own per request was
 * 9% of the server's time at 4 KiB QD16 under perf). An arena is never reused: a full one is
 * replaced, and the garbage collector frees it once the last reply carved from it is sent.
 *
 * Only buffers of at least MIN_POOLED bytes are kept, by exact length (clients read in a few
 * sizes), and no more than MAX_KEPT bytes in all, so a pool stays bounded whatever clients do.
 * MAX_KEPT is not the queue depth times the read size: a reply's buffer comes back only once the
 * socket has taken it, so at QD4 with 1 MiB reads six to eight buffers are out at once. With 4 MiB
 * kept, some 1 MiB reads missed and paid for fresh pages (8% of the server's time in
 * the kernel's clear_page under perf); with 16 MiB none did.
 */
const MIN_POOLED = 128 * 1024;
/** The arena small buffers are carved from: MIN_POOLED at least, so any small length fits. */
const ARENA_SIZE = 256 * 1024;
export const MAX_KEPT = 16 * 1024 * 1024;
/** Retired arenas kept for takeNow (2 MiB): more are in flight only while a client reads slowly. */
const MAX_SPARE_ARENAS = 8;

export class BufferPool {
  /** Buffers shorter than this are never kept (nothing to give back for them). */
  static readonly MIN_POOLED = MIN_POOLED;

  private readonly free = new Map<number, Buffer[]>();
  private kept = 0;

  private arena: Buffer = Buffer.allocUnsafe(0);
  private arenaUsed = 0;
  private nowArena: Buffer = Buffer.allocUnsafe(0);
  private nowUsed = 0;
  private readonly spareArenas: Buffer[] = [];

  /** A buffer of `length` bytes with undefined contents: a kept one if there is one. */
  take(length: number): Buffer {
    if (length < MIN_POOLED) return this.carve(length);
    const buf = this.free.get(length)?.pop();
    if (buf) {
      this.kept -= length;
      return buf;
    }
    return Buffer.allocUnsafe(length);
  }

  private carve(length: number): Buffer {
    if (this.arenaUsed + length > this.arena.length) {
      this.arena = Buffer.allocUnsafeSlow(ARENA_SIZE);
      this.arenaUsed = 0;
    }
    const buf = this.arena.subarray(this.arenaUsed, this.arenaUsed + length);
    // Keep slices 8-byte aligned, as Node's own pool does.
    this.arenaUsed += (length + 7) & ~7;
    return buf;
  }

  /**
   * A small buffer for a reply queued at once (Transmission's readAtOnce): carved from an arena
   * that is used again, not left to the garbage collector. When the arena is full, `retire` gets
   * it; the caller hands it back with `recycle` once everything carved from it has been sent
   * (ReplyWriter.afterSent). Only for buffers queued in the same synchronous step they are taken
   * in (or dropped): then every slice of a full arena is already queued when it is retired.
   *
   * Why: at 4 KiB QD16 a server left some 600 MiB of read buffers a second to the collector, and
   * V8 answered that external memory with a full mark-compact every ~50 ms in some runs (over 20
   * per 65,536 reads, against 2-4 in others, at 0.7-0.8x the IOPS: docs/PERFORMANCE.md).
   */
  takeNow(length: number, retire: (arena: Buffer) => void): Buffer {
    if (this.nowUsed + length > this.nowArena.length) {
      if (this.nowArena.length > 0) retire(this.nowArena);
      this.nowArena = this.spareArenas.pop() ?? Buffer.allocUnsafeSlow(ARENA_SIZE);
      this.nowUsed = 0;
    }
    const buf = this.nowArena.subarray(this.nowUsed, this.nowUsed + length);
    this.nowUsed += (length + 7) & ~7;
    return buf;
  }

  /** An arena `takeNow` retired, whose every slice has been sent: it serves again. */
  recycle(arena: Buffer): void {
    if (this.spareArenas.length < MAX_SPARE_ARENAS) this.spareArenas.push(arena);
  }

  /** Gives back a buffer from `take` that nothing refers to any more. */
  give(buf: Buffer): void {
    if (buf.length < MIN_POOLED || this.kept + buf.length > MAX_KEPT) return;
    let list = this.free.get(buf.length);
    if (!list) this.free.set(buf.length, (list = []));
    list.push(buf);
    this.kept += buf.length;
  }
}
