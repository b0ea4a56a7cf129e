/**
 * A progress bar for long work (import, export, check), on stderr so that stdout stays the
 * command's result.
 *
 * It is drawn only when stderr is a terminal: a pipe, a log file or a test reads clean output.
 * And only once the work has run for a second, so quick commands never flash a bar. It redraws at
 * most ten times a second (the library reports per 4 MiB chunk, far more often at memory speed),
 * overwrites itself with a carriage return, and is erased when the work ends, successful or not.
 */
import { formatSize } from './size.js';

/** The part of a tty.WriteStream the bar uses (a test passes its own). */
export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(text: string): unknown;
}

export interface ProgressOptions {
  stream?: ProgressStream;
  /** The clock, in milliseconds. */
  now?: () => number;
  /** How `done` and `total` read: bytes (default) or a plain count of things. */
  unit?: 'bytes' | 'count';
}

/** Work shorter than this shows no bar at all. */
export const PROGRESS_DELAY_MS = 1000;
const REDRAW_MS = 100;
const ERASE = '\r\x1b[K';
/** Room kept for the tail ("  42%  430 MiB / 1 GiB  297.91 MiB/s" and most longer ones). */
const TAIL_ROOM = 40;

export class ProgressBar {
  private readonly stream: ProgressStream;
  private readonly now: () => number;
  private readonly unit: 'bytes' | 'count';
  private readonly started: number;
  private lastDraw = 0;
  private drawn = false;

  constructor(
    private readonly label: string,
    options: ProgressOptions = {},
  ) {
    this.stream = options.stream ?? process.stderr;
    this.now = options.now ?? Date.now;
    this.unit = options.unit ?? 'bytes';
    this.started = this.now();
  }

  /** Reports progress; usable as the library's `onProgress` callback as it is. */
  readonly update = (done: number, total: number): void => {
    if (!this.stream.isTTY) return;
    const t = this.now();
    if (t - this.started < PROGRESS_DELAY_MS) return;
    if (this.drawn && t - this.lastDraw < REDRAW_MS && done < total) return;
    this.lastDraw = t;
    this.drawn = true;
    this.stream.write(`\r${this.render(done, total, t)}\x1b[K`);
  };

  /** Erases the bar, if one was drawn. */
  finish(): void {
    if (this.drawn) this.stream.write(ERASE);
    this.drawn = false;
  }

  private render(done: number, total: number, t: number): string {
    const fraction = total > 0 ? Math.min(1, done / total) : 1;
    const amount = (n: number) => (this.unit === 'bytes' ? formatSize(n) : String(n));
    const seconds = (t - this.started) / 1000;
    const rate = this.unit === 'bytes' && seconds > 0 ? `  ${formatSize(Math.round(done / seconds))}/s` : '';
    const tail = ` ${String(Math.floor(fraction * 100)).padStart(3)}%  ${amount(done)} / ${amount(total)}${rate}`;
    // Stay within one line, the last column left free: a wrapped bar cannot overwrite itself.
    // The bar shrinks first (down to nothing), then the label loses its start.
    // A pseudo-terminal with no size set reports 0 columns: treat it as unknown.
    const columns = (this.stream.columns || 80) - 1;
    // The bar's width does not follow the tail's, which changes as digits come and go.
    const width = Math.min(40, columns - this.label.length - Math.max(tail.length, TAIL_ROOM) - 3);
    if (width < 10) return `${clipStart(this.label, columns - tail.length)}${tail}`;
    const filled = Math.round(fraction * width);
    return `${this.label} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}]${tail}`;
  }
}

/** The end of `text` in at most `max` characters, an ellipsis marking what was cut. */
function clipStart(text: string, max: number): string {
  if (text.length <= max) return text;
  return max <= 1 ? '' : `…${text.slice(text.length - max + 1)}`;
}

/** Runs `work` with a bar labelled `label`, erasing the bar however the work ends. */
export async function withProgress<T>(label: string, work: (onProgress: (done: number, total: number) => void) => Promise<T>, options?: ProgressOptions): Promise<T> {
  const bar = new ProgressBar(label, options);
  try {
    return await work(bar.update);
  } finally {
    bar.finish();
  }
}
