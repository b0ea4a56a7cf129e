/**
 * Reading blobs: does one exist (HEAD), the whole of one (GET, verified against its digest), and
 * a byte range of one (GET with `Range`), which is what makes a lazy clone possible.
 *
 * A range answer is trusted only when it is exactly what was asked: 206 Partial Content, a
 * `Content-Range: bytes a-b/total` naming the very range, and that many bytes. A registry, CDN or
 * proxy that ignores `Range` answers 200 with the whole blob; handing its first bytes out as the
 * range would be silently wrong data, so it is an error instead. (A range cannot be checked
 * against the blob's digest; the block digests inside the layer check it above this.)
 */
import { pipeline, type Readable } from 'node:stream';
import { CowdiskError, ErrorCode } from '../errors.js';
import { pullScope } from './auth.js';
import { digestMismatch, sha256Digest, VerifyingStream } from './digest.js';
import { protocolFault, type Exchange } from './faults.js';
import { discard, header, readBody, type HttpResponse } from './http.js';
import { contentLength, type Session } from './session.js';

export interface BlobInfo {
  size: number;
}

function blobPath(repository: string, digest: string): string {
  return `/v2/${repository}/blobs/${digest}`;
}

function blobName(session: Session, repository: string, digest: string): string {
  return `blob ${digest} in ${session.registry}/${repository}`;
}

/** Whether the repository has the blob, and its size; undefined when it does not. */
export function statBlob(session: Session, repository: string, digest: string): Promise<BlobInfo | undefined> {
  const request = { method: 'HEAD' as const, url: blobPath(repository, digest) };
  return session.call(request, [pullScope(repository)], async (response, exchange) => {
    await response.body.dump();
    if (response.status === 404) return undefined;
    if (response.status !== 200) throw await session.fault(response, exchange, blobName(session, repository, digest));
    const size = contentLength(response);
    if (size === undefined) throw protocolFault(exchange, 'a blob HEAD answer without Content-Length');
    return { size };
  });
}

/**
 * The whole blob in memory, verified against its digest: for small blobs (a manifest's config).
 * Anything over `limit` bytes is refused before it is read.
 */
export function readBlob(session: Session, repository: string, digest: string, limit: number): Promise<Buffer> {
  const what = blobName(session, repository, digest);
  const request = { method: 'GET' as const, url: blobPath(repository, digest) };
  return session.call(request, [pullScope(repository)], async (response, exchange) => {
    if (response.status !== 200) throw await session.fault(response, exchange, what);
    const bytes = await readBody(response, limit, exchange);
    const actual = sha256Digest(bytes);
    if (actual !== digest) throw digestMismatch(what, digest, actual);
    return bytes;
  });
}

/**
 * The whole blob as a stream that fails at its end unless the bytes hash to `digest` (and are as
 * long as the registry said): a consumer that writes it to a file must wait for the end before
 * it trusts the file. Only reaching the answer is retried; a stream that breaks midway is the
 * caller's to resume (`readBlobRange` from where it stopped).
 */
export function openBlob(session: Session, repository: string, digest: string): Promise<{ size: number | undefined; stream: Readable }> {
  const what = blobName(session, repository, digest);
  const request = { method: 'GET' as const, url: blobPath(repository, digest) };
  return session.call(request, [pullScope(repository)], async (response, exchange) => {
    if (response.status !== 200) throw await session.fault(response, exchange, what);
    const size = contentLength(response);
    const verifying = new VerifyingStream(what, digest, size);
    // pipeline, not pipe: a consumer that stops early must free the connection, and a broken
    // connection must fail the stream it reads.
    pipeline(response.body, verifying, () => {});
    return { size, stream: verifying };
  });
}

/**
 * Exactly `length` bytes of the blob from `offset`, or an error: never fewer, never others.
 * Retried like any GET; a range past the blob's end is an OUT_OF_RANGE error.
 */
export async function readBlobRange(session: Session, repository: string, digest: string, offset: number, length: number): Promise<Buffer> {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0) {
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `a blob range needs offset >= 0 and length > 0 (got ${offset}, ${length}).`);
  }
  const what = blobName(session, repository, digest);
  const last = offset + length - 1;
  const request = { method: 'GET' as const, url: blobPath(repository, digest), headers: { range: `bytes=${offset}-${last}` } };
  return session.call(request, [pullScope(repository)], async (response, exchange) => {
    if (response.status === 416) {
      await response.body.dump();
      throw new CowdiskError(ErrorCode.OUT_OF_RANGE, `${what}: bytes ${offset}-${last} lie past the blob's end.`);
    }
    if (response.status === 200) {
      discard(response);
      throw protocolFault(
        exchange,
        `asked for bytes ${offset}-${last} of ${digest}, it answered 200 with the whole blob: the registry or a proxy in front of it ignores Range, so lazy reads cannot work through it (pull the whole chain instead)`,
      );
    }
    if (response.status !== 206) throw await session.fault(response, exchange, what);
    checkContentRange(response, exchange, what, offset, last);
    const bytes = await readBody(response, length, exchange);
    if (bytes.length !== length) throw protocolFault(exchange, `the 206 answer for bytes ${offset}-${last} carried ${bytes.length} bytes, not ${length}`);
    return bytes;
  });
}

function checkContentRange(response: HttpResponse, exchange: Exchange, what: string, first: number, last: number): void {
  const text = header(response, 'content-range');
  const match = text === undefined ? null : /^bytes ([0-9]+)-([0-9]+)\/([0-9]+|\*)$/.exec(text.trim());
  if (match !== null && match[3] !== '*' && last >= Number(match[3])) {
    discard(response);
    throw new CowdiskError(ErrorCode.OUT_OF_RANGE, `${what}: bytes ${first}-${last} reach past the blob's ${match[3]} bytes.`);
  }
  if (match === null || Number(match[1]) !== first || Number(match[2]) !== last) {
    discard(response);
    throw protocolFault(exchange, `asked for bytes ${first}-${last}, the 206 answer says Content-Range: ${text ?? '(none)'}`);
  }
}
