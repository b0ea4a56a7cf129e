/**
 * ReceiveBuffer, the framing under both protocol phases: frames come out whole wherever the socket
 * cut the stream, and nothing is kept beyond what was pushed.
 */
import { describe, expect, test } from 'vitest';
import { ReceiveBuffer } from '../../src/nbd/framing.js';
import { Random } from '../helpers/engine-chain.js';

/** Frames of [u32 length][length bytes], as a stream. */
function stream(lengths: number[]): { bytes: Buffer; frames: Buffer[] } {
  const frames = lengths.map((n, i) => Buffer.alloc(n, i + 1));
  const bytes = Buffer.concat(frames.flatMap((f) => [Buffer.from([0, 0, f.length >> 8, f.length & 0xff]), f]));
  return { bytes, frames };
}

function same(a: Buffer[], b: Buffer[]): boolean {
  return a.length === b.length && a.every((f, i) => f.equals(b[i]));
}

/** Reads every whole frame out of rx, the way the parsers do. */
function drain(rx: ReceiveBuffer, out: Buffer[]): void {
  while (rx.contiguous(4)) {
    const n = rx.view.readUInt32BE(rx.at);
    if (rx.length < 4 + n) return;
    rx.consume(4);
    out.push(Buffer.from(rx.take(n)));
  }
}

