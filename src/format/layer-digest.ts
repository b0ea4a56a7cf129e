/**
 * A sealed layer's identity: SHA-256 over a fixed prefix, the geometry and, for each block the
 * layer holds in block order, its index, kind (zero, or data whether compressed or not) and data
 * digest (docs/FORMAT.md, "Layer digest"). It depends on content only, not on compression or on
 * where blocks sit in the file, so the same content always has the same identity whatever wrote it.
 */
import { createHash, type Hash } from 'node:crypto';
import { BlockKind, LAYER_DIGEST_PREFIX } from './constants.js';

export class LayerDigest {
  private readonly hash: Hash = createHash('sha256');
  private readonly record = Buffer.alloc(5);

  constructor(size: number, blockSize: number) {
    const geometry = Buffer.alloc(12);
    geometry.writeBigUInt64LE(BigInt(size), 0);
    geometry.writeUInt32LE(blockSize, 8);
    this.hash.update(LAYER_DIGEST_PREFIX).update(geometry);
  }

  zero(block: number): void {
    this.record.writeUInt32LE(block, 0);
    this.record[4] = BlockKind.ZERO;
    this.hash.update(this.record);
  }

  data(block: number, digest: Buffer): void {
    this.record.writeUInt32LE(block, 0);
    this.record[4] = BlockKind.RAW;
    this.hash.update(this.record).update(digest);
  }

  digest(): Buffer {
    return this.hash.digest();
  }
}
