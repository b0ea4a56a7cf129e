/**
 * The pool of large read buffers (src/nbd/buffer-pool.ts): reuse of what was given back, nothing
 * kept for small sizes, and a bound on what it keeps.
 */
import { expect, test } from 'vitest';
import { BufferPool, MAX_KEPT } from '../../src/nbd/buffer-pool.js';

const MiB = 1024 * 1024;

test('a large buffer given back is the one the next take of that length gets', () => {
  const pool = new BufferPool();
  const a = pool.take(MiB);
  expect(a.length).toBe(MiB);
  pool.give(a);
  expect(pool.take(MiB)).toBe(a);
  expect(pool.take(MiB)).not.toBe(a); // taken already: a new one
  pool.give(a);
  expect(pool.take(2 * MiB)).not.toBe(a); // another length
});

test('small buffers are never kept: they are carved, one after the other, out of a shared arena', () => {
  const pool = new BufferPool();
  const small = pool.take(4096);
  small.fill(1);
  pool.give(small);
  const next = pool.take(4096);
  expect(next).not.toBe(small);
  expect(next.buffer).toBe(small.buffer);
  expect(next.byteOffset).toBe(small.byteOffset + 4096);
  // Carving never hands out bytes another buffer holds.
  next.fill(2);
  expect(small.every((b) => b === 1)).toBe(true);
  // Odd lengths keep the next slice 8-byte aligned.
  const odd = pool.take(13);
  expect(pool.take(8).byteOffset).toBe(odd.byteOffset + 16);
});

test('a full arena is replaced, never rewritten', () => {
  const pool = new BufferPool();
  const first = pool.take(100 * 1024);
  const second = pool.take(100 * 1024);
  const third = pool.take(100 * 1024); // 300 KiB do not fit one arena
  expect(second.buffer).toBe(first.buffer);
  expect(third.buffer).not.toBe(first.buffer);
});

test('keeps at most MAX_KEPT bytes (16 MiB), whatever is given back', () => {
  expect(MAX_KEPT).toBe(16 * MiB);
  const pool = new BufferPool();
  const count = MAX_KEPT / MiB + 2;
  const given = Array.from({ length: count }, () => pool.take(MiB));
  for (const b of given) pool.give(b);
  const back = new Set(Array.from({ length: count }, () => pool.take(MiB)));
  expect(given.filter((b) => back.has(b))).toHaveLength(MAX_KEPT / MiB);
});

test('takeNow retires a full arena to its caller, and an arena recycled serves again', () => {
  const pool = new BufferPool();
  const retired: Buffer[] = [];
  const retire = (arena: Buffer): void => {
    retired.push(arena);
  };
  const first = pool.takeNow(4096, retire);
  for (let i = 1; i < 64; i++) pool.takeNow(4096, retire); // 64 x 4 KiB fill a 256 KiB arena
  expect(retired).toHaveLength(0);
  const next = pool.takeNow(4096, retire);
  expect(retired).toHaveLength(1);
  expect(retired[0].buffer).toBe(first.buffer);
  expect(next.buffer).not.toBe(first.buffer);
  // Not recycled: the next arena is a new one. Recycled: it is the retired one.
  pool.recycle(retired[0]);
  for (let i = 1; i < 64; i++) pool.takeNow(4096, retire);
  const again = pool.takeNow(4096, retire);
  expect(retired).toHaveLength(2);
  expect(again.buffer).toBe(first.buffer);
});
