/**
 * Manifests: fetched by tag or digest, pushed under a tag, resolved from a tag to a digest.
 *
 * A manifest is addressed by the SHA-256 of its exact bytes, so it is kept as bytes, never
 * re-serialised. Fetched by digest, it is checked against that digest; fetched by tag, against
 * the `Docker-Content-Digest` the registry reports when it reports one (the spec: a client that
 * uses the header must verify it). The request accepts the image index and Docker's types too,
 * so that a reference to something else is recognised and refused by name rather than met with a
 * registry's guess at a conversion.
 */
import { CowdiskError, ErrorCode } from '../errors.js';
import { pullScope, pushScope } from './auth.js';
import { digestMismatch, isDigest, sha256Digest } from './digest.js';
import { protocolFault } from './faults.js';
import { header, readBody } from './http.js';
import { contentLength, type Session } from './session.js';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const ACCEPT = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST].join(', ');

/** The spec asks registries to take manifests of at least 4 MiB; none bigger is read. */
export const MANIFEST_LIMIT = 4 * 1024 * 1024;

export interface FetchedManifest {
  bytes: Buffer;
  digest: string;
  /** The Content-Type the registry served it with (parameters dropped). */
  mediaType: string;
}

export interface ManifestInfo {
  digest: string;
  mediaType: string;
  size: number | undefined;
}

function manifestPath(repository: string, reference: string): string {
  return `/v2/${repository}/manifests/${reference}`;
}

function manifestName(session: Session, repository: string, reference: string): string {
  return isDigest(reference) ? `manifest ${reference} of ${session.registry}/${repository}` : `tag ${reference} of ${session.registry}/${repository}`;
}

function mediaTypeOf(contentType: string | undefined): string {
  return (contentType ?? '').split(';')[0].trim();
}

/** The manifest at a tag or digest, with its digest; NOT_FOUND when there is none. */
export function getManifest(session: Session, repository: string, reference: string): Promise<FetchedManifest> {
  const what = manifestName(session, repository, reference);
  const request = { method: 'GET' as const, url: manifestPath(repository, reference), headers: { accept: ACCEPT } };
  return session.call(request, [pullScope(repository)], async (response, exchange) => {
    if (response.status !== 200) throw await session.fault(response, exchange, what);
    const bytes = await readBody(response, MANIFEST_LIMIT, exchange);
    const digest = sha256Digest(bytes);
    const expected = isDigest(reference) ? reference : header(response, 'docker-content-digest');
    if (expected !== undefined && expected !== digest) throw digestMismatch(what, expected, digest);
    return { bytes, digest, mediaType: mediaTypeOf(header(response, 'content-type')) };
  });
}

/** What a tag points at, without fetching the manifest (HEAD); NOT_FOUND when the tag is absent. */
export async function resolveManifest(session: Session, repository: string, reference: string): Promise<ManifestInfo> {
  const what = manifestName(session, repository, reference);
  const request = { method: 'HEAD' as const, url: manifestPath(repository, reference), headers: { accept: ACCEPT } };
  const info = await session.call(request, [pullScope(repository)], async (response, exchange) => {
    if (response.status !== 200) throw await session.fault(response, exchange, what);
    await response.body.dump();
    const digest = header(response, 'docker-content-digest');
    if (digest === undefined) return undefined;
    if (!isDigest(digest)) throw protocolFault(exchange, `Docker-Content-Digest '${digest}' is not a sha256 digest`);
    if (isDigest(reference) && digest !== reference) throw digestMismatch(what, reference, digest);
    return { digest, mediaType: mediaTypeOf(header(response, 'content-type')), size: contentLength(response) };
  });
  if (info !== undefined) return info;
  // Registries older than the spec may not say the digest; the manifest itself then tells.
  const fetched = await getManifest(session, repository, reference);
  return { digest: fetched.digest, mediaType: fetched.mediaType, size: fetched.bytes.length };
}

/**
 * Stores `bytes` as a manifest of `mediaType` under `reference` (a tag, or its own digest) and
 * returns its digest. The blobs it names must be pushed first: a registry may refuse a manifest
 * whose blobs it lacks (MANIFEST_BLOB_UNKNOWN).
 */
export function putManifest(session: Session, repository: string, reference: string, bytes: Buffer, mediaType: string): Promise<string> {
  const digest = sha256Digest(bytes);
  if (isDigest(reference) && reference !== digest) {
    return Promise.reject(new CowdiskError(ErrorCode.INVALID_ARGUMENT, `a manifest pushed by digest must be pushed under its own digest ${digest}, not ${reference}.`));
  }
  const request = {
    method: 'PUT' as const,
    url: manifestPath(repository, reference),
    headers: { 'content-type': mediaType, 'content-length': String(bytes.length) },
    body: () => bytes,
  };
  return session.call(request, [pushScope(repository)], async (response, exchange) => {
    if (response.status !== 201) throw await session.fault(response, exchange, `the manifest for ${reference} in ${session.registry}/${repository}`);
    await response.body.dump();
    const reported = header(response, 'docker-content-digest');
    if (reported !== undefined && reported !== digest) throw digestMismatch(`the manifest stored in ${session.registry}/${repository}`, digest, reported);
    return digest;
  });
}
