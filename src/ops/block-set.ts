/**
 * A set of block indexes that costs what it holds: one 1024-bit page per 1024-block range that
 * has a member, so the blocks an overlay holds on a 1 TiB disk take a few bytes each, and "every
 * block" of that disk 2 MiB. Members come out as runs of consecutive blocks, in ascending order,
 * which is how the lifecycle verbs read (one read per run) and how a snapshot layer is written
 * (blocks in increasing order).
 */
const PAGE_BLOCKS = 1024;
const PAGE_WORDS = PAGE_BLOCKS / 32;

export class BlockSet {
  private readonly pages = new Map<number, Uint32Array>();

  constructor(
    /** Blocks of the disk: members are below this. */
    readonly blocks: number,
    readonly blockSize: number,
  ) {}

  static all(blocks: number, blockSize: number): BlockSet {
    const set = new BlockSet(blocks, blockSize);
    for (let index = 0; index * PAGE_BLOCKS < blocks; index++) {
      const page = new Uint32Array(PAGE_WORDS);
      const count = Math.min(PAGE_BLOCKS, blocks - index * PAGE_BLOCKS);
      for (let slot = 0; slot < count; slot++) page[slot >>> 5] |= 1 << (slot & 31);
      set.pages.set(index, page);
    }
    return set;
  }

  add(block: number): void {
    const index = Math.floor(block / PAGE_BLOCKS);
    let page = this.pages.get(index);
    if (!page) {
      page = new Uint32Array(PAGE_WORDS);
      this.pages.set(index, page);
    }
    const slot = block % PAGE_BLOCKS;
    page[slot >>> 5] |= 1 << (slot & 31);
  }

  /** Adds blocks [first, end). */
  addRange(first: number, end: number): void {
    for (let block = first; block < end; block++) this.add(block);
  }

  get size(): number {
    let n = 0;
    for (const page of this.pages.values()) for (const word of page) n += popcount(word);
    return n;
  }

  /** Runs [first, end) of consecutive members, ascending, each at most `maxBlocks` long. */
  *runs(maxBlocks = Infinity): Generator<[number, number]> {
    let start = -1;
    let end = -1;
    for (const index of [...this.pages.keys()].sort((a, b) => a - b)) {
      const page = this.pages.get(index) as Uint32Array;
      for (let w = 0; w < PAGE_WORDS; w++) {
        const word = page[w];
        if (word === 0) continue;
        for (let bit = 0; bit < 32; bit++) {
          if ((word & (1 << bit)) === 0) continue;
          const block = index * PAGE_BLOCKS + w * 32 + bit;
          if (block === end && end - start < maxBlocks) {
            end++;
            continue;
          }
          if (start !== -1) yield [start, end];
          start = block;
          end = block + 1;
        }
      }
    }
    if (start !== -1) yield [start, end];
  }
}

function popcount(word: number): number {
  let v = word >>> 0;
  v -= (v >>> 1) & 0x55555555;
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}
