/**
 * What an upload reads from: a blob's digest and size, and a way to stream any byte range of it
 * again. Uploads stream (a multi-GiB layer is never held in memory) and may need a range twice
 * (a request retried after the registry asked for credentials), hence a factory, not a stream.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { ioError } from '../errors.js';
import { sha256Digest } from './digest.js';

export interface BlobSource {
  readonly digest: string;
  readonly size: number;
  /** The bytes [start, end) of the blob, as a fresh stream each call. */
  stream(start: number, end: number): Readable;
}

export function bufferBlobSource(bytes: Buffer): BlobSource {
  return {
    digest: sha256Digest(bytes),
    size: bytes.length,
    stream: (start, end) => Readable.from([bytes.subarray(start, end)]),
  };
}

/**
 * A file as a blob. The digest is computed by reading the file once, unless the caller knows it
 * (a sealed layer file does not change, so a verb may keep it); the registry checks it anyway.
 */
export async function fileBlobSource(path: string, known?: { digest: string; size: number }): Promise<BlobSource> {
  const { digest, size } = known ?? (await hashFile(path));
  return {
    digest,
    size,
    // createReadStream's `end` is inclusive; an empty range must read nothing at all.
    stream: (start, end) => (end > start ? createReadStream(path, { start, end: end - 1 }) : Readable.from([])),
  };
}

async function hashFile(path: string): Promise<{ digest: string; size: number }> {
  try {
    const { size } = await stat(path);
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
    return { digest: `sha256:${hash.digest('hex')}`, size };
  } catch (err) {
    throw ioError(err, path, 'reading it to compute its digest');
  }
}
