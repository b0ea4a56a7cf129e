/**
 * The programs the registry tests drive, found on PATH or failing the test with the Debian
 * package to install (scripts/setup.sh installs them all); nothing is skipped. Also a free
 * loopback port for the servers the tests start: every one binds 127.0.0.1 only.
 */
import { createServer } from 'node:net';
import { tool } from '../helpers/nbd-tools.js';

const PACKAGES: Record<string, string> = {
  'docker-registry': 'docker-registry',
  htpasswd: 'apache2-utils',
  openssl: 'openssl',
};

export function registryTool(name: keyof typeof PACKAGES): string {
  try {
    return tool(name);
  } catch {
    const pkg = PACKAGES[name];
    throw new Error(`${name} is not installed: install the Debian package ${pkg} (apt-get install ${pkg}, or npm run setup)`);
  }
}

/** A port nothing listens on at this instant (the kernel's choice for port 0). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}
