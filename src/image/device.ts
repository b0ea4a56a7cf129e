/**
 * The one interface every layer and every chain implements, so that whoever serves or copies a
 * disk (the NBD server, `export`, `bench`) never knows what it is serving: a raw base, a sealed
 * snapshot, a writable overlay, or a chain of them.
 *
 * Byte offsets and lengths are JavaScript numbers: exact up to 2^53 (8 PiB), beyond any disk this
 * format describes. Callers validate ranges once at the edge (see `checkRange`); the layers below
 * trust them.
 */
import { CowdiskError, ErrorCode } from '../errors.js';

export interface Capabilities {
  /** write / zero / trim are accepted (false for sealed layers and read-only opens). */
  readonly writable: boolean;
  /** flush makes earlier answered writes durable (false when there is nothing to flush). */
  readonly flush: boolean;
  /** a per-request "force unit access" is honoured. */
  readonly fua: boolean;
  /** trim is more than a no-op: it releases the range (reads as zeros afterwards). */
  readonly trim: boolean;
  /** zero is done without writing zero bytes (state change or hole), so it is cheap. */
  readonly zero: boolean;
  /** zero with fastZero is answered quickly or refused, never done slowly. */
  readonly fastZero: boolean;
  /** extents reports allocation and the serving layer. */
  readonly extents: boolean;
  /** several connections sharing this device see each other's flushed writes (one shared image). */
  readonly multiConn: boolean;
}

export interface WriteOptions {
  /** Force unit access: the data is durable when the promise resolves. */
  fua?: boolean;
}

export interface ZeroOptions extends WriteOptions {
  /** The caller wants storage kept allocated (NBD_CMD_FLAG_NO_HOLE): write zeros, do not punch. */
  noHole?: boolean;
  /** Fail with UNSUPPORTED rather than zero slowly (NBD_CMD_FLAG_FAST_ZERO). */
  fastZero?: boolean;
}

/**
 * A run of bytes with one meaning.
 * - `data`: bytes stored in layer `layer`.
 * - `zero`: reads as zeros because layer `layer` says so (a zero block: the block-level whiteout).
 * - `hole`: reads as zeros and nothing stores it (an unallocated block with no parent below, or a
 *   hole in a sparse raw base). `layer` is the layer that answered, or -1 when none did.
 */
export interface Extent {
  offset: number;
  length: number;
  kind: 'data' | 'zero' | 'hole';
  /** Index into `BlockDevice.chain`: 0 is the top layer. */
  layer: number;
}

/** Whether `next` carries on `previous`: adjacent, same kind, same serving layer. */
export function continues(previous: Extent | undefined, next: Extent): previous is Extent {
  return previous !== undefined && previous.kind === next.kind && previous.layer === next.layer && previous.offset + previous.length === next.offset;
}

/** Appends an extent to a list, joining it to the last one when it carries it on. */
export function appendExtent(list: Extent[], next: Extent): void {
  const last = list[list.length - 1];
  if (continues(last, next)) last.length += next.length;
  else list.push(next);
}

/**
 * The edge check of a request: [offset, offset + length) must lie inside the disk. The devices
 * `openImage` returns apply it to every request (a library caller has no other edge); the layers
 * beneath trust what passed it. An overlay must: the map page of a block past the end would be
 * read from, and written over, the data region.
 */
export function checkRange(size: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
    throw new CowdiskError(ErrorCode.OUT_OF_RANGE, `${length} bytes at offset ${offset} reach outside the ${size}-byte disk.`);
  }
}

export type LayerKind = 'overlay' | 'snapshot' | 'raw';

/** One layer of a chain as the user sees it (`info --chain`, the NBD layer context). */
export interface LayerInfo {
  kind: LayerKind;
  /** Absolute path of the layer's file. */
  path: string;
  /** The layer's identity: a snapshot's layer digest (sha256:...), a raw base's fingerprint, an overlay's uuid. */
  identity: string;
}

export interface BlockDevice {
  /** Virtual disk size in bytes. */
  readonly size: number;
  /** The chain's block size: the unit of copy-on-write and of allocation. */
  readonly blockSize: number;
  readonly capabilities: Capabilities;
  /** The layers serving this device, top first. */
  readonly chain: readonly LayerInfo[];

  /** Fills `buf` with the bytes at [offset, offset + buf.length). */
  read(buf: Buffer, offset: number): Promise<void>;
  /**
   * read, at once, when every byte it needs is in memory (map pages loaded, data in the page
   * cache, nothing to decode or verify): true when buf is filled, false when the caller must use
   * `read` (buf then holds anything). Optional: a device without it is always read with `read`.
   * It exists because a promise per layer is a real share of a cached 4 KiB read's cost.
   */
  readNow?(buf: Buffer, offset: number): boolean;
  write(buf: Buffer, offset: number, options?: WriteOptions): Promise<void>;
  /** Makes [offset, offset + length) read as zeros. */
  zero(offset: number, length: number, options?: ZeroOptions): Promise<void>;
  /** Releases [offset, offset + length); it reads as zeros afterwards (never as the parent's data). */
  trim(offset: number, length: number, options?: WriteOptions): Promise<void>;
  /** Everything answered before this call survives power loss once it resolves. */
  flush(): Promise<void>;
  /** Describes [offset, offset + length) as consecutive, non-empty extents covering it exactly. */
  extents(offset: number, length: number): Promise<Extent[]>;
  /** Flushes (when writable) and releases the files. Further calls fail with CLOSED. */
  close(): Promise<void>;
}
