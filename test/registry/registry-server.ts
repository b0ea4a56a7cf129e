/**
 * A real OCI registry for a test file: Debian's docker-registry (Docker Distribution 2.8), on
 * 127.0.0.1 at a free port, with its config and filesystem storage in a temporary directory.
 * It starts in well under a second, so each test file starts its own in `beforeAll` and stops
 * it, by PID, in `afterAll`. Variants: no auth, htpasswd (`htpasswd -B`), bearer tokens (with
 * the token server of `token-server.ts`), and TLS (with a CA from `pki.ts`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { run } from '../helpers/nbd-tools.js';
import type { CertificateFiles } from './pki.js';
import { freePort, registryTool } from './tools.js';

export interface TokenAuthConfig {
  realm: string;
  service: string;
  issuer: string;
  /** PEM bundle of the CAs a token's signing certificate must chain to. */
  rootCertBundle: string;
}

export interface RegistryOptions {
  /** Users and passwords for htpasswd auth (bcrypt, as `htpasswd -B` writes it). */
  htpasswd?: Record<string, string>;
  token?: TokenAuthConfig;
  tls?: CertificateFiles;
  /** The directory for config and storage; a fresh temporary one by default (removed by stop). */
  dir?: string;
  /** The port to listen on (a registry restarted where it was); a free one by default. */
  port?: number;
}

export interface TestRegistry {
  /** `127.0.0.1:PORT`, as a reference writes it. */
  readonly host: string;
  readonly port: number;
  readonly origin: string;
  readonly dir: string;
  readonly pid: number;
  stop(): Promise<void>;
}

function configYaml(dir: string, port: number, options: RegistryOptions, htpasswdFile: string | undefined): string {
  const lines = [
    'version: 0.1',
    'log:',
    '  level: error',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${path.join(dir, 'storage')}`,
    '  delete:',
    '    enabled: true',
    'http:',
    `  addr: 127.0.0.1:${port}`,
  ];
  if (options.tls) lines.push('  tls:', `    certificate: ${options.tls.cert}`, `    key: ${options.tls.key}`);
  if (htpasswdFile) lines.push('auth:', '  htpasswd:', '    realm: cowdisk-test', `    path: ${htpasswdFile}`);
  if (options.token) {
    const t = options.token;
    lines.push('auth:', '  token:', `    realm: ${t.realm}`, `    service: ${t.service}`, `    issuer: ${t.issuer}`, `    rootcertbundle: ${t.rootCertBundle}`);
  }
  return `${lines.join('\n')}\n`;
}

async function writeHtpasswd(dir: string, users: Record<string, string>): Promise<string> {
  const htpasswd = registryTool('htpasswd');
  const file = path.join(dir, 'htpasswd');
  let text = '';
  for (const [user, password] of Object.entries(users)) {
    // -n prints the entry, -b takes the password as an argument, -B hashes with bcrypt (the only hash distribution accepts).
    text += (await run(htpasswd, ['-nbB', user, password])).stdout.trim() + '\n';
  }
  fs.writeFileSync(file, text);
  return file;
}

/** Resolves once something accepts connections on the port; fails if the registry exits first. */
async function waitForPort(port: number, child: ChildProcess, output: () => string): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`docker-registry exited at start (${child.exitCode ?? child.signalCode}):\n${output()}`);
    const up = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => (socket.destroy(), resolve(true)));
      socket.once('error', () => resolve(false));
    });
    if (up) return;
    if (Date.now() > deadline) throw new Error(`docker-registry did not listen on 127.0.0.1:${port} within 15 s:\n${output()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Stops a child we started, by its PID: SIGTERM, then SIGKILL if it lingers. */
export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  process.kill(child.pid!, 'SIGTERM');
  const timer = setTimeout(() => child.exitCode === null && child.signalCode === null && process.kill(child.pid!, 'SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

export async function startRegistry(options: RegistryOptions = {}): Promise<TestRegistry> {
  const binary = registryTool('docker-registry');
  const dir = options.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'cowdisk-registry-'));
  const htpasswdFile = options.htpasswd ? await writeHtpasswd(dir, options.htpasswd) : undefined;
  const port = options.port ?? (await freePort());
  const config = path.join(dir, 'config.yml');
  fs.writeFileSync(config, configYaml(dir, port, options, htpasswdFile));
  const child = spawn(binary, ['serve', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (output += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (output += s));
  // If the test process dies without its afterAll, the registry must not outlive it.
  const reap = (): void => void (child.exitCode === null && child.signalCode === null && process.kill(child.pid!, 'SIGKILL'));
  process.once('exit', reap);
  try {
    await waitForPort(port, child, () => output);
  } catch (err) {
    await stopChild(child);
    throw err;
  }
  const host = `127.0.0.1:${port}`;
  return {
    host,
    port,
    origin: `${options.tls ? 'https' : 'http'}://${host}`,
    dir,
    pid: child.pid!,
    async stop() {
      process.off('exit', reap);
      await stopChild(child);
      if (options.dir === undefined) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
