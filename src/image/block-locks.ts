/**
 * Per-block locks for the write path. Only operations that change a block's state (a copy-up, a
 * zero, a trim) take them; rewrites of sub-blocks already present go straight to the file. So two
 * writes racing to the same absent block cannot both copy it up from the parent (the second would
 * overwrite the first's bytes with stale parent data), while unrelated blocks never wait for each
 * other: there is no lock over the whole image.
 *
 * Ranges are locked in ascending block order, so two multi-block operations cannot deadlock.
 */
export class BlockLocks {
  private readonly tails = new Map<number, Promise<void>>();

  /** Locks blocks first..last (inclusive); resolves to the function that unlocks them. */
  async acquire(first: number, last: number): Promise<() => void> {
    const releases: Array<() => void> = [];
    for (let block = first; block <= last; block++) releases.push(await this.lockOne(block));
    return () => {
      for (const release of releases) release();
    };
  }

  get held(): number {
    return this.tails.size;
  }

  private lockOne(block: number): Promise<() => void> {
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const previous = this.tails.get(block);
    const tail = previous ? previous.then(() => mine) : mine;
    this.tails.set(block, tail);
    const unlock = () => {
      release();
      if (this.tails.get(block) === tail) this.tails.delete(block);
    };
    return previous ? previous.then(() => unlock) : Promise.resolve(unlock);
  }
}
