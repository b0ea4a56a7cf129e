/**
 * Credentials as docker login leaves them in a Docker config, the keys it writes them under,
 * what happens when there is none or it is broken, and that a password never shows in logs.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { inspect } from 'node:util';
import { afterAll, describe, expect, test } from 'vitest';
import { Credentials, dockerConfigPath, findCredentials } from '../../src/registry/credentials.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cowdisk-creds-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;

function config(content: unknown): string {
  const dir = path.join(root, String(n++));
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'config.json'), typeof content === 'string' ? content : JSON.stringify(content));
  return dir;
}

const b64 = (s: string): string => Buffer.from(s).toString('base64');
const basicOf = (user: string, password: string): string => `Basic ${b64(`${user}:${password}`)}`;

describe('findCredentials', () => {
  test.each([
    ['localhost:5000', 'localhost:5000'],
    ['https://localhost:5000', 'localhost:5000'],
    ['http://localhost:5000/', 'localhost:5000'],
    ['GHCR.io', 'ghcr.io'],
    ['https://index.docker.io/v1/', 'docker.io'],
  ])('an auth entry under %s serves %s', (key, registry) => {
    const dir = config({ auths: { [key]: { auth: b64('alice:pa:ss') } } });
    const found = findCredentials(registry, { configDir: dir });
    expect(found.credentials?.username).toBe('alice');
    // The password keeps its own colons: only the first one separates it from the user.
    expect(found.credentials?.basic()).toBe(basicOf('alice', 'pa:ss'));
    expect(found.source).toBe(path.join(dir, 'config.json'));
  });

  test('username and password fields serve as well as auth', () => {
    const dir = config({ auths: { 'reg:1': { username: 'bob', password: 'pw' } } });
    expect(findCredentials('reg:1', { configDir: dir }).credentials?.basic()).toBe(basicOf('bob', 'pw'));
  });

  test('another registry entry does not serve; the port counts', () => {
    const dir = config({ auths: { 'reg:1': { auth: b64('a:b') } } });
    expect(findCredentials('reg:2', { configDir: dir })).toMatchObject({ credentials: undefined, source: expect.stringContaining('no entry for reg:2') });
  });

  test('$DOCKER_CONFIG names the directory; ~/.docker is the default', () => {
    expect(dockerConfigPath({ env: { DOCKER_CONFIG: '/etc/dc' } })).toBe('/etc/dc/config.json');
    expect(dockerConfigPath({ env: { HOME: '/home/u' } })).toBe('/home/u/.docker/config.json');
    const dir = config({ auths: { r: { auth: b64('env:user') } } });
    expect(findCredentials('r', { env: { DOCKER_CONFIG: dir } }).credentials?.username).toBe('env');
  });

  test('no config file is anonymous access, said so', () => {
    expect(findCredentials('r', { configDir: path.join(root, 'absent') })).toEqual({ credentials: undefined, source: `no ${path.join(root, 'absent', 'config.json')}` });
  });

  test('a credential helper for the registry is named, since cowdisk does not run it', () => {
    expect(findCredentials('ecr.example', { configDir: config({ credHelpers: { 'ecr.example': 'ecr-login' } }) }).helper).toBe('docker-credential-ecr-login');
    expect(findCredentials('r', { configDir: config({ credsStore: 'desktop' }) }).helper).toBe('docker-credential-desktop');
  });

  test('a config that is not JSON, or an auth that is not user:password, is an error, not anonymous access', () => {
    expect(() => findCredentials('r', { configDir: config('{not json') })).toThrow(expect.objectContaining({ code: 'COWDISK_E_INVALID_ARGUMENT', message: expect.stringMatching(/not valid JSON.*docker login r/) }));
    expect(() => findCredentials('r', { configDir: config({ auths: { r: { auth: b64('nocolon') } } }) })).toThrow(/not base64 of user:password/);
  });
});

describe('Credentials', () => {
  test('the password shows in neither inspect, JSON nor string form', () => {
    const c = new Credentials('alice', 'hunter2-secret');
    for (const shown of [inspect(c), JSON.stringify(c), String(c), inspect({ nested: c }, { depth: 5 })]) {
      expect(shown).not.toContain('hunter2');
    }
    expect(inspect(c)).toContain('alice');
  });
});
