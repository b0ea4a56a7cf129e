/**
 * The progress bar's policy (a terminal only, after a second, erased however the work ends) and
 * what it draws, through cli-progress, on a terminal stand-in whose clock the test moves.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { PROGRESS_DELAY_MS, ProgressBar, withProgress } from '../../src/cli/progress.js';

/** A terminal stand-in; `now` is the fake clock (vitest's, which cli-progress reads too). */
function terminal(isTTY = true, columns = 80) {
  vi.useFakeTimers({ now: 0 });
  const out: string[] = [];
  return { out, stream: { isTTY, columns, write: (text: string) => out.push(text) }, now: () => Date.now(), advance: (ms: number) => vi.advanceTimersByTime(ms) };
}

/** The bar lines drawn, without the terminal's control sequences. */
function lines(out: string[]): string[] {
  return out.filter((s) => !s.startsWith('\x1b'));
}

/** Whether the last thing written erases the line (cursor to column 1, clear the line). */
function erased(out: string[]): boolean {
  return out.slice(-2).join('') === '\x1b[1G\x1b[2K';
}

afterEach(() => {
  vi.useRealTimers();
});

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

  it('draws the fraction done, sizes and rate after a second, and erases itself at the end', () => {
    const t = terminal();
    const bar = new ProgressBar('importing', t);
    t.advance(2000);
    bar.update(512 * 1024 * 1024, 1024 * 1024 * 1024);
    const [line] = lines(t.out);
    const [, done, todo] = /^importing \[(#+)(-+)\] 50% {2}512 MiB \/ 1 GiB {2}256 MiB\/s$/.exec(line) ?? [];
    expect(Math.abs(done.length - todo.length)).toBeLessThanOrEqual(1);
    bar.finish();
    expect(erased(t.out)).toBe(true);
  });

  it('redraws at most ten times a second however often it is told', () => {
    const t = terminal();
    const bar = new ProgressBar('x', { ...t, unit: 'count' });
    t.advance(1500);
    for (let i = 1; i <= 100; i++) {
      bar.update(i, 100);
      t.advance(1);
    }
    // 100 updates over 100 ms: the first draw and at most a couple more, not one per update.
    expect(lines(t.out).length).toBeGreaterThanOrEqual(1);
    expect(lines(t.out).length).toBeLessThanOrEqual(3);
    bar.finish();
    expect(lines(t.out).at(-1)).toMatch(/100 \/ 100$/);
  });

  it('stays within the terminal width, so it can overwrite itself', () => {
    const t = terminal(true, 50);
    const bar = new ProgressBar('exporting /a/rather/long/path/to/vm1.cow', { ...t, unit: 'count' });
    t.advance(1500);
    bar.update(3, 7);
    const [line] = lines(t.out);
    expect(line.length).toBeLessThan(50);
    expect(line).toMatch(/^….*vm1\.cow \[#+-+\] 42% {2}3 \/ 7$/);
  });

  it('treats a terminal that reports 0 columns (a pty with no size) as 80 wide', () => {
    const t = terminal(true, 0);
    const bar = new ProgressBar('importing disk.raw', t);
    t.advance(1500);
    bar.update(1, 4);
    const [line] = lines(t.out);
    expect(line).toMatch(/^importing disk\.raw \[#+-+\] 25%/);
    expect(line.length).toBeLessThanOrEqual(80);
    bar.finish();
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
    expect(lines(t.out)).toHaveLength(1);
    expect(erased(t.out)).toBe(true);
  });
});
