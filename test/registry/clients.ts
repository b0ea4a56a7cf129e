/**
 * Registry clients as the tests make them: retries quick enough for a test (the faults test
 * counts them), and a Docker config directory that does not exist, so the logins of the machine
 * the tests run on never leak into one; a test that wants credentials passes them.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import { RegistryClient, type ClientOptions } from '../../src/registry/client.js';

export const QUICK_RETRY = { attempts: 3, baseDelayMs: 1, maxDelayMs: 5 };
export const NO_DOCKER_CONFIG = path.join(os.tmpdir(), `cowdisk-test-no-docker-config-${process.pid}`);

export function testClient(host: string, options: ClientOptions = {}): RegistryClient {
  return new RegistryClient(host, { retry: QUICK_RETRY, dockerConfigDir: NO_DOCKER_CONFIG, ...options });
}

/** Runs `body` with a fresh client and closes it, whatever happens. */
export async function withClient<T>(host: string, options: ClientOptions, body: (c: RegistryClient) => Promise<T>): Promise<T> {
  const client = testClient(host, options);
  try {
    return await body(client);
  } finally {
    await client.close();
  }
}
