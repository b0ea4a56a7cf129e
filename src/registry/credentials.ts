/**
 * Registry credentials, found where every OCI tool finds them: given explicitly (the CLI reads
 * `--username` and `--password-stdin`), or in the Docker client's config file
 * (`$DOCKER_CONFIG/config.json`, by default `~/.docker/config.json`), whose `auths` map is what
 * `docker login`, podman, oras, crane and skopeo write. An entry holds either `auth` (base64 of
 * `user:password`) or `username` and `password`. Its key is the registry as the user typed it to
 * `docker login`: `localhost:5000`, `https://ghcr.io`, or the legacy Docker Hub URL
 * `https://index.docker.io/v1/`, so keys are compared by host and port alone.
 *
 * Credential helpers (`credsStore`, `credHelpers`) run other programs; cowdisk does not run
 * them, but says so when one is configured for the registry, so a refused login is explained.
 *
 * The password never leaves this object except as an Authorization value: it is a private field,
 * so neither `console.log`, `util.inspect` nor `JSON.stringify` shows it.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';

export class Credentials {
  readonly #password: string;

  constructor(
    readonly username: string,
    password: string,
  ) {
    this.#password = password;
  }

  /** The value of an `Authorization: Basic` header (RFC 7617). */
  basic(): string {
    return `Basic ${Buffer.from(`${this.username}:${this.#password}`, 'utf8').toString('base64')}`;
  }

  toJSON(): { username: string } {
    return { username: this.username };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `Credentials { username: ${JSON.stringify(this.username)} }`;
  }
}

export interface CredentialLookup {
  credentials: Credentials | undefined;
  /** Where they came from (a config file's path), or why there are none, for messages. */
  source: string;
  /** A credential helper the config names for this registry, which cowdisk does not run. */
  helper?: string;
}

export interface FindCredentialsOptions {
  /** Overrides `$DOCKER_CONFIG` (a directory holding config.json). */
  configDir?: string;
  env?: NodeJS.ProcessEnv;
}

/** The config file docker would read: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. */
export function dockerConfigPath(options: FindCredentialsOptions = {}): string {
  const env = options.env ?? process.env;
  const dir = options.configDir ?? env.DOCKER_CONFIG ?? join(env.HOME ?? homedir(), '.docker');
  return join(dir, 'config.json');
}

/**
 * The credentials docker would use for `registry` (`HOST[:PORT]`, as in a reference). A missing
 * config file means anonymous access; a config file that is not valid JSON is an error, because
 * going on anonymously would hide the user's mistake behind a confusing refusal.
 */
export function findCredentials(registry: string, options: FindCredentialsOptions = {}): CredentialLookup {
  const path = dockerConfigPath(options);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { credentials: undefined, source: `no ${path}` };
    throw new CowdiskError(ErrorCode.IO, `${path}: cannot read the Docker config (${(err as Error).message}).`, { path, cause: err });
  }
  let config: DockerConfig;
  try {
    config = JSON.parse(text) as DockerConfig;
  } catch (err) {
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `${path} is not valid JSON; fix it, or run docker login ${registry} again.`, {
      path,
      cause: err,
    });
  }
  const wanted = registryKey(registry);
  const entry = Object.entries(config.auths ?? {}).find(([key]) => registryKey(key) === wanted)?.[1];
  const credentials = entry === undefined ? undefined : decodeEntry(entry, path, registry);
  const helperName = Object.entries(config.credHelpers ?? {}).find(([key]) => registryKey(key) === wanted)?.[1] ?? config.credsStore;
  const lookup: CredentialLookup = { credentials, source: credentials ? path : `no entry for ${registry} in ${path}` };
  if (credentials === undefined && helperName) lookup.helper = `docker-credential-${helperName}`;
  return lookup;
}

interface DockerConfig {
  auths?: Record<string, AuthEntry>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
}

interface AuthEntry {
  auth?: string;
  username?: string;
  password?: string;
}

function decodeEntry(entry: AuthEntry, path: string, registry: string): Credentials | undefined {
  if (typeof entry.auth === 'string' && entry.auth !== '') {
    const pair = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = pair.indexOf(':');
    if (colon <= 0) {
      throw new CowdiskError(
        ErrorCode.INVALID_ARGUMENT,
        `${path}: the auth entry for ${registry} is not base64 of user:password; run docker login ${registry} again.`,
        { path },
      );
    }
    return new Credentials(pair.slice(0, colon), pair.slice(colon + 1));
  }
  if (typeof entry.username === 'string' && typeof entry.password === 'string') return new Credentials(entry.username, entry.password);
  return undefined;
}

/**
 * The host and port a config key or reference names, lower-cased: `https://index.docker.io/v1/`
 * and `docker.io` both become `docker.io`, as Docker Hub's login is stored under the former.
 */
export function registryKey(key: string): string {
  let host = key.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '');
  const slash = host.indexOf('/');
  if (slash >= 0) host = host.slice(0, slash);
  host = host.toLowerCase();
  return host === 'index.docker.io' || host === 'registry-1.docker.io' ? 'docker.io' : host;
}
