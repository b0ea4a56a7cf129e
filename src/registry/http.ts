/**
 * One HTTP exchange with a registry, over undici: TLS with the system's CAs (plus a `caFile`),
 * timeouts that bound every wait, and redirects followed here rather than by the client library,
 * because where a redirect goes decides what may be sent there. Registries commonly answer a blob
 * GET with a 307 to object storage (S3, a CDN) under a presigned URL; the registry's
 * `Authorization` must not follow it there (it would leak the user's token to another party, and
 * S3 refuses a request that carries two kinds of authentication). So the header is sent while
 * the chain of redirects stays on the origin it started on, and dropped for good once it leaves.
 *
 * Nothing here retries or authenticates: `session.ts` does both around this.
 */
import { readFileSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls';
import { Agent, type Dispatcher } from 'undici';
import { CowdiskError, ErrorCode } from '../errors.js';
import { networkFault, protocolFault, type Exchange } from './faults.js';

export type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface HttpRequest {
  method: Method;
  url: URL;
  headers?: Record<string, string>;
  /** A fresh body each call, so a request can be sent again (after a 401, after a redirect). */
  body?: () => Readable | Buffer;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
  /** Where the answer came from, after redirects. */
  url: URL;
}

export interface TransportOptions {
  /** A PEM file of CA certificates trusted in addition to the system's. */
  caFile?: string;
  /** Milliseconds to wait for a connection (default 10 s). */
  connectTimeoutMs?: number;
  /** Milliseconds to wait for a response's headers, and between two pieces of its body (default 60 s). */
  idleTimeoutMs?: number;
  /** Redirects followed before giving up (default 5). */
  maxRedirects?: number;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
/** The system bundle on Debian and its kin; `SSL_CERT_FILE` names another, as for OpenSSL. */
const SYSTEM_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

function readPem(path: string, what: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if (what === 'system' && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `${path}: cannot read the CA file (${(err as Error).message}).`, { path, cause: err });
  }
}

/**
 * The CAs a registry's certificate may chain to: Node's bundled roots, the system bundle (where
 * an administrator adds a company CA), `NODE_EXTRA_CA_CERTS`, and the caller's `caFile`. Built
 * once per CA file for the process: parsing a few hundred certificates per connection (or per
 * client) would cost more than the request.
 */
const contexts = new Map<string, SecureContext>();

function secureContext(caFile: string | undefined): SecureContext {
  const key = caFile ?? '';
  let context = contexts.get(key);
  if (context === undefined) {
    context = buildSecureContext(caFile);
    contexts.set(key, context);
  }
  return context;
}

function buildSecureContext(caFile: string | undefined): SecureContext {
  const ca: string[] = [...rootCertificates];
  for (const [path, what] of [
    [process.env.SSL_CERT_FILE ?? SYSTEM_BUNDLE, 'system'],
    [process.env.NODE_EXTRA_CA_CERTS, 'system'],
    [caFile, 'caFile'],
  ] as const) {
    if (path === undefined || path === '') continue;
    const pem = readPem(path, what);
    if (pem !== undefined) ca.push(pem);
  }
  try {
    return createSecureContext({ ca });
  } catch (err) {
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `${caFile ?? 'the system CA bundle'}: not a PEM certificate file (${(err as Error).message}).`, {
      path: caFile,
      cause: err,
    });
  }
}

export class Transport {
  private readonly agent: Agent;
  private readonly maxRedirects: number;

  constructor(
    /** `HOST[:PORT]` as the user wrote it, for messages. */
    readonly registry: string,
    options: TransportOptions = {},
  ) {
    const idle = options.idleTimeoutMs ?? 60_000;
    this.agent = new Agent({
      connect: { secureContext: secureContext(options.caFile), timeout: options.connectTimeoutMs ?? 10_000 },
      headersTimeout: idle,
      bodyTimeout: idle,
    });
    this.maxRedirects = options.maxRedirects ?? 5;
  }

  /**
   * Sends the request, following redirects. `authorization` goes with it while the redirects stay
   * on the request's origin. Network failures become CowdiskErrors (transient where a retry may
   * help); every status, including 4xx and 5xx, is returned for the caller to judge.
   */
  async send(request: HttpRequest, authorization?: string): Promise<HttpResponse> {
    const origin = request.url.origin;
    let url = request.url;
    let method = request.method;
    let body = request.body;
    let auth = authorization;
    for (let hop = 0; ; hop++) {
      const exchange: Exchange = { method, url, registry: this.registry };
      const headers: Record<string, string> = { 'user-agent': 'cowdisk', ...request.headers };
      if (auth !== undefined) headers.authorization = auth;
      let answer: Dispatcher.ResponseData;
      try {
        answer = await this.agent.request({ origin: url.origin, path: url.pathname + url.search, method, headers, body: body?.() ?? null });
      } catch (err) {
        throw networkFault(err, exchange);
      }
      const location = answer.headers.location;
      if (!REDIRECTS.has(answer.statusCode) || typeof location !== 'string') {
        return { status: answer.statusCode, headers: answer.headers, body: answer.body, url };
      }
      await answer.body.dump();
      if (hop >= this.maxRedirects) throw protocolFault(exchange, `more than ${this.maxRedirects} redirects`);
      url = new URL(location, url);
      if (url.protocol !== 'https:' && url.protocol !== 'http:') throw protocolFault(exchange, `a redirect to ${url.protocol} is not followed`);
      if (url.origin !== origin) auth = undefined;
      if (answer.statusCode === 303 && method !== 'HEAD') {
        method = 'GET';
        body = undefined;
      }
    }
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}

/**
 * Drops a response's body unread (an answer refused on its headers). undici reports a destroyed
 * body as an abort error; nobody is listening for it any more, so it is silenced here.
 */
export function discard(response: HttpResponse): void {
  response.body.on('error', () => {});
  response.body.destroy();
}

/** The first value of a response header, or undefined. */
export function header(response: HttpResponse, name: string): string | undefined {
  const value = response.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/**
 * Reads a response body whole, refusing more than `limit` bytes (a manifest, an error body, a
 * token), so a hostile or broken server cannot make cowdisk buffer without bound.
 */
export async function readBody(response: HttpResponse, limit: number, exchange: Exchange): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of response.body as AsyncIterable<Buffer>) {
      length += chunk.length;
      if (length > limit) {
        discard(response);
        throw protocolFault(exchange, `the answer is larger than the ${limit} bytes expected`);
      }
      chunks.push(chunk);
    }
  } catch (err) {
    throw networkFault(err, exchange);
  }
  return Buffer.concat(chunks, length);
}
