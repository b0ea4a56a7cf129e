/**
 * Putting a blob into a repository, sending as few bytes as the registry allows:
 * 1. HEAD: the repository already has it, nothing to send;
 * 2. a cross-repository mount (`POST /v2/NAME/blobs/uploads/?mount=DIGEST&from=OTHER`), for each
 *    repository the caller knows holds it: 201 means the registry linked it, no bytes moved; a
 *    202 means it would not, and hands back an upload session to use instead;
 * 3. an upload session (`POST /v2/NAME/blobs/uploads/`), then either one monolithic
 *    `PUT <location>?digest=DIGEST` with the whole body, or, above `monolithicLimit`, `PATCH`es
 *    of `chunkSize` bytes (`Content-Range: first-last`, at least the registry's
 *    `OCI-Chunk-Min-Length`) each answered 202 with the next location and `Range: 0-last`, and a
 *    closing `PUT <location>?digest=DIGEST` without a body.
 * The body is streamed from the source, never held whole. The registry hashes what it received
 * and refuses a digest that does not match (400 DIGEST_INVALID); cowdisk also checks the digest
 * the 201 reports. A session that fails midway is cancelled (DELETE), so it does not linger.
 */
import { debuglog } from 'node:util';
import { CowdiskError, ErrorCode } from '../errors.js';
import { pullScope, pushScope } from './auth.js';
import type { BlobSource } from './blob-source.js';
import { statBlob } from './blobs.js';
import { protocolFault, type Exchange } from './faults.js';
import { header, type HttpRequest, type HttpResponse } from './http.js';
import type { Session } from './session.js';

const log = debuglog('cowdisk:registry');

export interface PushBlobOptions {
  /** Repositories on the same registry that may hold the blob already, tried for a mount. */
  mountFrom?: string[];
  /** Blobs up to this size go in one PUT (default 32 MiB); larger ones in chunks. */
  monolithicLimit?: number;
  /** Bytes per PATCH of a chunked upload (default 16 MiB). */
  chunkSize?: number;
}

export type PushOutcome = 'present' | 'mounted' | 'uploaded';

const MiB = 1024 * 1024;

/** Makes sure `repository` holds the blob; says whether it was there, mounted, or sent. */
export async function pushBlob(session: Session, repository: string, source: BlobSource, options: PushBlobOptions = {}): Promise<PushOutcome> {
  if ((await statBlob(session, repository, source.digest)) !== undefined) return 'present';
  let upload: UploadSession | undefined;
  const candidates = (options.mountFrom ?? []).filter((from) => from !== repository);
  for (const [i, from] of candidates.entries()) {
    const answer = await startUpload(session, repository, { mount: source.digest, from });
    if (answer === 'mounted') return 'mounted';
    log('%s: mount of %s from %s refused', session.registry, source.digest, from);
    // A refused mount opens an upload session: the last one is used, the others closed.
    if (i < candidates.length - 1) await cancel(session, repository, answer.location);
    else upload = answer;
  }
  upload ??= (await startUpload(session, repository)) as UploadSession;
  try {
    const limit = options.monolithicLimit ?? 32 * MiB;
    if (source.size <= limit) await finish(session, repository, source, upload.location, true);
    else await finish(session, repository, source, await sendChunks(session, repository, upload, source, options), false);
  } catch (err) {
    await cancel(session, repository, upload.location);
    throw err;
  }
  return 'uploaded';
}

interface UploadSession {
  location: URL;
  /** The smallest chunk the registry takes (OCI-Chunk-Min-Length), 0 when it does not say. */
  minChunk: number;
}

function uploadsPath(repository: string, query?: Record<string, string>): string {
  const search = new URLSearchParams(query).toString();
  return `/v2/${repository}/blobs/uploads/${search ? `?${search}` : ''}`;
}

