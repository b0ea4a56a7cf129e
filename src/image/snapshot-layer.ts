/**
 * A snapshot file, of any format version, as a sealed layer of a chain: the engine's questions
 * answered by the file's reader (format/sealed-file.ts) from its directory, tables and blocks.
 */
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';
import { BlockKind } from '../format/constants.js';
import type { ParentRef } from '../format/header.js';
import { LayerDigest } from '../format/layer-digest.js';
import type { SealedFile } from '../format/sealed-file.js';
import { type AllocationRun, BlockState, type SealedLayer, type SealedLayerCounts, type VerifySink, runsOf } from './layer.js';

export class SnapshotLayer implements SealedLayer {
  readonly kind = 'snapshot';
  constructor(private readonly file: SealedFile) {}

  get version(): number {
    return this.file.version;
  }

  get path(): string {
    return this.file.path;
  }

  get identity(): string {
    return `sha256:${this.file.header.layerDigest.toString('hex')}`;
  }

  get size(): number {
    return this.file.header.size;
  }

  get blockSize(): number {
    return this.file.header.blockSize;
  }

  get createdNs(): bigint {
    return this.file.header.createdNs;
  }

  get parent(): ParentRef {
    return this.file.header.parent;
  }

  reference(child: string): ParentRef {
    return { kind: 'snapshot', path: path.relative(path.dirname(path.resolve(child)), this.path), size: this.size, digest: this.file.header.layerDigest };
  }

  changesFrom(ref: ParentRef, blockSize: number): string[] {
    if (ref.kind !== 'snapshot') return ['it is no longer a raw file'];
    const changes: string[] = [];
    if (!this.file.header.layerDigest.equals(ref.digest)) changes.push(`its layer digest is ${this.identity}, not sha256:${ref.digest.toString('hex')}`);
    if (this.size !== ref.size) changes.push(`its size is ${this.size}, not ${ref.size}`);
    if (this.blockSize !== blockSize) changes.push(`its block size is ${this.blockSize}, not ${blockSize}`);
    return changes;
  }

  async states(first: number, count: number): Promise<Uint8Array | null> {
    const kinds = await this.file.kinds(first, count);
    if (!kinds) return null;
    for (let i = 0; i < kinds.length; i++) if (kinds[i] === BlockKind.RAW || kinds[i] === BlockKind.LZ4) kinds[i] = BlockState.DATA;
    return kinds;
  }

  read(buf: Buffer, offset: number): Promise<void> {
    return this.file.read(buf, offset);
  }

  /** As `read` (which trusts a local layer's stored bytes as `read` does; `check` hashes them), at once. */
  readNow(buf: Buffer, offset: number): boolean {
    return this.file.readNow(buf, offset);
  }

  async allocation(from: number, to: number): Promise<AllocationRun[]> {
    return [{ start: from, end: to, data: true }];
  }

  async heldBlocks(_blockSize: number, fn: (first: number, end: number) => void): Promise<void> {
    const runs = runsOf(fn);
    await this.file.forEachEntry(
      (block) => runs.add(block),
      (err) => {
        throw err;
      },
    );
    runs.close();
  }

  counts(): SealedLayerCounts {
    const { storedBlocks, dataBytes } = this.file.header;
    return { stored: storedBlocks, zero: this.file.heldBlocks() - storedBlocks, dataBytes };
  }

  /**
   * Every stored block decompressed and compared with its SHA-256; the layer digest recomputed
   * from the table (when every table page could be read) and compared with the header's.
   */
  async verify(sink: VerifySink): Promise<void> {
    const { header } = this.file;
    const digest = new LayerDigest(header.size, header.blockSize);
    let digestUsable = true;
    await this.file.forEachEntry(
      async (block, kind, expected) => {
        if (kind === BlockKind.ZERO || !expected) {
          digest.zero(block);
          return;
        }
        digest.data(block, expected);
        const first = block * header.blockSize;
        try {
          const data = await this.file.readBlock(block);
          sink.verified(data.length);
          if (!createHash('sha256').update(data).digest().equals(expected)) {
            sink.problem(
              new CowdiskError(ErrorCode.CORRUPT, `block ${block} (disk bytes ${first}..${first + header.blockSize - 1}) does not match its SHA-256 digest`, {
                path: this.path,
                block,
              }),
            );
          }
        } catch (err) {
          if (!(err instanceof CowdiskError)) throw err;
          sink.problem(new CowdiskError(err.code, err.message, { path: this.path, block, cause: err }));
        }
      },
      (err) => {
        digestUsable = false;
        sink.problem(err);
      },
    );
    if (digestUsable && !digest.digest().equals(header.layerDigest)) {
      sink.problem(new CowdiskError(ErrorCode.CORRUPT, `the layer digest recomputed from the block table does not match the header's ${this.identity}`, { path: this.path }));
    }
  }

  close(): Promise<void> {
    return this.file.close();
  }
}
