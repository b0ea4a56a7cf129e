/**
 * What the engine and the verbs know of a layer: one interface, whatever the file is.
 *
 * A chain is an overlay on top of sealed layers. A sealed layer can be a snapshot file (format
 * version 1 today; version 2 and layers that live in a registry are coming) or a raw base, and
 * nothing above this file asks which: the chain resolves a block by asking each layer the state
 * of its blocks (absent, zero, data) and reads the data from the layer that has it; the verbs ask
 * which blocks a layer holds, how a child refers to it, whether two layers are the same, and how
 * to verify it. Only the module that opens layers (open-layer.ts) knows the classes behind this.
 *
 * Block indexes are in the chain's block size. A raw base has no block size of its own (each
 * clone chose one), so every question that counts blocks says which size it counts in.
 */
import type { CowdiskError } from '../errors.js';
import type { ParentRef } from '../format/header.js';
import type { LayerKind } from './device.js';
import type { RangeSource } from './range-source.js';

/** What a sealed layer says of one block. */
export const BlockState = {
  /** Not in this layer: ask the layer below. */
  ABSENT: 0,
  /** Reads as zeros, hiding the layers below (nothing stored). */
  ZERO: 1,
  /** The layer stores the block's bytes. */
  DATA: 2,
} as const;

/** A run of bytes [start, end) that holds data, or is a hole that reads as zeros. */
export interface AllocationRun {
  start: number;
  end: number;
  data: boolean;
}

/**
 * Gathers blocks handed over in ascending order into runs of consecutive blocks, each passed to
 * `fn(first, end)` as it closes (`close` passes the last one): how a layer turns the blocks it
 * holds into the runs `heldBlocks` reports.
 */
export function runsOf(fn: (first: number, end: number) => void): { add(block: number): void; close(): void } {
  let start = -1;
  let end = -1;
  return {
    add(block) {
      if (block === end) {
        end++;
        return;
      }
      if (start !== -1) fn(start, end);
      start = block;
      end = block + 1;
    },
    close() {
      if (start !== -1) fn(start, end);
      start = -1;
    },
  };
}

/** Any layer of a chain, the writable overlay included: what the verbs ask of each. */
export interface Layer {
  readonly kind: LayerKind;
  /** Absolute path of the layer's file. */
  readonly path: string;
  /** A snapshot's layer digest (sha256:...), a raw base's fingerprint (raw:...), an overlay's uuid (uuid:...). */
  readonly identity: string;
  /**
   * Calls `fn(first, end)` for each run of blocks [first, end) (of `blockSize` bytes) that the
   * layer holds: stores, or marks as reading zeros. Those are the blocks it serves or hides. The
   * cost follows what the layer holds, not the size of the disk.
   */
  heldBlocks(blockSize: number, fn: (first: number, end: number) => void): Promise<void>;
}

/** What `cowdisk info` shows of a sealed layer, from its metadata alone. */
export interface SealedLayerCounts {
  /** Blocks with stored data. */
  stored: number;
  /** Blocks that read as zeros and hide the layers below. */
  zero: number;
  /** Bytes of stored block data (after compression). */
  dataBytes: number;
}

/** Where `verify` reports what it finds. */
export interface VerifySink {
  /** A stored block was read and matched its digest (or not: then `problem` follows). */
  verified(bytes: number): void;
  /** Something is wrong; `err.block` names the block when there is one. */
  problem(err: CowdiskError): void;
  /** A remote layer fetched this many bytes to be able to verify itself. */
  fetched?(bytes: number): void;
}

/** How a remote layer fills its cached copy (`pull`, `serve --prefetch`, `check`). */
export interface FillOptions {
  /** Requests at once (default 4). */
  concurrency?: number;
  /** Bytes per second at most; unbounded by default. */
  rate?: number;
  /** Background work: each request waits until no read of a client is fetching. */
  background?: boolean;
  /** Stops the fill between two requests. */
  signal?: AbortSignal;
  /** (bytes fetched so far, bytes to fetch in all), as requests complete. */
  onProgress?: (done: number, total: number) => void;
}

export interface FillResult {
  /** Bytes fetched from the source (and written to the copy). */
  fetched: number;
  /** Pieces the source sent damaged (CORRUPT, naming the block): never written, never marked. */
  failed: CowdiskError[];
  /** Whether every piece is now present. */
  whole: boolean;
}

