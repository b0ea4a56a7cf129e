/**
 * A raw base as a sealed layer: every block is data (holes in the file read as zeros and map as
 * holes), the identity is the file's fingerprint, and there is nothing to verify beyond it (the
 * child's recorded identity is checked when the chain opens).
 */
import * as path from 'node:path';
import type { ParentRef } from '../format/header.js';
import { type RawFile, formatRawIdentity, rawIdentityChanges } from '../format/raw.js';
import { type AllocationRun, BlockState, type SealedLayer } from './layer.js';

export class RawLayer implements SealedLayer {
  readonly kind = 'raw';
  readonly blockSize = null;
  readonly version = null;
  readonly createdNs = null;
  readonly parent: ParentRef = { kind: 'none' };
  readonly identity: string;

  constructor(private readonly file: RawFile) {
    this.identity = formatRawIdentity(file.identity);
  }

  get path(): string {
    return this.file.path;
  }

  get size(): number {
    return this.file.size;
  }

  reference(child: string): ParentRef {
    return { kind: 'raw', path: path.relative(path.dirname(path.resolve(child)), this.path), ...this.file.identity };
  }

  changesFrom(ref: ParentRef): string[] {
    if (ref.kind !== 'raw') return ['it is no longer a snapshot layer'];
    return rawIdentityChanges(ref, this.file.identity);
  }

  async states(_first: number, count: number): Promise<Uint8Array> {
    return new Uint8Array(count).fill(BlockState.DATA);
  }

  read(buf: Buffer, offset: number): Promise<void> {
    return this.file.read(buf, offset);
  }

  readNow(buf: Buffer, offset: number): boolean {
    return this.file.readNow(buf, offset);
  }

  allocation(from: number, to: number): Promise<AllocationRun[]> {
    return this.file.allocation(from, to);
  }

  async heldBlocks(blockSize: number, fn: (first: number, end: number) => void): Promise<void> {
    let start = -1;
    let end = -1;
    for (const run of await this.file.allocation(0, this.size)) {
      if (!run.data) continue;
      const first = Math.floor(run.start / blockSize);
      const last = Math.ceil(run.end / blockSize);
      if (first <= end) {
        end = Math.max(end, last);
        continue;
      }
      if (start !== -1) fn(start, end);
      start = first;
      end = last;
    }
    if (start !== -1) fn(start, end);
  }

  counts(): null {
    return null;
  }

  async verify(): Promise<void> {}

  close(): Promise<void> {
    return this.file.close();
  }
}
