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

test('small buffers are never kept (Node pools those itself)', () => {
  const pool = new BufferPool();
  const small = pool.take(4096);
  pool.give(small);
  expect(pool.take(4096)).not.toBe(small);
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
