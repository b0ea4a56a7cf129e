import { ioError } from '../index.js';
/**
 * What commands print on stdout: JSON for scripts (`--json`), aligned text for people. Both go to
 * stdout; messages about the work (progress, warnings) go to stderr, so `cowdisk map --json x |
 * jq` never sees them.
 *
 * JSON is printed as the library returns it, numbers as numbers (exact up to 2^53 bytes), so a
 * script gets the same field names as the TypeScript types in src/ops/info.ts.
 */

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function printLines(lines: readonly string[]): void {
  if (lines.length > 0) process.stdout.write(`${lines.join('\n')}\n`);
}

/**
 * stdout for output that streams (a large `map`): each write waits while the pipe is full, so
 * memory stays bounded, and a reader that goes away early (`| head`) ends the output quietly, as
 * it does for any Unix tool, instead of crashing on EPIPE. `ended` tells the producer to stop.
 */
export class StreamedOutput {
  ended = false;
  private failure: Error | undefined;

  constructor(private readonly out: NodeJS.WriteStream = process.stdout) {
    out.on('error', (err: NodeJS.ErrnoException) => {
      this.ended = true;
      if (err.code !== 'EPIPE') this.failure = err;
    });
  }

  write(text: string): Promise<void> {
    if (this.ended || this.out.write(text)) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.out.off('drain', done).off('close', done);
        resolve();
      };
      this.out.on('drain', done).on('close', done);
    });
  }

  /** Throws what went wrong with stdout, other than the reader leaving. */
  finish(): void {
    if (this.failure) throw ioError(this.failure, 'stdout', 'writing the output');
  }
}

/** "1 block", "2 blocks": a count with its noun. */
export function count(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

/**
 * Aligns rows (the first is the heading) into columns two spaces apart. Columns listed in
 * `right` are right-aligned (numbers); the last column is never padded.
 */
export function formatTable(rows: readonly (readonly string[])[], right: readonly number[] = []): string[] {
  if (rows.length === 0) return [];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) =>
    r.map((cell, i) => (right.includes(i) ? cell.padStart(widths[i]) : i === r.length - 1 ? cell : cell.padEnd(widths[i]))).join('  '),
  );
}