/**
 * What a layer kept in the layer cache and fetched on demand (image/remote-layer.ts) adds to the
 * sealed layer interface: where its bytes come from, how much of it is here, and filling it.
 */
export interface RemoteCache {
  /** Where missing pieces come from, for people (`HOST/REPO`). */
  readonly source: string;
  /** The blob the cached copy is a copy of. */
  readonly blob: { digest: string; size: number };
  /** The record's opaque origin (the registry wiring reads it). */
  readonly origin: Readonly<Record<string, unknown>>;
  /** The header and directory ranges and their digest, as the layer's manifest gives them. */
  readonly metadata: { digest: string; ranges: ReadonlyArray<{ offset: number; length: number }> };
  /** Every piece is in the copy: nothing will ever be fetched. */
  readonly whole: boolean;
  /** Pieces (stored blocks and table pages) present in the copy, of all. */
  cached(): { present: number; total: number };
  /** Fetches every piece not yet present; damaged ones are reported, a source that fails throws. */
  fill(options?: FillOptions): Promise<FillResult>;
  /**
   * After a fill: makes the copy byte for byte its blob (fetching what lies between the pieces,
   * if it differs) and checks the blob's digest over the whole copy; CORRUPT if it cannot.
   */
  completeBlob(): Promise<void>;
  /**
   * Fetches through `source` from now on instead of the one the process's factory makes from
   * the record's origin (`pull` passes its own, with the credentials it was given).
   */
  useSource(source: RangeSource): void;
  /** Counters since open, for benchmarks and `info`. */
  stats(): RemoteStats;
}

export interface RemoteStats {
  /** Range requests sent, bytes they brought, pieces they filled. */
  requests: number;
  bytes: number;
  pieces: number;
  /** Pieces refused because their bytes failed their check. */
  refused: number;
  /** fdatasyncs of the copy made before marks, and the milliseconds they took. */
  syncs: number;
  syncMs: number;
}

/** A read-only layer beneath an overlay: a snapshot file or a raw base. */
export interface SealedLayer extends Layer {
  readonly kind: 'snapshot' | 'raw';
  /** The size of the disk the layer describes. */
  readonly size: number;
  /** The block size fixed in the file, or null for a raw base (the chain's applies). */
  readonly blockSize: number | null;
  /** The format version of the file (1, 2, ...), or null for a raw base. */
  readonly version: number | null;
  /** Creation time, ns since the epoch, when the file records one. */
  readonly createdNs: bigint | null;
  /** The layer beneath this one, as this layer's file names it. */
  readonly parent: ParentRef;

  /** The reference a child file at `child` records to name this layer as its parent. */
  reference(child: string): ParentRef;
  /**
   * What differs between this layer and the reference a child recorded (and the child's block
   * size), in words; empty when this is the layer the child was made on.
   */
  changesFrom(ref: ParentRef, blockSize: number): string[];

  /**
   * The state (BlockState) of each block [first, first + count) of `blockSize` bytes, or null
   * when every one of them is absent (cheaply known: from a directory, not from tables).
   */
  states(first: number, count: number, blockSize: number): Promise<Uint8Array | null>;
  /** Fills `buf` with the bytes at `offset`, which lie in blocks this layer says are DATA. */
  read(buf: Buffer, offset: number): Promise<void>;
  /**
   * read, at once, when what it needs is in memory (BlockFile.readNow); false otherwise, and then
   * `read` does it. It hands out exactly what `read` would: bytes still to be fetched (and checked
   * against their digest, as a registry's are) only `read` may.
   */
  readNow(buf: Buffer, offset: number): boolean;
  /** Which parts of [from, to) (in DATA blocks) hold data and which are holes (a sparse raw base). */
  allocation(from: number, to: number): Promise<AllocationRun[]>;
  /** Counts for `info`, or null where the file keeps none (a raw base). */
  counts(): SealedLayerCounts | null;
  /** Reads every stored block and checks it against its digest, and the layer's identity. */
  verify(sink: VerifySink): Promise<void>;
  /** Set for a layer that lives in the layer cache and is fetched on demand. */
  readonly remote?: RemoteCache;
  close(): Promise<void>;
}
