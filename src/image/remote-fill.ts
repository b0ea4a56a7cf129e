/**
 * Filling a remote layer's cached copy whole (`pull`, `serve --prefetch`, `check`): every table
 * page, then every stored block, table page by table page, in range requests of neighbouring
 * missing pieces, a few at once. A background fill yields to the clients: each of its requests
 * waits until no client read is fetching, and it keeps under a byte rate. A piece the source
 * sends damaged is reported and the fill goes on; a source that cannot be reached stops it
 * (there is no point asking for the rest).
 *
 * The fetching itself (checks, the copy, the present map) is the layer's (remote-layer.ts); this
 * file only decides what to ask for, in which order, and how fast.
 */
import { CowdiskError, ErrorCode } from '../errors.js';
import type { FillOptions, FillResult } from './layer.js';
import type { PresentMap } from './present-map.js';

/** One thing a reader checks on its own: a table page, or a block's stored bytes. */
export interface Piece {
  /** Its slot in the present map. */
  slot: number;
  offset: number;
  length: number;
  table: boolean;
  /** The table page's index, or the block. */
  id: number;
}

/** Missing pieces further apart than this in the file are not fetched by one request. */
const MAX_GAP = 16 * 1024;
/** Bytes one request asks for at most. */
const MAX_REQUEST = 4 * 1024 * 1024;
const DEFAULT_CONCURRENCY = 4;

/**
 * Groups pieces (any order) into runs near each other in the file, each fetched by one range
 * request: a gap of at most MAX_GAP between neighbours, at most MAX_REQUEST bytes in all (a
 * single larger piece is a group of its own).
 */
export function groupPieces(pieces: Piece[]): Piece[][] {
  const sorted = [...pieces].sort((a, b) => a.offset - b.offset);
  const groups: Piece[][] = [];
  let group: Piece[] = [];
  let start = 0;
  let end = 0;
  for (const piece of sorted) {
    const pieceEnd = piece.offset + piece.length;
    if (group.length > 0 && (piece.offset - end > MAX_GAP || Math.max(end, pieceEnd) - start > MAX_REQUEST)) {
      groups.push(group);
      group = [];
    }
    if (group.length === 0) start = piece.offset;
    group.push(piece);
    end = group.length === 1 ? pieceEnd : Math.max(end, pieceEnd);
  }
  if (group.length > 0) groups.push(group);
  return groups;
}

/** What a fill needs of the layer it fills. */
export interface FillTarget {
  whole(): boolean;
  blocks: number;
  /** Every stored table page, as pieces. */
  tables(): Piece[];
  /** A block's stored bytes as a piece, or null when it stores none (its table page is present). */
  blockPiece(block: number): Promise<Piece | null>;
  marks(): PresentMap;
  /** The present-map slot of block 0. */
  base: number;
  /** Makes the pieces present; throws the first failure. */
  fetch(pieces: Piece[], background: boolean): Promise<void>;
  /** Resolves when no client read is fetching. */
  idle(): Promise<void>;
  /** Bytes fetched since the layer was opened. */
  bytes(): number;
  /** Called once the copy is whole. */
  finish(): Promise<void>;
}

export async function fillLayer(target: FillTarget, options: FillOptions): Promise<FillResult> {
  const failed: CowdiskError[] = [];
  if (target.whole()) return { fetched: 0, failed, whole: true };
  const startBytes = target.bytes();
  const marks = target.marks();
  await marks.reload(0, target.base + target.blocks);
  const pace = pacer(options, target);
  const run = async (groups: Piece[][], total: number) => {
    await pool(groups, options.concurrency ?? DEFAULT_CONCURRENCY, async (group) => {
      options.signal?.throwIfAborted();
      await pace(group);
      try {
        await target.fetch(group, options.background ?? false);
      } catch (err) {
        if (!(err instanceof CowdiskError) || err.code !== ErrorCode.CORRUPT) throw err;
        failed.push(err);
      }
      options.onProgress?.(target.bytes() - startBytes, total);
    });
  };
  const tables = target.tables().filter((p) => !marks.has(p.slot));
  const tableBytes = tables.reduce((sum, p) => sum + p.length, 0);
  await run(groupPieces(tables), tableBytes);
  // A damaged table page leaves its blocks unknown: they are skipped (the page was reported).
  const missing = await missingBlocks(target);
  const total = tableBytes + missing.reduce((sum, p) => sum + p.length, 0);
  await run(groupPieces(missing), total);
  const whole = target.whole();
  if (whole) await target.finish();
  return { fetched: target.bytes() - startBytes, failed, whole };
}

/** Every stored block not yet present whose table page is. */
async function missingBlocks(target: FillTarget): Promise<Piece[]> {
  const marks = target.marks();
  const out: Piece[] = [];
  for (let block = 0; block < target.blocks; block++) {
    if (marks.has(target.base + block)) continue;
    try {
      const piece = await target.blockPiece(block);
      if (piece) out.push(piece);
    } catch (err) {
      if (!(err instanceof CowdiskError) || err.code !== ErrorCode.CORRUPT) throw err;
    }
  }
  return out;
}

/** Waits before each request as the options say: for idle clients (background), under the rate. */
function pacer(options: FillOptions, target: FillTarget): (group: Piece[]) => Promise<void> {
  const started = Date.now();
  let asked = 0;
  return async (group) => {
    if (options.background) await target.idle();
    if (options.rate !== undefined && options.rate > 0) {
      const due = started + (asked / options.rate) * 1000;
      asked += group.reduce((sum, p) => sum + p.length, 0);
      const wait = due - Date.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    }
  };
}

/** Runs `fn` over `items` with at most `limit` at once; the first failure stops the rest. */
async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async () => {
    while (!failure && next < items.length) {
      try {
        await fn(items[next++]);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, limit) }, worker));
  if (failure) throw failure.err;
}