describe('ReceiveBuffer', () => {
  const { bytes, frames } = stream([3, 0, 300, 1, 17, 1000]);

  test('frames come out whole and in order wherever the stream is cut in two', () => {
    for (let cut = 0; cut <= bytes.length; cut++) {
      const rx = new ReceiveBuffer();
      const out: Buffer[] = [];
      rx.push(bytes.subarray(0, cut));
      drain(rx, out);
      rx.push(bytes.subarray(cut));
      drain(rx, out);
      if (!same(out, frames)) expect({ cut, out }).toEqual({ cut, out: frames });
      expect(rx.length).toBe(0);
    }
  });

  test('frames come out whole when every byte arrives alone', () => {
    const rx = new ReceiveBuffer();
    const out: Buffer[] = [];
    for (let i = 0; i < bytes.length; i++) {
      rx.push(bytes.subarray(i, i + 1));
      drain(rx, out);
    }
    expect(same(out, frames)).toBe(true);
  });

  test('a frame inside one chunk is read in place, without a copy', () => {
    const rx = new ReceiveBuffer();
    rx.push(bytes);
    expect(rx.contiguous(4)).toBe(true);
    expect(rx.view.buffer).toBe(bytes.buffer);
    rx.consume(4);
    expect(rx.take(3).buffer).toBe(bytes.buffer);
  });

  test('skip discards across chunks and reports how much it dropped', () => {
    const rx = new ReceiveBuffer();
    rx.push(Buffer.alloc(10));
    rx.push(Buffer.alloc(10, 1));
    expect(rx.skip(15)).toBe(15);
    expect(rx.skip(15)).toBe(5);
    expect(rx.length).toBe(0);
    rx.push(Buffer.from([9]));
    expect(rx.take(1)).toEqual(Buffer.from([9]));
  });

  test('contiguous asks for no more than is there', () => {
    const rx = new ReceiveBuffer();
    rx.push(Buffer.alloc(3));
    expect(rx.contiguous(4)).toBe(false);
    expect(rx.length).toBe(3);
  });

  test('an expected payload is filled from what is here and from chunks pushed later, the rest stays a frame', () => {
    const payload = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 13) & 0xff));
    const stream = Buffer.concat([payload, Buffer.from([0, 0, 0, 2, 7, 8])]);
    for (let cut = 0; cut <= stream.length; cut++) {
      const rx = new ReceiveBuffer();
      rx.push(stream.subarray(0, cut));
      const into = Buffer.alloc(payload.length);
      rx.expect(into);
      const early = rx.filled();
      expect(early !== undefined).toBe(cut >= payload.length);
      rx.push(stream.subarray(cut));
      expect(early ?? rx.filled()).toBe(into);
      expect(into.equals(payload)).toBe(true);
      const out: Buffer[] = [];
      drain(rx, out);
      expect(out).toEqual([Buffer.from([7, 8])]);
      expect(rx.length).toBe(0);
    }
  });

  test('a read after an expected buffer filled up lands in a chunk, and its bytes stay in the stream', () => {
    const rx = new ReceiveBuffer();
    const into = Buffer.alloc(4);
    rx.expect(into);
    const first = rx.readBuffer();
    expect(first.length).toBe(4);
    Buffer.from([1, 2, 3, 4]).copy(first);
    rx.received(4);
    const next = rx.readBuffer();
    expect(next.length).toBeGreaterThan(0);
    Buffer.from([0, 0, 0, 1, 5]).copy(next);
    rx.received(5);
    expect(rx.filled()).toBe(into);
    expect(into).toEqual(Buffer.from([1, 2, 3, 4]));
    const out: Buffer[] = [];
    drain(rx, out);
    expect(out).toEqual([Buffer.from([5])]);
  });

  /**
   * Reading into own memory, the way own-reads.ts drives it: each read fills at most what
   * readBuffer() offered. Small payloads are kept as the views take() returns (as a WRITE in
   * flight keeps its payload), large ones arrive through expect(); every byte kept must still be
   * right once the whole stream has gone through the chunks.
   */
  test('reads into own memory never overwrite a payload still in use', () => {
    const rng = new Random(7);
    const rand = (n: number): number => rng.below(n);
    const lengths = Array.from({ length: 400 }, (_, i) => (i % 9 === 0 ? 128 * 1024 + rand(300_000) : 1 + rand(5000)));
    const { bytes: all, frames: want } = streamOf(lengths);
    const rx = new ReceiveBuffer();
    const kept: Buffer[] = [];
    let pendingLarge: number | undefined;
    const parse = (): void => {
      for (;;) {
        if (pendingLarge !== undefined) {
          const got = rx.filled();
          if (!got) return;
          kept.push(got);
          pendingLarge = undefined;
        }
        if (!rx.contiguous(4)) return;
        const n = rx.view.readUInt32BE(rx.at);
        if (n >= 128 * 1024) {
          rx.consume(4);
          rx.expect(Buffer.alloc(n));
          pendingLarge = n;
          continue;
        }
        if (rx.length < 4 + n) return;
        rx.consume(4);
        kept.push(rx.take(n));
      }
    };
    let at = 0;
    while (at < all.length) {
      const into = rx.readBuffer();
      if (into.length < 1) throw new Error('readBuffer offered no room');
      const n = Math.min(into.length, all.length - at, 1 + rand(90_000));
      all.copy(into, 0, at, at + n);
      at += n;
      rx.received(n);
      parse();
    }
    expect(kept.length).toBe(want.length);
    const wrong = kept.findIndex((k, i) => !k.equals(want[i]));
    expect(wrong).toBe(-1);
  });

  test('a chunk serves the next read once what it received is consumed and not kept, else a new one does', () => {
    const rx = new ReceiveBuffer();
    const first = rx.readBuffer();
    Buffer.from([0, 0, 0, 1, 9]).copy(first);
    rx.received(5);
    expect(rx.contiguous(5)).toBe(true);
    rx.consume(5);
    const second = rx.readBuffer();
    expect(second).toBe(first);
    // A view handed out keeps its bytes: the next read lands elsewhere.
    Buffer.from([0, 0, 0, 1, 8]).copy(second);
    rx.received(5);
    rx.consume(4);
    const view = rx.take(1);
    const third = rx.readBuffer();
    expect(third.buffer).not.toBe(view.buffer);
    third.fill(0xff);
    expect(view[0]).toBe(8);
    // So does a partial frame still waiting for its rest.
    Buffer.from([0, 0, 0, 4, 1]).copy(third);
    rx.received(5);
    expect(rx.contiguous(8)).toBe(false);
    const fourth = rx.readBuffer();
    expect(fourth.buffer).not.toBe(third.buffer);
    Buffer.from([2, 3, 4]).copy(fourth);
    rx.received(3);
    expect(rx.contiguous(8)).toBe(true);
    expect(Buffer.from(rx.view.subarray(rx.at, rx.at + 8))).toEqual(Buffer.from([0, 0, 0, 4, 1, 2, 3, 4]));
  });
});

/** Frames of [u32 length][length bytes] for any lengths (stream() above takes short ones). */
function streamOf(lengths: number[]): { bytes: Buffer; frames: Buffer[] } {
  const frames = lengths.map((n, i) => Buffer.alloc(n, (i * 31 + 1) & 0xff));
  const bytes = Buffer.concat(
    frames.flatMap((f) => {
      const h = Buffer.alloc(4);
      h.writeUInt32BE(f.length);
      return [h, f];
    }),
  );
  return { bytes, frames };
}
