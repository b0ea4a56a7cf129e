/**
 * Format version 1 stays readable forever: the fixtures in test/fixtures/v1 were written by the
 * last v1-only build and must read, identify and verify exactly as they did then.
 */
import { createHash } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkImage, openImage } from '../../src/index.js';

const FIXTURES = path.join(import.meta.dirname, '../fixtures/v1');
const expected = JSON.parse(readFileSync(path.join(FIXTURES, 'exports.json'), 'utf8')) as Record<string, { export: string; identity: string; size: number }>;

// Opened from a copy: a writable open of the overlay must never touch the committed file.
const dir = mkdtempSync(path.join(tmpdir(), 'cowdisk-v1-'));
cpSync(FIXTURES, dir, { recursive: true });
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('v1 fixtures', () => {
  for (const [name, want] of Object.entries(expected)) {
    it(`${name} reads as it did when it was made`, async () => {
      const image = (await openImage(path.join(dir, name), { readOnly: true })).device;
      try {
        expect(image.size).toBe(want.size);
        expect(image.chain[0].identity).toBe(want.identity);
        const buf = Buffer.alloc(image.size);
        await image.read(buf, 0);
        expect(createHash('sha256').update(buf).digest('hex')).toBe(want.export);
      } finally {
        await image.close();
      }
    });
  }

  it('the chain verifies end to end, every stored block against its digest', async () => {
    const report = await checkImage(path.join(dir, 'top.cow'));
    expect(report.problems).toEqual([]);
    expect(report.stats.layers).toBe(3);
    expect(report.stats.blocksVerified).toBeGreaterThan(30);
  });
});
