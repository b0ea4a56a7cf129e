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
  /** Which parts of [from, to) (in DATA blocks) hold data and which are holes (a sparse raw base). */
  allocation(from: number, to: number): Promise<AllocationRun[]>;
  /** Counts for `info`, or null where the file keeps none (a raw base). */
  counts(): SealedLayerCounts | null;
  /** Reads every stored block and checks it against its digest, and the layer's identity. */
  verify(sink: VerifySink): Promise<void>;
  close(): Promise<void>;
}
