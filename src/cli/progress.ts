/**
 * A progress bar for long work (import, export, check), on stderr so that stdout stays the
 * command's result. Drawing is cli-progress's (throttled redraws, the line cut to the terminal's
 * width, erased when done); what is cowdisk's is when a bar appears at all:
 *
 * - only when stderr is a terminal: a pipe, a log file or a test reads clean output;
 * - only once the work has run for a second, so quick commands never flash a bar;
 * - erased when the work ends, successful or not.
 */
import cliProgress from 'cli-progress';
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
/** Redraws per second at most: the library reports per 4 MiB chunk, far more often at memory speed. */
const FPS = 10;
const MIN_BAR = 10;
const MAX_BAR = 30;

export class ProgressBar {
  private readonly stream: ProgressStream;
  private readonly now: () => number;
  private readonly unit: 'bytes' | 'count';
  private readonly started: number;
  private bar: cliProgress.SingleBar | undefined;

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
    const payload = { rate: this.rate(done) };
    if (this.bar) {
      this.bar.setTotal(total);
      this.bar.update(done, payload);
      return;
    }
    if (this.now() - this.started < PROGRESS_DELAY_MS) return;
    const bytes = this.unit === 'bytes';
    // One line, the last column left free: the bar shrinks first, then the label loses its start,
    // so the figures stay in sight. A pseudo-terminal with no size set reports 0 columns: 80.
    const columns = (this.stream.columns || 80) - 1;
    const amount = (n: number) => (bytes ? formatSize(n) : String(n));
    // The figures at their widest: done as long as the total, the rate at its longest.
    const tail = ` 100%  ${amount(total)} / ${amount(total)}${bytes ? '  1023.99 MiB/s' : ''}`.length;
    const barsize = Math.max(MIN_BAR, Math.min(MAX_BAR, columns - this.label.length - tail - 3));
    const label = clipStart(this.label, columns - barsize - tail - 3);
    this.bar = new cliProgress.SingleBar({
      stream: this.stream as NodeJS.WritableStream,
      format: `${label} [{bar}] {percentage}%  {value} / {total}${bytes ? '  {rate}' : ''}`,
      formatValue: (value, _options, type) => (type === 'value' || type === 'total' ? amount(value) : String(value)),
      barsize,
      barCompleteChar: '#',
      barIncompleteChar: '-',
      fps: FPS,
      // Cut at the terminal's width if the figures outgrow the room kept for them.
      linewrap: true,
      clearOnComplete: true,
      // cowdisk's commands handle their signals and always end the bar (withProgress).
      gracefulExit: false,
    });
    this.bar.start(total, done, payload);
  };

  /** Erases the bar, if one was drawn. */
  finish(): void {
    this.bar?.stop();
    this.bar = undefined;
  }

  private rate(done: number): string {
    const seconds = (this.now() - this.started) / 1000;
    return seconds > 0 ? `${formatSize(Math.round(done / seconds))}/s` : '';
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
