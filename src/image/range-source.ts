/**
 * Where a remote layer's missing bytes come from: anything that hands out exact byte ranges of
 * the layer's file. The engine knows nothing of registries (the layering test says so); a cached
 * layer's record names its origin as an opaque value, and whoever can reach such origins (the
 * registry wiring in ops/remote-source.ts) installs a factory here that turns one into a source.
 *
 * One factory per process rather than an option threaded through every verb: any command that
 * opens an image (`serve`, `export`, `map`, `diff`, `snapshot`, ...) may meet a lazily cloned
 * layer somewhere in its chain, and none of them should have to know that it might.
 */
import { CowdiskError, ErrorCode } from '../errors.js';

export interface RangeSource {
  /** Where the bytes come from, for messages and logs (`HOST/REPO`). */
  readonly name: string;
  /** Exactly `length` bytes of the file at `offset`, or a CowdiskError: never fewer, never others. */
  read(offset: number, length: number): Promise<Buffer>;
  close(): Promise<void>;
}

/** The blob a cached layer is a copy of: its digest (sha256:...) and length. */
export interface BlobRef {
  digest: string;
  size: number;
}

/** Makes the source of a blob from the origin its cache record names. */
export type RangeSourceFactory = (origin: Readonly<Record<string, unknown>>, blob: BlobRef) => RangeSource;

let installed: RangeSourceFactory | undefined;

/** Installs the factory every remote layer of this process fetches through. */
export function useRangeSources(factory: RangeSourceFactory): void {
  installed = factory;
}

/** The source of `blob`, or UNSUPPORTED when this program installed no way to fetch. */
export function rangeSourceFor(origin: Readonly<Record<string, unknown>>, blob: BlobRef, layer: string): RangeSource {
  if (!installed) {
    throw new CowdiskError(
      ErrorCode.UNSUPPORTED,
      `${layer} is a lazily cloned layer whose missing blocks must be fetched, and this program cannot fetch them (it uses the engine without the registry client: import cowdisk's index).`,
      { path: layer },
    );
  }
  return installed(origin, blob);
}
