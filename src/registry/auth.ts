/**
 * Authentication to one registry, as the distribution spec and Docker's token spec describe it.
 *
 * A registry says what it wants in the 401 to an unauthenticated request:
 * - `Basic realm="..."` (htpasswd): send `Authorization: Basic base64(user:password)`.
 * - `Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"`:
 *   GET the realm with `service` and one `scope` parameter per scope (with Basic credentials when
 *   there are some, anonymously otherwise), read `token` (or the OAuth2 name `access_token`) and
 *   `expires_in` (60 s when absent) from its JSON, and send `Authorization: Bearer <token>`.
 *
 * A scope is `repository:NAME:ACTIONS` (`pull`, `pull,push`). Tokens are cached per set of scopes
 * until shortly before they expire, so a clone reading thousands of blocks asks the token server
 * once a minute, not once a block. Once the registry has said which scheme it uses, later requests
 * carry credentials from the start: a PUT whose body is a file never has to be sent twice.
 *
 * Credentials are never written anywhere: messages name the user and where the credentials came
 * from, never the password or a token.
 */
import { CowdiskError, ErrorCode } from '../errors.js';
import { parseChallenges, type Challenge } from './challenge.js';
import type { CredentialLookup } from './credentials.js';
import { header, readBody, type Transport } from './http.js';
import { protocolFault, statusFault, type Exchange } from './faults.js';

interface CachedToken {
  authorization: string;
  expiresAt: number;
}

/** The token endpoint's answer is small; anything larger is not a token. */
const TOKEN_LIMIT = 1 << 20;
/** The spec's lifetime of a token that does not say. */
const DEFAULT_TOKEN_SECONDS = 60;

/** Scopes for pulling from, and pushing to, a repository. */
export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}
export function pushScope(repository: string): string {
  return `repository:${repository}:pull,push`;
}

/**
 * Merges scopes naming the same resource (`repository:a:pull` + `repository:a:push` becomes
 * `repository:a:pull,push`), sorted, so one set of needs has one cache key.
 */
export function mergeScopes(scopes: Iterable<string>): string[] {
  const byResource = new Map<string, Set<string>>();
  for (const scope of scopes) {
    const cut = scope.lastIndexOf(':');
    if (cut <= 0) continue;
    const resource = scope.slice(0, cut);
    const actions = byResource.get(resource) ?? new Set<string>();
    for (const action of scope.slice(cut + 1).split(',')) if (action !== '') actions.add(action);
    byResource.set(resource, actions);
  }
  return [...byResource].map(([resource, actions]) => `${resource}:${[...actions].sort().join(',')}`).sort();
}

export class Authenticator {
  private scheme: { kind: 'basic' } | { kind: 'bearer'; realm: string; service: string | undefined } | undefined;
  private readonly tokens = new Map<string, CachedToken>();

  constructor(
    private readonly registry: string,
    private readonly lookup: CredentialLookup,
    private readonly transport: Transport,
    private readonly now: () => number = Date.now,
  ) {}

  /** What to send before the registry has asked, once it is known what it asks for. */
  async authorization(scopes: string[]): Promise<string | undefined> {
    if (this.scheme?.kind === 'basic') return this.lookup.credentials?.basic();
    if (this.scheme?.kind === 'bearer') return this.token(this.scheme.realm, this.scheme.service, mergeScopes(scopes));
    return undefined;
  }

