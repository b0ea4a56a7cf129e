/**
 * A token service for the registry's `auth: token:` mode, standing in for Docker Hub's
 * auth.docker.io, Harbor's or GitLab's: node:http on 127.0.0.1, `GET /token?service=&scope=...`
 * with optional Basic credentials, answering `{"token", "expires_in"}`.
 *
 * The token is a JWT the way distribution 2.8 verifies one (registry/auth/token/token.go): ES256
 * over `header.claims`, the signature as r||s; a header whose `x5c` carries the signing
 * certificate and its chain, which must verify up to the registry's `rootcertbundle`; claims
 * `iss` (the registry's `issuer`), `aud` (its `service`), `exp`/`nbf`, and `access`, the list of
 * `{type, name, actions}` granted. Each request is recorded so tests can count them.
 */
import { createPrivateKey, randomBytes, sign, type KeyObject } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { x5cEntry, type CertificateFiles } from './pki.js';

export interface TokenServerOptions {
  /** The signing key's certificate and key; `chain` are the certificates above it, CA excluded. */
  signer: CertificateFiles;
  chain?: string[];
  issuer: string;
  service: string;
  /** Accounts; a request with other credentials gets 401. */
  users: Record<string, string>;
  /** Actions anonymous requests are granted on any repository (none by default). */
  anonymous?: string[];
  /** Actions each user is granted; all requested actions by default. */
  grants?: Record<string, string[]>;
  /** Seconds a token is valid (default 300). */
  expiresIn?: number;
}

export interface TokenRequest {
  user: string | undefined;
  scopes: string[];
  service: string | null;
}

export interface TestTokenServer {
  readonly realm: string;
  readonly requests: TokenRequest[];
  close(): Promise<void>;
}

function base64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

function signJwt(key: KeyObject, x5c: string[], claims: object): string {
  const header = base64url(JSON.stringify({ typ: 'JWT', alg: 'ES256', x5c }));
  const body = base64url(JSON.stringify(claims));
  const signature = sign('sha256', Buffer.from(`${header}.${body}`), { key, dsaEncoding: 'ieee-p1363' });
  return `${header}.${body}.${base64url(signature)}`;
}

/** `Basic` credentials of a request, or undefined; null when present but malformed. */
function basicUser(req: http.IncomingMessage): { user: string; password: string } | undefined | null {
  const value = req.headers.authorization;
  if (value === undefined) return undefined;
  const match = /^Basic (.+)$/i.exec(value);
  if (!match) return null;
  const pair = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = pair.indexOf(':');
  return colon < 0 ? null : { user: pair.slice(0, colon), password: pair.slice(colon + 1) };
}

function granted(scope: string, allowed: string[] | undefined): { type: string; name: string; actions: string[] } | undefined {
  const parts = scope.split(':');
  if (parts.length < 3) return undefined;
  const [type, name, actions] = [parts[0], parts.slice(1, -1).join(':'), parts[parts.length - 1].split(',')];
  return { type, name, actions: allowed === undefined ? actions : actions.filter((a) => allowed.includes(a)) };
}

export async function startTokenServer(options: TokenServerOptions): Promise<TestTokenServer> {
  const key = createPrivateKey(fs.readFileSync(options.signer.key));
  const x5c = [options.signer.cert, ...(options.chain ?? [])].map(x5cEntry);
  const requests: TokenRequest[] = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
    const creds = basicUser(req);
    requests.push({ user: creds?.user, scopes, service: url.searchParams.get('service') });
    if (url.pathname !== '/token') return void res.writeHead(404).end();
    if (creds === null || (creds !== undefined && options.users[creds.user] !== creds.password)) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"wrong username or password"}');
      return;
    }
    const allowed = creds === undefined ? (options.anonymous ?? []) : options.grants?.[creds.user];
    const now = Math.floor(Date.now() / 1000);
    const expiresIn = options.expiresIn ?? 300;
    const token = signJwt(key, x5c, {
      iss: options.issuer,
      sub: creds?.user ?? '',
      aud: options.service,
      exp: now + expiresIn,
      nbf: now - 1,
      iat: now,
      jti: randomBytes(8).toString('hex'),
      access: scopes.map((s) => granted(s, allowed)).filter((g) => g !== undefined && g.actions.length > 0),
    });
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, expires_in: expiresIn, issued_at: new Date(now * 1000).toISOString() }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    realm: `http://127.0.0.1:${port}/token`,
    requests,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
