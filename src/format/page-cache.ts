/**
 * Pages read on first use and then kept: the shared shape of the overlay's state map, a
 * snapshot's block table and a chain's resolution pages. Concurrent requests for a page not yet
 * in memory share one load; a bounded cache drops its oldest page when full (pages that must
 * not be dropped, like dirty map pages, live in an unbounded one).
 */
export class PageCache<V> {
  private readonly pages = new Map<number, V>();
  private readonly loading = new Map<number, Promise<V>>();

  constructor(
    private readonly load: (index: number) => Promise<V>,
    private readonly limit = Number.POSITIVE_INFINITY,
  ) {}

  /** The page if it is in memory: the hot path, no promise. */
  get(index: number): V | undefined {
    return this.pages.get(index);
  }

  /** The page, loading it the first time (once, however many ask meanwhile). */
  fetch(index: number): V | Promise<V> {
    const hit = this.pages.get(index);
    if (hit !== undefined) return hit;
    let pending = this.loading.get(index);
    if (!pending) {
      pending = this.load(index)
        .then((value) => {
          this.set(index, value);
          return value;
        })
        .finally(() => this.loading.delete(index));
      this.loading.set(index, pending);
    }
    return pending;
  }

  set(index: number, value: V): void {
    if (!this.pages.has(index) && this.pages.size >= this.limit) this.pages.delete(this.pages.keys().next().value as number);
    this.pages.set(index, value);
  }

  values(): IterableIterator<V> {
    return this.pages.values();
  }
}
