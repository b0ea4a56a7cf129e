/**
 * ReceiveBuffer, the framing under both protocol phases: frames come out whole wherever the socket
 * cut the stream, and nothing is kept beyond what was pushed.
 */
import { describe, expect, test } from 'vitest';
import { ReceiveBuffer } from '../../src/nbd/framing.js';

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
});
