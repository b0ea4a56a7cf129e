/**
 * Framing: turns the byte stream a socket delivers (chunks of any size, cut anywhere) into whole
 * frames, and keeps a partial tail until the rest arrives. It knows nothing of what a frame means;
 * the handshake and transmission parsers ask it "are n bytes here?" and read the fields in place.
 *
 * Why in place: a transmission request is 28 bytes and a 64 KiB chunk can hold two thousand of them.
 * When a frame lies inside one chunk (nearly always), `contiguous(n)` points `view`/`at` at the
 * chunk itself, so the parser reads the fields with `readUInt32BE(at + k)` and nothing is copied or
 * allocated. Only a frame cut across two chunks is gathered into a small scratch buffer. A WRITE
 * payload that lies in one chunk is handed out as a `subarray` of it, also without a copy: the
 * memory behind a chunk is never written again while a view of it may be in use (see below).
 *
 * A large payload is not gathered from chunks at all: once its header is parsed, `expect(buf)`
 * makes the next bytes of the stream land in `buf` (a pooled buffer the transmission phase owns),
 * what has already arrived copied in, the rest as it comes. When the connection reads the socket
 * into memory of ours (own-reads.ts), `readBuffer()` hands the kernel the unfilled part of that
 * buffer itself, so a 1 MiB WRITE is received straight where it is written from: no chunk, no
 * copy, no fresh memory. Otherwise (TLS, or a Node without that hook) each pushed chunk is copied
 * into it.
 *
 * Reading into our own memory: `readBuffer()` gives the socket a 64 KiB chunk, `received(n)`
 * takes what arrived in it. When everything received has been consumed and no view of the chunk
 * was handed out, the next read lands in the same chunk; otherwise (a partial frame is waiting, or
 * a small WRITE payload is a view of it) in a new one, as each of Node's own reads does. Why: Node
 * allocates a fresh 64 KiB buffer per read, and V8 answers that much external memory with a full
 * garbage collection per 64 MiB received (about thirty a second at 2 GB/s of writes;
 * docs/PERFORMANCE.md). Why 64 KiB: malloc serves a chunk that size from memory it has used
 * before; 256 KiB chunks were new pages each (mmap), and 4 KiB writes at QD16, whose payloads are
 * views that keep a chunk from serving again, ran 25% slower for it. Why a whole chunk each time:
 * offered only the tail of one, a client's last bytes took one more read, and the replies sent in
 * between could meet a client already gone (EPIPE) before those bytes were read.
 *
 * What this module never does is allocate what a length field claims: callers check every length
 * against their own limit before asking for the bytes, and `skip` discards bytes without keeping
 * them. So the memory a connection holds is bounded by the largest frame it accepts plus a chunk.
 */

const EMPTY: Buffer = Buffer.alloc(0);

/** The chunk each socket read lands in, when the connection reads into our own memory. */
const OWN_CHUNK = 64 * 1024;

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

  /** Where the next bytes of the stream go instead of the chunks (`expect`), and how much is in. */
  private sink: Buffer | undefined;
  private sinkFilled = 0;

  /** The chunk the last socket read landed in (own reads). */
  private own: Buffer = EMPTY;
  /** A view into a chunk was handed out by `take` since `own` was allocated: `own` must not be written again. */
  private lent = false;
  /** What `readBuffer` handed out last: the sink's free part (true) or `own`'s (false). */
  private handedSink = false;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (this.sink !== undefined) {
      const k = Math.min(chunk.length, this.sink.length - this.sinkFilled);
      chunk.copy(this.sink, this.sinkFilled, 0, k);
      this.sinkFilled += k;
      if (k === chunk.length) return;
      chunk = chunk.subarray(k);
    }
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /**
   * The next `buf.length` bytes of the stream are to land in `buf`: those already here are copied
   * in (and consumed) now, the rest as they arrive. `filled()` hands `buf` back once it is full.
   * Nothing else is taken from the stream meanwhile (there is nothing else before those bytes).
   */
  expect(buf: Buffer): void {
    const k = Math.min(buf.length, this.length);
    if (k > 0) {
      this.gather(buf, k);
      this.consume(k);
    }
    this.sink = buf;
    this.sinkFilled = k;
  }

  /** The buffer given to `expect`, once every byte of it has arrived; else undefined. */
  filled(): Buffer | undefined {
    const sink = this.sink;
    if (sink === undefined || this.sinkFilled < sink.length) return undefined;
    this.sink = undefined;
    return sink;
  }

  /**
   * Memory for the socket's next read (reading into our own memory, own-reads.ts): the free part
   * of the expected buffer while one is filling, else a chunk. `received(n)` must
   * follow with what arrived in it, before this is called again.
   */
  readBuffer(): Buffer {
    // (A full sink waits for `filled()`; bytes after it go to a chunk.)
    if (this.sink !== undefined && this.sinkFilled < this.sink.length) {
      this.handedSink = true;
      return this.sink.subarray(this.sinkFilled);
    }
    this.handedSink = false;
    // The last chunk serves again when everything received is consumed and nothing of it is in use.
    if (this.length > 0 || this.lent || this.own.length === 0) {
      this.own = Buffer.allocUnsafeSlow(OWN_CHUNK);
      this.lent = false;
    }
    return this.own;
  }

  /** `n` bytes arrived in the memory `readBuffer` returned last. */
  received(n: number): void {
    if (this.handedSink) {
      // The sink may have been dropped since (clear): then the bytes are dropped with it.
      if (this.sink !== undefined) this.sinkFilled += n;
      return;
    }
    this.push(this.own.subarray(0, n));
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
      this.lent = true;
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
    this.sink = undefined;
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
