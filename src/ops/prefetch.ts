/**
 * `serve --prefetch`: while images are served, fill the cached copies of every lazily cloned
 * layer beneath them, so a long-running clone ends up wholly local and stops depending on the
 * registry. The fill is background work: each of its requests waits until no client read is
 * fetching, and it keeps under a byte rate. A fill that fails (the registry went away) is tried
 * again after a pause that grows to a minute; clients' reads are not affected either way.
 */
import type { SealedLayer } from '../image/layer.js';
import type { Image } from '../image/open.js';

export interface PrefetchOptions {
  /** Bytes per second at most, over all layers. */
  rate: number;
  /** A layer's copy became whole. */
  onWhole?: (layer: SealedLayer) => void;
  /** A fill failed and will be tried again after `retryMs`. */
  onError?: (layer: SealedLayer, err: unknown, retryMs: number) => void;
}

export interface Prefetch {
  /** Lazily cloned layers to fill (those not whole yet). */
  readonly layers: number;
  /** Resolves when the prefetch ends: true when every layer is whole, false when it was stopped. */
  readonly done: Promise<boolean>;
  /** Stops between two requests; resolves once nothing more is fetched. */
  stop(): Promise<void>;
}

const FIRST_RETRY_MS = 2000;
const MAX_RETRY_MS = 60_000;

/** Starts filling, one layer after another, top first (what clients read most is usually highest). */
export function prefetch(images: readonly Image[], options: PrefetchOptions): Prefetch {
  const seen = new Set<string>();
  const layers = images.flatMap((image) => image.layers).filter((l) => l.remote && !l.remote.whole && !seen.has(l.path) && seen.add(l.path));
  const controller = new AbortController();
  const { signal } = controller;
  let wake: (() => void) | undefined;
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      wake = () => (clearTimeout(timer), resolve());
    });
  const done = (async () => {
    for (const layer of layers) {
      for (let retryMs = FIRST_RETRY_MS; !signal.aborted; retryMs = Math.min(MAX_RETRY_MS, retryMs * 2)) {
        try {
          const result = await layer.remote!.fill({ background: true, rate: options.rate, concurrency: 1, signal });
          if (result.whole) options.onWhole?.(layer);
          if (result.whole || result.failed.length === 0) break;
          // Pieces came damaged: try them again later, as for a failure.
          options.onError?.(layer, result.failed[0], retryMs);
        } catch (err) {
          if (signal.aborted) return false;
          options.onError?.(layer, err, retryMs);
        }
        await pause(retryMs);
      }
    }
    return !signal.aborted;
  })();
  return {
    layers: layers.length,
    done,
    async stop() {
      controller.abort();
      wake?.();
      await done;
    },
  };
}
