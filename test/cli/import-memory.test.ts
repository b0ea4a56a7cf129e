/**
 * Import streams: its memory must not grow with the size of the raw file. The writer holds a few
 * 1 MiB batches being sealed, one table page and the directory (table pages wait in a side file,
 * not in memory), whatever the disk's size. (lz4-napi's compressSync leaks its output on every
 * call whose output is large, in every release up to 2.10.0, which once made a 1 GiB import peak
 * at 600 MiB; neither frame codec calls it.) This test holds the line at a size the suite can
 * afford; bench/import.mjs reports the peak for 1 GiB (about 105 MiB here).
 */
import { closeSync, existsSync, openSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { run } from '../helpers/nbd-tools.js';
import { REPO } from '../helpers/cli.js';
import { MiB, scratchDir } from './fixtures.js';

const { at } = scratchDir();
const TIME = '/usr/bin/time';

describe('cowdisk import memory', () => {
  it('stays bounded while importing 160 MiB of incompressible data', async () => {
    if (!existsSync(TIME)) throw new Error(`${TIME} is missing: install the Debian package time`);
    const fd = openSync(at('random.raw'), 'w');
    for (let i = 0; i < 40; i++) writeSync(fd, randomBytes(4 * MiB));
    closeSync(fd);
    const result = await run(TIME, ['-f', 'peak-rss-kib=%M', process.execPath, `${REPO}bin/cowdisk`, 'import', at('random.raw'), at('random.snap')]);
    const peak = Number(/peak-rss-kib=(\d+)/.exec(result.stderr)?.[1]) * 1024;
    // Node itself takes 50-90 MiB; the file is 160 MiB. A leak of every block shows as 350+.
    expect(peak).toBeLessThan(192 * MiB);
  });
});
