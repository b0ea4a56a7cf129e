/**
 * A registry reference, as users type it: `[oci://]HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]`.
 *
 * Unlike Docker's short names there is no default registry: the first path component is always
 * the host, so `localhost:5000/disks/base` and `ghcr.io/acme/base:v1` both say where they live.
 * The repository follows the distribution spec's `<name>` grammar (lower-case components joined
 * by `.`, `_`, `__` or dashes, separated by `/`), a tag its `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`,
 * a digest `sha256:` and 64 lower-case hex digits. A reference with both (`repo:tag@sha256:...`)
 * is accepted as Docker accepts it: the digest is what is fetched, the tag is informative.
 *
 * The scheme is HTTPS, unless the caller asks for plain HTTP, or the host is the machine itself
 * (`localhost`, `127.0.0.1`, `[::1]`, which Docker also treats as insecure registries) and does
 * not speak TLS.
 */
import { CowdiskError, ErrorCode } from '../errors.js';
import { isDigest } from './digest.js';

export interface Reference {
  /** `HOST[:PORT]` as written (IPv6 in brackets), the key credentials are looked up under. */
  readonly registry: string;
  /** The host without port or brackets (`::1` for `[::1]:5000`). */
  readonly hostname: string;
  readonly port: number | undefined;
  /** The repository name inside the registry (`disks/base`). */
  readonly repository: string;
  /** The tag: as given, or `latest` when neither tag nor digest was given. */
  readonly tag: string | undefined;
  readonly digest: string | undefined;
}

const DEFAULT_TAG = 'latest';
const COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const REPOSITORY = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const HOST_LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?';
const DOMAIN = new RegExp(`^${HOST_LABEL}(?:\\.${HOST_LABEL})*$`);
/** Many clients cap `HOST/REPO` at 255 characters (the spec's implementers note). */
const MAX_NAME = 255;
/** Hosts Docker trusts over plain HTTP without being told: the machine itself. */
const LOOPBACK = new Set(['localhost', '127.0.0.1', '::1']);

function malformed(text: string, why: string): CowdiskError {
  return new CowdiskError(
    ErrorCode.INVALID_ARGUMENT,
    `'${text}' is not a registry reference: ${why}. Write HOST[:PORT]/REPO[:TAG|@sha256:DIGEST], e.g. localhost:5000/disks/base:v1.`,
  );
}

/** Parses REF; a malformed one is an INVALID_ARGUMENT error that says which part is wrong. */
export function parseReference(text: string): Reference {
  let rest = text.trim();
  if (rest.startsWith('oci://')) rest = rest.slice('oci://'.length);
  else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(rest)) {
    throw malformed(text, 'the only scheme allowed is oci:// (plain HTTP is chosen with --plain-http, not http://)');
  }
  const slash = rest.indexOf('/');
  if (slash <= 0) throw malformed(text, 'it has no HOST/ in front of the repository');
  const registry = rest.slice(0, slash);
  const { hostname, port } = parseHost(text, registry);
  let name = rest.slice(slash + 1);

  let digest: string | undefined;
  const at = name.indexOf('@');
  if (at >= 0) {
    digest = name.slice(at + 1);
    name = name.slice(0, at);
    if (!isDigest(digest)) throw malformed(text, `'${digest}' is not a digest (sha256: and 64 lower-case hex digits)`);
  }
  let tag: string | undefined;
  const colon = name.lastIndexOf(':');
  if (colon >= 0) {
    tag = name.slice(colon + 1);
    name = name.slice(0, colon);
    if (!TAG.test(tag)) throw malformed(text, `'${tag}' is not a tag (letters, digits, '_', '.', '-'; at most 128; not starting with '.' or '-')`);
  }
  if (!REPOSITORY.test(name)) {
    throw malformed(text, `'${name}' is not a repository name (lower-case letters and digits, separated by '.', '_', '-' or '/')`);
  }
  if (registry.length + 1 + name.length > MAX_NAME) throw malformed(text, `HOST/REPO is longer than ${MAX_NAME} characters`);
  if (tag === undefined && digest === undefined) tag = DEFAULT_TAG;
  return { registry, hostname, port, repository: name, tag, digest };
}

