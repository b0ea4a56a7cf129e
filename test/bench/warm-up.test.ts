/**
 * The start-up warm-up of `serve` and `attach` (src/bench/warm-up.ts): it must leave nothing
 * behind, whatever it wrote, since it runs before every server. Whether it makes the first
 * requests faster is a benchmark's question (bench/compare's cold-start job), not a test's.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { warmUpRequestPath } from '../../src/bench/warm-up.js';

const dir = mkdtempSync(join(tmpdir(), 'warm-up-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('runs its traffic on a throw-away image and removes the image, the base and the socket', async () => {
  expect(await warmUpRequestPath({ dir, pollMicros: 0 })).toBe(true);
  expect(readdirSync(dir)).toEqual([]);
});

it('does not stand in the way of a server when it cannot run: false, and nothing left', async () => {
  expect(await warmUpRequestPath({ dir: join(dir, 'missing') })).toBe(false);
  expect(readdirSync(dir)).toEqual([]);
});