  /**
   * The Authorization that answers a 401's challenges, or an AUTH error when sending it again
   * would not help: no credentials for a registry that wants some, or `sent` was already the
   * answer (the credentials are wrong, or do not allow the action).
   */
  async answer(challengeHeader: string | string[] | undefined, scopes: string[], sent: string | undefined): Promise<string> {
    const challenges = parseChallenges(challengeHeader);
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params.realm);
    if (bearer !== undefined) return this.answerBearer(bearer, scopes, sent);
    if (challenges.some((c) => c.scheme === 'basic')) {
      const credentials = this.lookup.credentials;
      if (credentials === undefined) throw this.needsCredentials();
      const basic = credentials.basic();
      if (sent === basic) throw this.refused();
      this.scheme = { kind: 'basic' };
      return basic;
    }
    throw new CowdiskError(
      ErrorCode.AUTH,
      `${this.registry} asks for authentication cowdisk does not speak (WWW-Authenticate: ${challenges.map((c) => c.scheme).join(', ') || 'absent'}); it speaks Basic and Bearer tokens.`,
    );
  }

  private async answerBearer(challenge: Challenge, scopes: string[], sent: string | undefined): Promise<string> {
    const { realm, service, scope, error } = challenge.params;
    const wanted = mergeScopes([...scopes, ...(scope ? scope.split(' ') : [])]);
    const key = wanted.join(' ');
    const cached = this.tokens.get(key);
    if (sent !== undefined && cached?.authorization === sent) {
      // The freshest token for exactly these scopes was refused: asking again gets the same one.
      this.tokens.delete(key);
      if (error === 'insufficient_scope') throw this.refused(`the token service did not grant ${key}`);
      throw this.refused();
    }
    this.scheme = { kind: 'bearer', realm, service };
    this.tokens.delete(key);
    return this.token(realm, service, wanted);
  }

  private async token(realm: string, service: string | undefined, scopes: string[]): Promise<string> {
    const key = scopes.join(' ');
    const cached = this.tokens.get(key);
    if (cached !== undefined && cached.expiresAt > this.now()) return cached.authorization;
    const url = new URL(realm);
    if (service !== undefined) url.searchParams.set('service', service);
    for (const scope of scopes) url.searchParams.append('scope', scope);
    const exchange: Exchange = { method: 'GET', url, registry: this.registry };
    const basic = this.lookup.credentials?.basic();
    const response = await this.transport.send({ method: 'GET', url, headers: { accept: 'application/json' } }, basic);
    const body = await readBody(response, TOKEN_LIMIT, exchange);
    if (response.status === 401 || response.status === 403) throw this.credentials() ? this.refused() : this.needsCredentials();
    if (response.status !== 200) throw statusFault(response.status, response.headers, body, exchange, `a token for ${key || 'the registry'}`);
    let parsed: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown };
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      throw protocolFault(exchange, `the token service did not answer JSON (${header(response, 'content-type') ?? 'no content type'})`);
    }
    const token = typeof parsed.token === 'string' && parsed.token !== '' ? parsed.token : parsed.access_token;
    if (typeof token !== 'string' || token === '') {
      throw new CowdiskError(ErrorCode.AUTH, `the token service at ${url.origin} for ${this.registry} answered without a token.`);
    }
    const seconds = typeof parsed.expires_in === 'number' && parsed.expires_in > 0 ? parsed.expires_in : DEFAULT_TOKEN_SECONDS;
    const issued = typeof parsed.issued_at === 'string' ? Date.parse(parsed.issued_at) : NaN;
    const start = Number.isFinite(issued) ? Math.min(issued, this.now()) : this.now();
    // Renewed a tenth of its life early, so a token does not expire between check and use.
    const authorization = `Bearer ${token}`;
    this.tokens.set(key, { authorization, expiresAt: start + seconds * 900 });
    return authorization;
  }

  private credentials(): boolean {
    return this.lookup.credentials !== undefined;
  }

  private loginHint(): string {
    return `Log in with \`docker login ${this.registry}\`, or pass --username and --password-stdin.`;
  }

  private needsCredentials(): CowdiskError {
    const helper = this.lookup.helper
      ? ` The Docker config keeps them in ${this.lookup.helper}, a credential helper cowdisk does not run; pass --username and --password-stdin.`
      : ` ${this.loginHint()}`;
    return new CowdiskError(ErrorCode.AUTH, `${this.registry} requires credentials and none were found (${this.lookup.source}).${helper}`);
  }

  private refused(why?: string): CowdiskError {
    const who = this.lookup.credentials ? `the credentials of user '${this.lookup.credentials.username}' (from ${this.lookup.source})` : 'anonymous access';
    const detail = why ? `: ${why}` : '';
    return new CowdiskError(ErrorCode.AUTH, `${this.registry} refused ${who}${detail}. ${this.loginHint()}`);
  }
}
