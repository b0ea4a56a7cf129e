/**
 * Making a whole cached copy byte for byte its blob, and proving it: what `pull` (which links the
 * copy to its place) and `push` (which may send it to another registry) need beyond "every piece
 * verified". The reader never reads the bytes between pieces (padding, anything a format keeps
 * outside its header, directory, tables and blocks), so they may still be holes in the copy; the
 * blob digest covers them all. The copy is hashed whole; if it differs, those bytes are fetched
 * and it is hashed again, and a second mismatch is CORRUPT.
 */
import { createHash } from 'node:crypto';
import { CowdiskError, ErrorCode } from '../errors.js';
import type { SealedFile } from '../format/sealed-file.js';
import type { FileSystem } from '../io/file.js';
import type { RemoteStats } from './layer.js';
import type { CacheRecord } from './layer-cache.js';
import type { RangeSource } from './range-source.js';

const CHUNK = 4 * 1024 * 1024;
/** A whole copy is read-only, as sealed layers are; it is opened for writing only here. */
const WHOLE_MODE = 0o444;
const WRITABLE_MODE = 0o644;

export interface BlobCopy {
  fs: FileSystem;
  /** The reader of the whole copy. */
  file: SealedFile;
  record: CacheRecord;
  source: () => RangeSource;
  counters: RemoteStats;
}

export async function completeBlob(copy: BlobCopy): Promise<void> {
  const { record } = copy;
  if ((await hash(copy)) === record.blob.digest) return;
  await fetchBetweenPieces(copy);
  const actual = await hash(copy);
  if (actual !== record.blob.digest) {
    throw new CowdiskError(
      ErrorCode.CORRUPT,
      `${copy.file.path}: every block and table page of layer ${record.layerDigest} verified, yet the copy hashes to ${actual}, not the blob's ${record.blob.digest}: ${record.source} serves other bytes than it stored. Try again; if it persists the registry's copy is damaged.`,
      { path: copy.file.path },
    );
  }
}

/** SHA-256 of the whole copy, as `sha256:...`. */
async function hash({ fs, file, record }: BlobCopy): Promise<string> {
  const handle = await fs.open(file.path, { readOnly: true });
  try {
    const digest = createHash('sha256');
    const buf = Buffer.alloc(CHUNK);
    for (let at = 0; at < record.blob.size; at += buf.length) {
      const n = await handle.read(buf.subarray(0, Math.min(buf.length, record.blob.size - at)), at);
      digest.update(buf.subarray(0, n));
    }
    return `sha256:${digest.digest('hex')}`;
  } finally {
    await handle.close();
  }
}

/** Fetches every byte that no piece (and no metadata range) covers into the copy. */
async function fetchBetweenPieces({ fs, file, record, source, counters }: BlobCopy): Promise<void> {
  const covered = [...record.metadata.ranges, ...file.tableRanges(0, file.blocks)];
  for (let b = 0; b < file.blocks; b++) {
    const r = await file.storedRange(b);
    if (r) covered.push(r);
  }
  covered.sort((a, b) => a.offset - b.offset);
  await fs.chmod(file.path, WRITABLE_MODE);
  const handle = await fs.open(file.path);
  try {
    let at = 0;
    for (const r of [...covered, { offset: record.blob.size, length: 0 }]) {
      for (let from = at; from < r.offset; from += CHUNK) {
        const length = Math.min(CHUNK, r.offset - from);
        await handle.write(await source().read(from, length), from);
        counters.requests++;
        counters.bytes += length;
      }
      at = Math.max(at, r.offset + r.length);
    }
    await handle.sync();
  } finally {
    await handle.close();
    await fs.chmod(file.path, WHOLE_MODE);
  }
}
