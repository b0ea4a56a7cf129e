/**
 * What every remote-layer test file starts from: a real registry (its storage in the file's
 * temporary directory, so it can be restarted where it was) behind the counting, fault-injecting
 * proxy, a two-layer chain (remote-images.ts) pushed through the proxy, and a fresh name for
 * every file a test makes. `useRemoteFixture` registers the hooks; its fields are set once
 * `beforeAll` has run.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, beforeEach } from 'vitest';
import { pushImage } from '../../src/index.js';
import { REPO } from '../helpers/cli.js';
import { run } from '../helpers/nbd-tools.js';
import { NO_DOCKER_CONFIG, QUICK_RETRY } from './clients.js';
import { startProxy, type TestProxy } from './fault-proxy.js';
import { startRegistry, type TestRegistry } from './registry-server.js';
import { makeTestChain, type TestChain } from './remote-images.js';

/** Registry access for in-process calls: quick retries, no logins of the machine's. */
export const ACCESS = { retry: QUICK_RETRY, dockerConfigDir: NO_DOCKER_CONFIG };
/** The environment of spawned commands: no logins of the machine's either. */
export const CLI_ENV = { ...process.env, DOCKER_CONFIG: NO_DOCKER_CONFIG };

export interface RemoteFixture {
  registry: TestRegistry;
  /** Where the registry keeps its blobs. */
  storage: string;
  proxy: TestProxy;
  tmp: string;
  chain: TestChain;
  /** The chain, as pushed through the proxy. */
  ref: string;
  /** A path in the test directory that no other test uses. */
  fresh(name: string): string;
}

export function useRemoteFixture(options: { size?: number } = {}): RemoteFixture {
  let n = 0;
  const f = { fresh: (name: string) => path.join(f.tmp, `${n++}-${name}`) } as RemoteFixture;
  beforeAll(async () => {
    f.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cowdisk-remote-'));
    f.storage = f.fresh('registry');
    fs.mkdirSync(f.storage);
    f.registry = await startRegistry({ dir: f.storage });
    f.proxy = await startProxy(f.registry);
    f.chain = await makeTestChain(f.tmp, options);
    f.ref = `${f.proxy.host}/disks/app:v1`;
    await pushImage(f.chain.app, f.ref, ACCESS);
  });
  afterAll(async () => {
    await f.proxy?.close();
    await f.registry?.stop();
    fs.rmSync(f.tmp, { recursive: true, force: true });
  });
  beforeEach(() => f.proxy.reset());
  return f;
}

/** The built CLI with `input` on stdin and the Docker config in `docker` (none by default). */
export function cliWithInput(args: string[], options: { input?: string; docker?: string } = {}) {
  const env = { ...process.env, DOCKER_CONFIG: options.docker ?? NO_DOCKER_CONFIG };
  return run(process.execPath, [`${REPO}bin/cowdisk`, ...args], { input: options.input ?? '', env, allowFailure: true });
}

/** A Docker config directory whose `auths` log `user` in to `registry`. */
export function dockerLogin(dir: string, registry: string, user: string, password: string): string {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ auths: { [registry]: { auth: Buffer.from(`${user}:${password}`).toString('base64') } } }));
  return dir;
}
