import { describe, expect, it } from 'vitest';
import { PROGRESS_DELAY_MS, ProgressBar, withProgress } from '../../src/cli/progress.js';

/** A terminal stand-in with a clock the test moves. */
function terminal(isTTY = true, columns = 80) {
  const out: string[] = [];
  let time = 0;
  return {
    out,
    stream: { isTTY, columns, write: (text: string) => out.push(text) },
    now: () => time,
    advance: (ms: number) => (time += ms),
  };
}

describe('ProgressBar', () => {
  it('draws nothing when stderr is not a terminal', () => {
    const t = terminal(false);
    const bar = new ProgressBar('importing', t);
    t.advance(5000);
    bar.update(1, 2);
    bar.finish();
    expect(t.out).toEqual([]);
  });

  it('draws nothing for work shorter than a second', () => {
    const t = terminal();
    const bar = new ProgressBar('importing', t);
    t.advance(PROGRESS_DELAY_MS - 1);
    bar.update(50, 100);
    bar.finish();
    expect(t.out).toEqual([]);
  });

  it('draws the fraction done after a second and erases itself at the end', () => {
    const t = terminal();
    const bar = new ProgressBar('importing', t);
    t.advance(2000);
    bar.update(512 * 1024 * 1024, 1024 * 1024 * 1024);
    expect(t.out).toHaveLength(1);
    const [, done, todo] = /^\rimporting \[(#+)(-+)\]  50%  512 MiB \/ 1 GiB  256 MiB\/s\x1b\[K$/.exec(t.out[0]) ?? [];
    expect(Math.abs(done.length - todo.length)).toBeLessThanOrEqual(1);
    bar.finish();
    expect(t.out[1]).toBe('\r\x1b[K');
  });

  it('redraws at most every 100 ms, but always at 100%', () => {
    const t = terminal();
    const bar = new ProgressBar('x', { ...t, unit: 'count' });
    t.advance(1500);
    bar.update(1, 10);
    t.advance(10);
    bar.update(2, 10);
    t.advance(10);
    bar.update(10, 10);
    expect(t.out.map((s) => s.match(/\d+ \/ 10/)?.[0])).toEqual(['1 / 10', '10 / 10']);
  });

  it('stays within the terminal width, so the carriage return can overwrite it', () => {
    const t = terminal(true, 50);
    const bar = new ProgressBar('exporting /a/rather/long/path/to/vm1.cow', { ...t, unit: 'count' });
    t.advance(1500);
    bar.update(3, 7);
    const line = t.out[0].replace(/\r|\x1b\[K/g, '');
    expect(line.length).toBeLessThan(50);
    expect(line).toMatch(/^….*vm1\.cow +42%  3 \/ 7$/);
  });

  it('treats a terminal that reports 0 columns (a pty with no size) as 80 wide', () => {
    const t = terminal(true, 0);
    const bar = new ProgressBar('importing disk.raw', t);
    t.advance(1500);
    bar.update(1, 4);
    expect(t.out[0]).toMatch(/^\rimporting disk\.raw \[#+-+\]  25%/);
  });

  it('erases the bar when the work fails', async () => {
    const t = terminal();
    const failing = withProgress(
      'x',
      async (onProgress) => {
        t.advance(1500);
        onProgress(1, 2);
        throw new Error('boom');
      },
      t,
    );
    await expect(failing).rejects.toThrow('boom');
    expect(t.out.at(-1)).toBe('\r\x1b[K');
  });
});