function parseHost(text: string, registry: string): { hostname: string; port: number | undefined } {
  let hostname: string;
  let portText: string | undefined;
  if (registry.startsWith('[')) {
    const close = registry.indexOf(']');
    if (close < 0) throw malformed(text, `'${registry}' opens an IPv6 address with '[' but never closes it`);
    hostname = registry.slice(1, close);
    const after = registry.slice(close + 1);
    if (after !== '' && !after.startsWith(':')) throw malformed(text, `'${registry}' has text after the IPv6 address`);
    if (!/^[0-9A-Fa-f:.]+$/.test(hostname) || !hostname.includes(':')) throw malformed(text, `'${hostname}' is not an IPv6 address`);
    if (after !== '') portText = after.slice(1);
  } else {
    const colon = registry.indexOf(':');
    hostname = colon < 0 ? registry : registry.slice(0, colon);
    if (colon >= 0) portText = registry.slice(colon + 1);
    if (!DOMAIN.test(hostname)) throw malformed(text, `'${hostname}' is not a host name or address`);
  }
  if (portText === undefined) return { hostname, port: undefined };
  const port = /^[0-9]{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 1 && port <= 65535)) throw malformed(text, `'${portText}' is not a port (1 to 65535)`);
  return { hostname, port };
}

/**
 * Whether `text`, where a file or a reference may stand (`clone PARENT`), means a reference:
 * `oci://...`, or a first component that can only be a registry host, as Docker tells them
 * apart: it holds a `.` or a `:`, is `localhost`, or is an IPv6 address in brackets (`.` and
 * `..` are directories). The caller takes a path that exists as a path before asking.
 */
export function looksLikeReference(text: string): boolean {
  if (text.startsWith('oci://')) return true;
  const slash = text.indexOf('/');
  if (slash <= 0) return false;
  const first = text.slice(0, slash);
  if (first === '.' || first === '..') return false;
  return first === 'localhost' || first.startsWith('[') || first.includes('.') || first.includes(':');
}

/** What the manifest endpoint is asked for: the digest when there is one, else the tag. */
export function manifestReference(ref: Reference): string {
  return ref.digest ?? ref.tag ?? DEFAULT_TAG;
}

/** `HOST/REPO:TAG` or `HOST/REPO@DIGEST`, for messages. */
export function formatReference(ref: Reference): string {
  const base = `${ref.registry}/${ref.repository}`;
  if (ref.digest !== undefined) return `${base}@${ref.digest}`;
  return `${base}:${ref.tag ?? DEFAULT_TAG}`;
}

export interface SchemeOptions {
  /** Speak plain HTTP to this registry even though it is not the machine itself (`--plain-http`). */
  plainHttp?: boolean;
}

/**
 * The origins to speak to a registry at, in order of preference. HTTPS, except with `plainHttp`;
 * for the machine itself, HTTPS then plain HTTP, as Docker tries a registry it treats as
 * insecure: the second is used only if the first does not speak TLS at all (a certificate that
 * fails verification is an error, never a reason to fall back).
 */
export function registryOrigins(registry: string, options: SchemeOptions = {}): string[] {
  const { hostname } = parseHost(registry, registry);
  const host = apiHost(registry);
  if (options.plainHttp === true) return [`http://${host}`];
  if (LOOPBACK.has(hostname.toLowerCase())) return [`https://${host}`, `http://${host}`];
  return [`https://${host}`];
}

/**
 * Docker Hub's name (`docker.io`, as `docker login` and references write it) is not the host
 * its API answers on.
 */
function apiHost(registry: string): string {
  return registry === 'docker.io' || registry === 'index.docker.io' ? 'registry-1.docker.io' : registry;
}
