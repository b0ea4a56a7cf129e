/**
 * A conversation with one registry: where it is (scheme and origin), who we are to it
 * (credentials, tokens), and how hard to try. Every operation enters through `call`, which
 * - settles the origin on first use: for the machine itself, HTTPS when it speaks TLS, plain
 *   HTTP when it does not (`registryOrigins`);
 * - adds what the registry's authentication wants, answering a 401 once with fresh credentials;
 * - for GET and HEAD, retries network failures, 5xx and 429 with backoff (`retry.ts`), reading
 *   the answer inside the retry so a connection lost mid-body is retried too;
 * - never retries a 4xx, nor a request with a body (POST, PUT, PATCH): those are not idempotent.
 */
import { CowdiskError, ErrorCode } from '../errors.js';
import { Authenticator } from './auth.js';
import { Credentials, findCredentials, type CredentialLookup } from './credentials.js';
import { networkFault, speaksPlainHttp, statusFault, type Exchange } from './faults.js';
import { discard, header, readBody, Transport, type HttpRequest, type HttpResponse, type Method, type TransportOptions } from './http.js';
import { registryOrigins } from './reference.js';
import { DEFAULT_RETRY, NO_RETRY, withRetries, type RetryPolicy } from './retry.js';

export interface SessionOptions extends TransportOptions {
  /** Plain HTTP to a registry that is not the machine itself (`--plain-http`). */
  plainHttp?: boolean;
  /** Explicit credentials (`--username` with `--password-stdin`); otherwise the Docker config's. */
  credentials?: Credentials;
  /** The directory of the Docker config to read credentials from (default `$DOCKER_CONFIG`, `~/.docker`). */
  dockerConfigDir?: string;
  retry?: RetryPolicy;
}

/** Error bodies are a few hundred bytes of JSON; more is not worth reading. */
const ERROR_BODY_LIMIT = 64 * 1024;
const IDEMPOTENT: ReadonlySet<Method> = new Set(['GET', 'HEAD']);

/** A request as operations write it: `url` may be a path on the registry (`/v2/...`). */
export type SessionRequest = Omit<HttpRequest, 'url'> & { url: URL | string };

export class Session {
  private readonly origins: string[];
  /** The origin in use, once settled. */
  private origin: Promise<string> | undefined;
  private readonly transport: Transport;
  private readonly auth: Authenticator;
  private readonly retry: RetryPolicy;

  constructor(
    /** `HOST[:PORT]` as in a reference. */
    readonly registry: string,
    options: SessionOptions = {},
  ) {
    this.origins = registryOrigins(registry, options);
    this.transport = new Transport(registry, options);
    const lookup: CredentialLookup = options.credentials
      ? { credentials: options.credentials, source: 'the command line' }
      : findCredentials(registry, { configDir: options.dockerConfigDir });
    this.auth = new Authenticator(registry, lookup, this.transport);
    this.retry = options.retry ?? DEFAULT_RETRY;
  }

  /**
   * The origin to use: the only candidate, or the first that answers HTTP over its scheme. A
   * failure to reach the registry at all is not settled, so the next call tries again.
   */
  private settleOrigin(): Promise<string> {
    if (this.origins.length === 1) return Promise.resolve(this.origins[0]);
    this.origin ??= (async () => {
      const [preferred, fallback] = this.origins;
      try {
        const response = await this.transport.send({ method: 'GET', url: new URL('/v2/', preferred) });
        await response.body.dump();
        return preferred;
      } catch (err) {
        if (speaksPlainHttp(err)) return fallback;
        throw err;
      }
    })().catch((err: unknown) => {
      this.origin = undefined;
      throw err;
    });
    return this.origin;
  }

  /**
   * Sends `request` with the authorization `scopes` need and hands the answer to `handle`, which
   * judges the status (calling `fault` for the ones it does not expect) and reads what it needs.
   * Transient faults of idempotent requests are retried, `handle` included.
   */
  call<T>(request: SessionRequest, scopes: string[], handle: (response: HttpResponse, exchange: Exchange) => Promise<T>): Promise<T> {
    const policy = IDEMPOTENT.has(request.method) ? this.retry : NO_RETRY;
    return withRetries(policy, async () => {
      const url = typeof request.url === 'string' ? new URL(request.url, await this.settleOrigin()) : request.url;
      const response = await this.authenticated({ ...request, url }, scopes);
      const exchange: Exchange = { method: request.method, url: response.url, registry: this.registry };
      if (response.status >= 500 || response.status === 429) throw await this.fault(response, exchange, 'the request');
      try {
        return await handle(response, exchange);
      } catch (err) {
        discard(response);
        throw networkFault(err, exchange);
      }
    });
  }

  /** The error for an answer the operation did not expect; `what` names the object asked for. */
  async fault(response: HttpResponse, exchange: Exchange, what: string): Promise<CowdiskError> {
    let body: Buffer = Buffer.alloc(0);
    try {
      body = await readBody(response, ERROR_BODY_LIMIT, exchange);
    } catch {
      // The status says enough; an unreadable error body must not hide it.
    }
    return statusFault(response.status, response.headers, body, exchange, what);
  }

  private async authenticated(request: HttpRequest, scopes: string[]): Promise<HttpResponse> {
    let authorization = await this.auth.authorization(scopes);
    // Three sends at most: anonymous, then with credentials, then with credentials for the wider
    // scope a registry may name only once it knows who asks; a third 401 is a refusal.
    for (let sent = 1; ; sent++) {
      const response = await this.transport.send(request, authorization);
      if (response.status !== 401) return response;
      await response.body.dump();
      if (sent === 3) {
        throw new CowdiskError(ErrorCode.AUTH, `${this.registry} kept refusing ${request.method} ${request.url.pathname}; log in with \`docker login ${this.registry}\`, or pass --username and --password-stdin.`);
      }
      authorization = await this.auth.answer(response.headers['www-authenticate'], scopes, authorization);
    }
  }

  close(): Promise<void> {
    return this.transport.close();
  }
}

/** `Content-Length` as a number, or undefined when absent or not a length. */
export function contentLength(response: HttpResponse): number | undefined {
  const text = header(response, 'content-length');
  if (text === undefined || !/^[0-9]+$/.test(text)) return undefined;
  return Number(text);
}
