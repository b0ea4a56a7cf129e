// @ts-check
/**
 * The registry the remote benchmark measures against: Debian's docker-registry on 127.0.0.1
 * (filesystem storage in the run's directory), and in front of it a counting forwarder, so every
 * byte a clone, a read or a pull moves is seen. Both are stopped by PID. The tests have a richer
 * harness (test/registry/, with faults); a benchmark needs only the counting.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { join } from 'node:path';

/** A port nothing listens on at this instant. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = /** @type {net.AddressInfo} */ (server.address());
      server.close(() => resolve(address.port));
    });
  });
}

/**
 * @param {number} port
 * @param {import('node:child_process').ChildProcess} child
 */
async function waitForPort(port, child) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited at start (${child.exitCode}); is the Debian package docker-registry installed?`);
    const up = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => (socket.destroy(), resolve(true)));
      socket.once('error', () => resolve(false));
    });
    if (up) return;
    if (Date.now() > deadline) throw new Error(`docker-registry did not listen on 127.0.0.1:${port} within 15 s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Starts docker-registry with its storage under `dir`.
 * @param {string} dir
 */
export async function startRegistry(dir) {
  mkdirSync(dir, { recursive: true });
  const port = /** @type {number} */ (await freePort());
  const config = join(dir, 'config.yml');
  writeFileSync(
    config,
    ['version: 0.1', 'log:', '  level: error', '  accesslog:', '    disabled: true', 'storage:', '  filesystem:', `    rootdirectory: ${join(dir, 'storage')}`, 'http:', `  addr: 127.0.0.1:${port}`, ''].join('\n'),
  );
  const child = spawn('docker-registry', ['serve', config], { stdio: 'ignore' });
  child.once('error', () => undefined);
  await waitForPort(port, child);
  return {
    port,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve(undefined);
        child.once('exit', () => resolve(undefined));
        process.kill(/** @type {number} */ (child.pid), 'SIGTERM');
      }),
  };
}

/**
 * A forwarder to 127.0.0.1:`upstream` that counts the response bytes and the requests it passes.
 * @param {number} upstream
 */
export async function startCountingProxy(upstream) {
  const counts = { bytes: 0, requests: 0, ranges: 0 };
  const server = http.createServer((req, res) => {
    counts.requests++;
    if (req.headers.range) counts.ranges++;
    const forward = http.request({ host: '127.0.0.1', port: upstream, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.on('data', (chunk) => {
        counts.bytes += chunk.length;
        res.write(chunk);
      });
      answer.on('end', () => res.end());
    });
    forward.on('error', () => res.destroy());
    req.pipe(forward);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const { port } = /** @type {net.AddressInfo} */ (server.address());
  return {
    host: `127.0.0.1:${port}`,
    counts,
    reset() {
      counts.bytes = 0;
      counts.requests = 0;
      counts.ranges = 0;
    },
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve(undefined));
        server.closeAllConnections();
      }),
  };
}
