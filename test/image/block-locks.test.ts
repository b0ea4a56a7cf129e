/**
 * BlockLocks: per-block mutual exclusion for the copy-up path, with no lock over the whole image.
 */
import { expect, test } from 'vitest';
import { BlockLocks } from '../../src/image/block-locks.js';

/** Lets every pending promise callback run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
  await new Promise((resolve) => setImmediate(resolve));
}

test('a second holder of the same block waits until the first releases it', async () => {
  const locks = new BlockLocks();
  const release = await locks.acquire(4, 4);
  let second = false;
  const waiting = locks.acquire(4, 4).then((r) => {
    second = true;
    return r;
  });
  await settle();
  expect(second).toBe(false);
  release();
  (await waiting)();
  expect(second).toBe(true);
});

test('different blocks never wait for each other', async () => {
  const locks = new BlockLocks();
  await locks.acquire(0, 3);
  let got = false;
  void locks.acquire(4, 9).then(() => (got = true));
  await settle();
  expect(got).toBe(true);
});

test('waiters on one block are served in arrival order', async () => {
  const locks = new BlockLocks();
  const order: number[] = [];
  const first = await locks.acquire(1, 1);
  const waiters = [1, 2, 3].map((n) =>
    locks.acquire(1, 1).then((release) => {
      order.push(n);
      release();
    }),
  );
  first();
  await Promise.all(waiters);
  expect(order).toEqual([1, 2, 3]);
});

test('overlapping ranges taken concurrently all complete (ascending order: no deadlock)', async () => {
  const locks = new BlockLocks();
  const ranges: Array<[number, number]> = [
    [2, 5],
    [0, 3],
    [4, 8],
    [1, 7],
    [3, 3],
  ];
  let inside = 0;
  let overlapSeen = false;
  const held = new Set<number>();
  await Promise.all(
    ranges.map(async ([a, b]) => {
      const release = await locks.acquire(a, b);
      for (let i = a; i <= b; i++) {
        if (held.has(i)) overlapSeen = true;
        held.add(i);
      }
      inside++;
      await settle();
      for (let i = a; i <= b; i++) held.delete(i);
      release();
    }),
  );
  expect(inside).toBe(ranges.length);
  expect(overlapSeen).toBe(false);
  expect(locks.held).toBe(0);
});

test('no lock is left behind once every holder released', async () => {
  const locks = new BlockLocks();
  const a = await locks.acquire(0, 2);
  const b = locks.acquire(1, 1);
  a();
  (await b)();
  expect(locks.held).toBe(0);
});
