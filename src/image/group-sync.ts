/**
 * Group commit for one file: callers that need "everything I wrote is durable" share fdatasyncs.
 * A caller is answered by a sync that started after it asked (one already running may have begun
 * before its write), so concurrent fetches of a remote layer that finish together pay for one or
 * two syncs between them, not one each.
 */
import type { BlockFile } from '../io/file.js';

export class GroupSync {
  private running: Promise<void> | null = null;
  private next: Promise<void> | null = null;

  constructor(
    private readonly file: BlockFile,
    /** Counts syncs and their milliseconds. */
    private readonly counters: { syncs: number; syncMs: number },
  ) {}

  /** Resolves once a sync that began after this call has completed. */
  sync(): Promise<void> {
    if (!this.running) return this.start();
    this.next ??= this.running
      .catch(() => undefined)
      .then(() => {
        this.next = null;
        return this.start();
      });
    return this.next;
  }

  private start(): Promise<void> {
    const started = performance.now();
    const running: Promise<void> = this.file.sync().finally(() => {
      this.counters.syncs++;
      this.counters.syncMs += performance.now() - started;
      if (this.running === running) this.running = null;
    });
    this.running = running;
    return running;
  }
}
