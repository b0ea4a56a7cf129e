/**
 * What went wrong talking to a registry, as a CowdiskError a person can act on. Two sources:
 * the network (refused, reset, timed out, an untrusted certificate) and the registry's answer
 * (a status and the spec's error body, `{"errors":[{"code":"MANIFEST_UNKNOWN",...}]}`).
 *
 * A fault is *transient* when trying the same idempotent request again may succeed: network
 * errors, 5xx and 429. A 4xx, a certificate refused, a name that does not resolve are not: the
 * same request would get the same answer. `retry.ts` retries the transient ones only.
 */
import { CowdiskError, ErrorCode } from '../errors.js';

/** A fault that a retry of the same request may cure. Still a REGISTRY error to its catcher. */
export class TransientError extends CowdiskError {
  constructor(
    message: string,
    cause: unknown,
    /** Seconds the registry asked to wait (Retry-After), when it said. */
    readonly retryAfter?: number,
  ) {
    super(ErrorCode.REGISTRY, message, { cause });
  }
}

/** Describes one exchange for messages: `GET https://host/v2/...` and the registry it is for. */
export interface Exchange {
  method: string;
  url: URL;
  registry: string;
}

const TLS_TRUST = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);
const TRANSIENT_NETWORK = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
]);

/**
 * A URL for messages: its query is left out, because a redirect to object storage carries a
 * presigned signature there, which is a credential for as long as it lives.
 */
export function shownUrl(url: URL): string {
  return `${url.origin}${url.pathname}${url.search ? '?…' : ''}`;
}

function errorCode(err: unknown): string | undefined {
  const e = err as { code?: unknown; cause?: { code?: unknown } };
  if (typeof e?.code === 'string' && !e.code.startsWith('COWDISK_E_')) return e.code;
  if (typeof e?.cause?.code === 'string') return e.cause.code;
  return undefined;
}

/** An answer to a TLS hello that is not TLS: the server speaks plain HTTP. */
function notTls(err: unknown): boolean {
  const code = errorCode(err);
  return code === 'EPROTO' || code === 'ERR_SSL_WRONG_VERSION_NUMBER' || /wrong version number|packet length too long/i.test(String((err as Error)?.message));
}

/** Whether a failure (raw, or made a CowdiskError here) says the server speaks plain HTTP, not TLS. */
export function speaksPlainHttp(err: unknown): boolean {
  return notTls(err) || (err instanceof CowdiskError && err.code === ErrorCode.TLS && notTls(err.cause));
}

/** A network-level failure (nothing or only part of an answer came back) as a CowdiskError. */
export function networkFault(err: unknown, exchange: Exchange): CowdiskError {
  if (err instanceof CowdiskError) return err;
  const code = errorCode(err);
  const detail = code ?? (err as Error)?.message ?? String(err);
  const target = `${exchange.method} ${shownUrl(exchange.url)}`;
  if (code !== undefined && TLS_TRUST.has(code)) {
    return new CowdiskError(
      ErrorCode.TLS,
      `${exchange.url.host} presented a certificate this machine does not trust (${code}) for ${target}. ` +
        `If the registry uses a private CA, pass its certificate with --ca-file; if it speaks plain HTTP, use --plain-http.`,
      { cause: err },
    );
  }
  if (notTls(err)) {
    return new CowdiskError(
      ErrorCode.TLS,
      `${exchange.url.host} did not answer TLS for ${target} (${detail}); if the registry speaks plain HTTP, use --plain-http.`,
      { cause: err },
    );
  }
  const who = exchange.url.host === exchange.registry ? `registry ${exchange.registry}` : `${exchange.url.host} (for registry ${exchange.registry})`;
  const message = `${who} is unreachable: ${target} failed (${detail}). Check the address, and that the registry is running and reachable from here.`;
  if (code === 'ENOTFOUND') {
    return new CowdiskError(ErrorCode.REGISTRY, `registry ${exchange.registry}: the host ${exchange.url.hostname} does not resolve (${target}). Check the reference.`, { cause: err });
  }
  if (code !== undefined && TRANSIENT_NETWORK.has(code)) return new TransientError(message, err);
  if (/terminated|other side closed|aborted/i.test(String((err as Error)?.message))) return new TransientError(message, err);
  return new CowdiskError(ErrorCode.REGISTRY, message, { cause: err });
}

export interface SpecError {
  code: string;
  message?: string;
}

/** The spec's error codes from a failed response's body (empty when it is not the spec's JSON). */
export function parseSpecErrors(body: Buffer): SpecError[] {
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { errors?: unknown };
    if (!Array.isArray(parsed.errors)) return [];
    return parsed.errors
      .filter((e): e is SpecError => typeof (e as SpecError)?.code === 'string')
      .map((e) => ({ code: e.code, message: typeof e.message === 'string' ? e.message : undefined }));
  } catch {
    return [];
  }
}

/** What a 404 means, said per the spec's error code. */
function notFoundSentence(exchange: Exchange, what: string, errors: SpecError[]): string {
  const codes = new Set(errors.map((e) => e.code));
  if (codes.has('NAME_UNKNOWN')) return `the repository of ${what} does not exist on ${exchange.registry}; check the reference (or push to it first).`;
  if (codes.has('MANIFEST_UNKNOWN')) return `${what} does not exist (no such tag or manifest); check the tag, or push it first.`;
  if (codes.has('BLOB_UNKNOWN')) return `${what} does not exist in the registry; the chain that names it is incomplete there.`;
  return `${what} was not found (404 from ${exchange.method} ${exchange.url.pathname}).`;
}

/**
 * A response whose status the operation did not expect, as a CowdiskError. `what` names the
 * object (`tag v1 of HOST/REPO`, `blob sha256:... in HOST/REPO`).
 */
export function statusFault(status: number, headers: Record<string, unknown>, body: Buffer, exchange: Exchange, what: string): CowdiskError {
  const errors = parseSpecErrors(body);
  const said = errors.length ? ` (${errors.map((e) => (e.message ? `${e.code}: ${e.message}` : e.code)).join('; ')})` : '';
  const target = `${exchange.method} ${shownUrl(exchange.url)}`;
  if (status === 404) return new CowdiskError(ErrorCode.NOT_FOUND, notFoundSentence(exchange, what, errors));
  if (status === 401 || status === 403) {
    return new CowdiskError(
      ErrorCode.AUTH,
      `${exchange.registry} refused access to ${what} (${status}${said}). Log in with \`docker login ${exchange.registry}\`, or pass --username and --password-stdin, with an account that may do this.`,
    );
  }
  const message = `registry ${exchange.registry} answered ${status} to ${target}${said}.`;
  if (status >= 500 || status === 429) {
    const retryAfter = Number(headers['retry-after']);
    return new TransientError(message, undefined, Number.isFinite(retryAfter) ? retryAfter : undefined);
  }
  return new CowdiskError(ErrorCode.REGISTRY, message);
}

/** A registry that broke the protocol in a way no retry fixes (a wrong Content-Range, a missing header). */
export function protocolFault(exchange: Exchange, sentence: string): CowdiskError {
  return new CowdiskError(ErrorCode.REGISTRY, `registry ${exchange.registry}: ${sentence} (${exchange.method} ${shownUrl(exchange.url)}).`);
}
