/**
 * Large buffers kept for reuse, so a server answering 1 MiB reads does not allocate 1 MiB of
 * fresh memory per request.
 *
 * Why: a new large Buffer is new memory, and new memory costs the kernel a page fault and a
 * zeroed page per 4 KiB on first touch (on a virtual machine whose free memory the host takes
 * back, a host fault too). Measured here, reading 1 MiB from the page cache into a fresh buffer
 * each time took twice the CPU of reading into a reused one (0.33 against 0.17 ms per MiB).
 * Small buffers need none of this: Node already carves them out of a shared slab.
 *
 * Only buffers of at least MIN_POOLED bytes are kept, by exact length (clients read in a few
 * sizes), and no more than MAX_KEPT bytes in all, so a pool stays bounded whatever clients do.
 * MAX_KEPT is not the queue depth times the read size: a reply's buffer comes back only once the
 * socket has taken it, so at QD4 with 1 MiB reads six to eight buffers are out at once. With 4 MiB
 * kept, every 1 MiB read missed now and then and paid for fresh pages (8% of the server's time in
 * the kernel's clear_page under perf); with 16 MiB none did.
 */
const MIN_POOLED = 128 * 1024;
export const MAX_KEPT = 16 * 1024 * 1024;

export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private kept = 0;

  /** A buffer of `length` bytes with undefined contents: a kept one if there is one. */
  take(length: number): Buffer {
    if (length >= MIN_POOLED) {
      const buf = this.free.get(length)?.pop();
      if (buf) {
        this.kept -= length;
        return buf;
      }
    }
    return Buffer.allocUnsafe(length);
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
