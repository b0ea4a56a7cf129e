/**
 * Framing: turns the byte stream a socket delivers (chunks of any size, cut anywhere) into whole
 * frames, and keeps a partial tail until the rest arrives. It knows nothing of what a frame means;
 * the handshake and transmission parsers ask it "are n bytes here?" and read the fields in place.
 *
 * Why in place: a transmission request is 28 bytes and a 64 KiB chunk can hold two thousand of them.
 * When a frame lies inside one chunk (nearly always), `contiguous(n)` points `view`/`at` at the
 * chunk itself, so the parser reads the fields with `readUInt32BE(at + k)` and nothing is copied or
 * allocated. Only a frame cut across two chunks is gathered into a small scratch buffer. A WRITE
 * payload that lies in one chunk is handed out as a `subarray` of it, also without a copy (Node
 * never reuses the memory behind a 'data' chunk, so the view stays valid while the write runs).
 *
 * What this module never does is allocate what a length field claims: callers check every length
 * against their own limit before asking for the bytes, and `skip` discards bytes without keeping
 * them. So the memory a connection holds is bounded by the largest frame it accepts plus one chunk.
 */

const EMPTY: Buffer = Buffer.alloc(0);

export class ReceiveBuffer {
  /** Unread bytes, across all chunks. */
  length = 0;
  /** Set by a successful `contiguous(n)`: the n bytes are `view[at .. at + n)`. Valid until the next call. */
  view: Buffer = EMPTY;
  at = 0;

  private chunks: Buffer[] = [];
  /** Read position inside chunks[0]. */
  private offset = 0;
  private scratch = Buffer.allocUnsafe(256);

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /**
   * Makes the next n bytes addressable as `view[at ..]` without consuming them. False when fewer
   * than n bytes have arrived. The caller bounds n (at most the largest frame it accepts).
   */
  contiguous(n: number): boolean {
    if (this.length < n) return false;
    const first = this.chunks[0];
    if (first.length - this.offset >= n) {
      this.view = first;
      this.at = this.offset;
      return true;
    }
    if (this.scratch.length < n) this.scratch = Buffer.allocUnsafe(Math.max(n, this.scratch.length * 2));
    this.gather(this.scratch, n);
    this.view = this.scratch;
    this.at = 0;
    return true;
  }

  /** Drops the next n bytes (n <= length). */
  consume(n: number): void {
    this.length -= n;
    let off = this.offset + n;
    let drop = 0;
    while (drop < this.chunks.length && off >= this.chunks[drop].length) {
      off -= this.chunks[drop].length;
      drop++;
    }
    if (drop > 0) this.chunks.splice(0, drop);
    this.offset = this.chunks.length === 0 ? 0 : off;
  }

  /**
   * Returns the next n bytes (n <= length) and consumes them: a view into the chunk when they lie
   * in one, else a new buffer of exactly n bytes.
   */
  take(n: number): Buffer {
    if (n === 0) return EMPTY;
    const first = this.chunks[0];
    let out: Buffer;
    if (first.length - this.offset >= n) {
      out = first.subarray(this.offset, this.offset + n);
    } else {
      out = Buffer.allocUnsafe(n);
      this.gather(out, n);
    }
    this.consume(n);
    return out;
  }

  /** Discards up to n bytes of what has arrived; returns how many were discarded. */
  skip(n: number): number {
    const k = Math.min(n, this.length);
    if (k > 0) this.consume(k);
    return k;
  }

  /** Lets go of everything (the connection is closing). */
  clear(): void {
    this.chunks = [];
    this.offset = 0;
    this.length = 0;
    this.view = EMPTY;
  }

  private gather(into: Buffer, n: number): void {
    let filled = 0;
    let off = this.offset;
    for (let i = 0; filled < n; i++) {
      const c = this.chunks[i];
      const k = Math.min(c.length - off, n - filled);
      c.copy(into, filled, off, off + k);
      filled += k;
      off = 0;
    }
  }
}
