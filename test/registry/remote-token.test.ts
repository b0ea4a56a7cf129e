/**
 * The command line against a registry in bearer-token mode (the distribution spec's
 * `WWW-Authenticate: Bearer realm=...` flow, as Docker Hub, GHCR and Harbor speak it), with the
 * test's token server: push with `--username` / `--password-stdin`, then a lazy clone whose blocks a
 * later `serve` fetches with tokens it gets from the Docker config's login.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { startServe } from '../helpers/nbd-cli.js';
import { run } from '../helpers/nbd-tools.js';
import { makeCa } from './pki.js';
import { startRegistry, type TestRegistry } from './registry-server.js';
import { cliWithInput as cli, dockerLogin } from './remote-fixture.js';
import { makeTestChain, type TestChain } from './remote-images.js';
import { startTokenServer, type TestTokenServer } from './token-server.js';

const SERVICE = 'cowdisk-test-registry';
const ISSUER = 'cowdisk-test-issuer';
let tmp: string;
let tokens: TestTokenServer;
let registry: TestRegistry;
let chain: TestChain;
let ref: string;
let dockerConfig: string;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cowdisk-remote-token-'));
  const ca = await makeCa(tmp, 'token CA');
  tokens = await startTokenServer({ signer: await ca.issue('token signer'), issuer: ISSUER, service: SERVICE, users: { alice: 'alice-secret' } });
  registry = await startRegistry({ token: { realm: tokens.realm, service: SERVICE, issuer: ISSUER, rootCertBundle: ca.cert } });
  chain = await makeTestChain(tmp);
  ref = `${registry.host}/disks/app:v1`;
  dockerConfig = dockerLogin(path.join(tmp, 'docker'), registry.host, 'alice', 'alice-secret');
});
afterAll(async () => {
  await registry?.stop();
  await tokens?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('push gets a push token with --username and --password-stdin; a lazy clone served later fetches with pull tokens from the Docker config', async () => {
  const push = await cli(['push', '--username', 'alice', '--password-stdin', chain.app, ref], { input: 'alice-secret' });
  expect(push.code, push.stderr).toBe(0);
  expect(tokens.requests.some((r) => r.user === 'alice' && r.scopes.includes('repository:disks/app:pull,push'))).toBe(true);

  const denied = await cli(['clone', '--cache', path.join(tmp, 'cache0'), ref, path.join(tmp, 'denied.cow')]);
  expect([denied.code, denied.stderr]).toEqual([1, expect.stringMatching(/\[COWDISK_E_AUTH\]/)]);

  const overlay = path.join(tmp, 'vm.cow');
  const clone = await cli(['clone', '--cache', path.join(tmp, 'cache'), ref, overlay], { docker: dockerConfig });
  expect(clone.code, clone.stderr).toBe(0);
  tokens.requests.length = 0;
  const server = await startServe(['--socket', path.join(tmp, 'nbd.sock'), overlay], { env: { ...process.env, DOCKER_CONFIG: dockerConfig } });
  try {
    const out = path.join(tmp, 'copy.raw');
    await run('nbdcopy', [server.uris[0], out]);
    expect(fs.readFileSync(out).equals(chain.contents)).toBe(true);
  } finally {
    await server.stop();
  }
  expect(tokens.requests.length).toBeGreaterThan(0);
  expect(tokens.requests.every((r) => r.user === 'alice' && r.scopes.every((s) => s === 'repository:disks/app:pull'))).toBe(true);
});
