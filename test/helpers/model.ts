/**
 * Models the engine's tests compare against.
 *
 * `DiskModel` is the trivially correct model of any disk, however many layers it has: a flat byte
 * array. Writes copy bytes in, zero and trim fill zeros, reads copy bytes out.
 *
 * `CrashModel` is what a disk with a volatile write cache may show after a power cut, per byte:
 * - `stable` holds each byte's value as of the last completed flush (or FUA request for its range);
 * - `since` lists every value written to a range since then, in the order issued, including
 *   writes that were in flight when the power went (issued but never answered: they may or may not
 *   have landed, even in part).
 * A byte read after the crash is acceptable when it equals its stable value or the value of any
 * `since` entry covering it. That is exactly DESIGN.md's contract ("the old or the new contents",
 * "everything flushed is there") at byte granularity, which torn sector writes need: a block may
 * come back with some sectors old and some new. Zeros are only acceptable where a zero, trim or
 * write of zeros covered the byte since the last flush, or where the byte was zero when flushed,
 * so "zeros where the parent had data" is caught too.
 *
 * A request that failed (an I/O error, not a crash) may have happened in part, and a later flush
 * may make that part durable: its bytes stay candidates (`uncertain`) across flushes until a
 * request answered after it has covered them and been flushed (or was FUA).
 */

export class DiskModel {
  readonly bytes: Buffer;

  constructor(initial: Buffer) {
    this.bytes = Buffer.from(initial);
  }

  get size(): number {
    return this.bytes.length;
  }

  write(data: Buffer, offset: number): void {
    data.copy(this.bytes, offset);
  }

  zero(offset: number, length: number): void {
    this.bytes.fill(0, offset, offset + length);
  }

  read(offset: number, length: number): Buffer {
    return this.bytes.subarray(offset, offset + length);
  }
}

interface Candidate {
  offset: number;
  data: Buffer;
}

/** A failed request's bytes, and how many of `answeredRanges` came before it (those cannot settle it). */
interface Uncertain extends Candidate {
  after: number;
}

/** The pieces of `c` outside [offset, offset + length). */
function cutOne<T extends Candidate>(c: T, offset: number, length: number): T[] {
  const end = offset + length;
  const cEnd = c.offset + c.data.length;
  if (cEnd <= offset || c.offset >= end) return [c];
  const pieces: T[] = [];
  if (c.offset < offset) pieces.push({ ...c, data: c.data.subarray(0, offset - c.offset) });
  if (cEnd > end) pieces.push({ ...c, offset: end, data: c.data.subarray(end - c.offset) });
  return pieces;
}

function cut<T extends Candidate>(list: T[], offset: number, length: number): T[] {
  return list.flatMap((c) => cutOne(c, offset, length));
}

export class CrashModel {
  readonly current: DiskModel;
  private stable: Buffer;
  private since: Candidate[] = [];
  private uncertain: Uncertain[] = [];
  /** Ranges answered since the last flush: once flushed, they settle uncertain bytes. */
  private answeredRanges: Array<[number, number]> = [];

  constructor(initial: Buffer) {
    this.current = new DiskModel(initial);
    this.stable = Buffer.from(initial);
  }

  /** A write-like request is about to be issued: from now on its bytes may be on disk. */
  issue(offset: number, data: Buffer): void {
    this.since.push({ offset, data: Buffer.from(data) });
  }

  /** The request issued last was answered: reads now see it. */
  answered(offset: number, data: Buffer): void {
    this.current.write(data, offset);
    this.answeredRanges.push([offset, data.length]);
  }

  /** A FUA request was answered: its own range is durable with its value. */
  answeredFua(offset: number, data: Buffer): void {
    this.current.write(data, offset);
    data.copy(this.stable, offset);
    this.since = cut(this.since, offset, data.length);
    this.uncertain = cut(this.uncertain, offset, data.length);
  }

  /** The request issued last failed: it may have happened in part, now or after any flush. */
  failed(offset: number, data: Buffer): void {
    this.uncertain.push({ offset, data: Buffer.from(data), after: this.answeredRanges.length });
  }

  /**
   * The device was given up without a successful flush (its close failed): what was answered
   * since the last flush may or may not be there from now on, and reads may show either.
   */
  abandoned(): void {
    // Nothing answered since the flush is known to be there, so it settles nothing either.
    this.uncertain = [...this.uncertain, ...this.since].map((c) => ({ ...c, after: 0 }));
    this.since = [];
    this.answeredRanges = [];
    this.stable.copy(this.current.bytes);
  }

  /** Answered ranges are durable now: they settle the failed requests issued before them. */
  private settle(): void {
    this.uncertain = this.uncertain.flatMap((u) => {
      let pieces = [u];
      for (const [offset, length] of this.answeredRanges.slice(u.after)) pieces = cut(pieces, offset, length);
      return pieces.map((p) => ({ ...p, after: 0 }));
    });
    this.answeredRanges = [];
  }

  /** A flush (or a clean close) was answered: everything answered before it is durable. */
  flushed(): void {
    this.stable = Buffer.from(this.current.bytes);
    this.since = [];
    this.settle();
  }

  /** The first byte of `actual` (the whole disk) no crash could have produced, described; else undefined. */
  violation(actual: Buffer): string | undefined {
    const { stable } = this;
    if (actual.length !== stable.length) return `the disk reads ${actual.length} bytes, not ${stable.length}`;
    for (let i = 0; i < actual.length; i++) {
      if (actual[i] === stable[i]) continue;
      let ok = false;
      for (const c of [...this.since, ...this.uncertain]) {
        const at = i - c.offset;
        if (at >= 0 && at < c.data.length && c.data[at] === actual[i]) {
          ok = true;
          break;
        }
      }
      if (!ok) {
        const options = [...this.since, ...this.uncertain].filter((c) => i >= c.offset && i < c.offset + c.data.length).map((c) => c.data[i - c.offset]);
        return `byte ${i} reads ${actual[i]}; flushed value ${stable[i]}, values written since: [${options.join(', ')}]`;
      }
    }
    return undefined;
  }
}
