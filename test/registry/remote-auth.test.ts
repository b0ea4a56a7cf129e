/**
 * The command line against a registry that wants TLS and a login (htpasswd), as a user meets one:
 * `--ca-file`, `--username` with `--password-stdin`, the Docker config's `auths`, and the lazy
 * reads of a later `serve` (which has no login options: it finds the Docker config's).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { startServe } from '../helpers/nbd-cli.js';
import { run } from '../helpers/nbd-tools.js';
import { makeCa, type TestCa } from './pki.js';
import { startRegistry, type TestRegistry } from './registry-server.js';
import { cliWithInput as cli, dockerLogin } from './remote-fixture.js';
import { makeTestChain, type TestChain } from './remote-images.js';

let tmp: string;
let ca: TestCa;
let registry: TestRegistry;
let chain: TestChain;
let ref: string;
/** A Docker config directory holding alice's login for the registry. */
let dockerConfig: string;
let n = 0;
const fresh = (name: string): string => path.join(tmp, `${n++}-${name}`);

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cowdisk-remote-auth-'));
  ca = await makeCa(tmp);
  registry = await startRegistry({ tls: await ca.issue('registry'), htpasswd: { alice: 'alice-secret' } });
  chain = await makeTestChain(tmp);
  ref = `${registry.host}/disks/app:v1`;
  dockerConfig = dockerLogin(fresh('docker'), registry.host, 'alice', 'alice-secret');
});
afterAll(async () => {
  await registry?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('push logs in with --username and --password-stdin, over TLS trusted with --ca-file', async () => {
  const r = await cli(['push', '--ca-file', ca.cert, '--username', 'alice', '--password-stdin', chain.app, ref], { input: 'alice-secret\n' });
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout).toMatch(/2 layers, 2 uploaded/);
});

test('a wrong password is an AUTH error that says how to log in; none at all too', async () => {
  const wrong = await cli(['push', '--ca-file', ca.cert, '--username', 'alice', '--password-stdin', chain.app, ref], { input: 'guess\n' });
  expect([wrong.code, wrong.stderr]).toEqual([1, expect.stringMatching(/docker login .*\[COWDISK_E_AUTH\]/s)]);
  const anonymous = await cli(['clone', '--ca-file', ca.cert, '--cache', fresh('cache'), ref, fresh('vm.cow')]);
  expect([anonymous.code, anonymous.stderr]).toEqual([1, expect.stringMatching(/\[COWDISK_E_AUTH\]/)]);
});

test('--username without --password-stdin is a usage error', async () => {
  const r = await cli(['pull', '--username', 'alice', ref, fresh('x.snap')]);
  expect([r.code, r.stderr]).toEqual([2, expect.stringMatching(/--username and --password-stdin go together/)]);
});

test('without --ca-file the certificate is refused with a TLS error naming --ca-file', async () => {
  const r = await cli(['clone', '--cache', fresh('cache'), ref, fresh('vm.cow')], { docker: dockerConfig });
  expect([r.code, r.stderr]).toEqual([1, expect.stringMatching(/--ca-file.*\[COWDISK_E_TLS\]/s)]);
});

test('clone, pull and a lazy serve log in with the Docker config; the clone remembers the CA file', async () => {
  const cache = fresh('cache');
  const overlay = fresh('vm.cow');
  const clone = await cli(['clone', '--ca-file', ca.cert, '--cache', cache, ref, overlay], { docker: dockerConfig });
  expect(clone.code, clone.stderr).toBe(0);
  const server = await startServe(['--socket', fresh('nbd.sock'), overlay], { env: { ...process.env, DOCKER_CONFIG: dockerConfig } });
  try {
    const out = fresh('copy.raw');
    await run('nbdcopy', [server.uris[0], out]);
    expect(fs.readFileSync(out).equals(chain.contents)).toBe(true);
  } finally {
    await server.stop();
  }
  const pulled = path.join(fresh('pulled'), 'app.snap');
  const pull = await cli(['pull', '--ca-file', ca.cert, '--cache', fresh('cache'), ref, pulled], { docker: dockerConfig });
  expect(pull.code, pull.stderr).toBe(0);
  await run('cmp', [pulled, chain.app]);
});