/** The `Location` of an answer, resolved against where the answer came from. */
function location(response: HttpResponse, exchange: Exchange): URL {
  const text = header(response, 'location');
  if (text === undefined) throw protocolFault(exchange, `a ${response.status} answer to an upload without a Location`);
  return new URL(text, response.url);
}

async function startUpload(session: Session, repository: string, mount?: { mount: string; from: string }): Promise<UploadSession | 'mounted'> {
  const scopes = mount ? [pushScope(repository), pullScope(mount.from)] : [pushScope(repository)];
  const request = { method: 'POST' as const, url: uploadsPath(repository, mount), headers: { 'content-length': '0' } };
  return session.call(request, scopes, async (response, exchange) => {
    if (mount && response.status === 201) {
      await response.body.dump();
      checkDigest(response, exchange, mount.mount);
      return 'mounted';
    }
    if (response.status !== 202) throw await session.fault(response, exchange, `an upload to ${session.registry}/${repository}`);
    await response.body.dump();
    const min = Number(header(response, 'oci-chunk-min-length'));
    return { location: location(response, exchange), minChunk: Number.isSafeInteger(min) && min > 0 ? min : 0 };
  });
}

/** PATCHes the blob in chunks; returns the location the closing PUT goes to. */
async function sendChunks(session: Session, repository: string, upload: UploadSession, source: BlobSource, options: PushBlobOptions): Promise<URL> {
  const chunk = Math.max(options.chunkSize ?? 16 * MiB, upload.minChunk, 1);
  let at = upload.location;
  for (let start = 0; start < source.size; start += chunk) {
    const end = Math.min(source.size, start + chunk);
    const request = {
      method: 'PATCH' as const,
      url: at,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(end - start), 'content-range': `${start}-${end - 1}` },
      body: () => source.stream(start, end),
    };
    at = await session.call(request, [pushScope(repository)], async (response, exchange) => {
      if (response.status !== 202) throw await session.fault(response, exchange, `chunk ${start}-${end - 1} of ${source.digest}`);
      await response.body.dump();
      const range = header(response, 'range');
      if (range !== undefined && range.trim() !== `0-${end - 1}`) {
        throw protocolFault(exchange, `after bytes ${start}-${end - 1} it says it holds ${range}, not 0-${end - 1}`);
      }
      return location(response, exchange);
    });
  }
  return at;
}

/** The closing PUT, with the whole body (monolithic) or none (chunked). */
async function finish(session: Session, repository: string, source: BlobSource, at: URL, withBody: boolean): Promise<void> {
  const url = new URL(at);
  url.searchParams.set('digest', source.digest);
  const request: HttpRequest = withBody
    ? {
        method: 'PUT',
        url,
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(source.size) },
        body: () => source.stream(0, source.size),
      }
    : { method: 'PUT', url, headers: { 'content-length': '0' } };
  await session.call(request, [pushScope(repository)], async (response, exchange) => {
    if (response.status !== 201) throw await session.fault(response, exchange, `the upload of ${source.digest} to ${session.registry}/${repository}`);
    await response.body.dump();
    checkDigest(response, exchange, source.digest);
  });
}

function checkDigest(response: HttpResponse, exchange: Exchange, expected: string): void {
  const reported = header(response, 'docker-content-digest');
  if (reported !== undefined && reported !== expected) {
    throw new CowdiskError(ErrorCode.CORRUPT, `registry ${exchange.registry} stored ${reported} where ${expected} was sent (${exchange.method} ${exchange.url.pathname}); the upload was damaged on the way.`);
  }
}

/** Best effort: a registry that cannot cancel the session expires it itself. */
async function cancel(session: Session, repository: string, at: URL): Promise<void> {
  try {
    await session.call({ method: 'DELETE' as const, url: at }, [pushScope(repository)], async (response) => {
      await response.body.dump();
    });
  } catch (err) {
    log('%s: cancelling the upload session failed: %s', session.registry, (err as Error).message);
  }
}
