/**
 * Where an NbdServer listens, and who can reach it: Unix sockets and TCP, each with a safe default.
 *
 * A Unix socket is created mode 0600 (connecting needs write permission on it, so only its owner,
 * and root, can connect) unless `mode` says otherwise. Before, it took whatever the umask left of
 * 0777: 0755 under the usual 022 (still owner-only, since others lack write), but 0775 under 002
 * (the whole group) and 0777 under 0 (everyone). The socket is created with the umask tightened to
 * `mode` for the instant of bind() (Node binds inside listen(), synchronously), so it is never
 * reachable wider than asked, then chmod'ed to `mode` exactly; the umask is only ever tightened,
 * so files others create in that instant are never more open than they would have been.
 *
 * A TCP listener on anything but a loopback address (127.0.0.0/8, ::1) serves the disks to anyone
 * who can reach the port, so it is refused (COWDISK_E_INSECURE) unless the server requires TLS or
 * the caller says, with `insecure`, that it trusts the network. A host name is resolved first and
 * must resolve to loopback addresses only; the listener binds the address that was checked, so
 * the name cannot resolve elsewhere between the check and the bind.
 *
 * A stale Unix socket left by a server that is gone is replaced; a live one is an error.
 */
import { lookup, type LookupAddress } from 'node:dns';
import { promisify } from 'node:util';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';

/** Where to listen: a Unix socket path, or a TCP port (0 picks a free one) on `host` (default 127.0.0.1). */
export type ListenOptions =
  | {
      socket: string;
      /** Permission bits of the socket file (default 0o600: its owner only). */
      mode?: number;
    }
  | {
      port: number;
      host?: string;
      /** Listen on a non-loopback address without TLS required: the network is trusted. */
      insecure?: boolean;
    };

export const DEFAULT_SOCKET_MODE = 0o600;

export interface Listener {
  server: net.Server;
  closed: Promise<void>;
  /** The socket path, or HOST:PORT. */
  address: string;
  socketPath?: string;
  uri(name: string): string;
}

/** Starts `server` listening as `options` say. `tlsRequired`: clients get nothing without TLS. */
export async function startListener(server: net.Server, options: ListenOptions, tlsRequired: boolean): Promise<Listener> {
  const closed = new Promise<void>((resolve) => server.once('close', () => resolve()));
  if ('socket' in options) {
    const socketPath = path.resolve(options.socket);
    await listenUnix(server, socketPath, options.mode ?? DEFAULT_SOCKET_MODE);
    return { server, closed, address: socketPath, socketPath, uri: (name) => unixUri(name, socketPath, tlsRequired) };
  }
  const requested = options.host ?? '127.0.0.1';
  const host = await resolve(requested);
  refuseExposure(host, requested, options.port, tlsRequired, options.insecure ?? false);
  await listenTcp(server, options.port, host);
  const port = (server.address() as net.AddressInfo).port;
  return { server, closed, address: `${host}:${port}`, uri: (name) => tcpUri(name, host, port, tlsRequired) };
}

/** Removes a listener's Unix socket file, once it is closed. */
export function removeSocket(socketPath: string): void {
  try {
    if (fs.lstatSync(socketPath).isSocket()) fs.unlinkSync(socketPath);
  } catch {
    // Already gone.
  }
}

const LOOPBACK = new net.BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/** Whether an IP address is a loopback one: 127.0.0.0/8 or ::1 (and 127.x mapped into IPv6). */
export function isLoopback(address: string): boolean {
  const family = net.isIP(address);
  return family !== 0 && LOOPBACK.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

/**
 * Throws COWDISK_E_INSECURE for a listener that would serve plaintext beyond this machine: a
 * non-loopback `host` without TLS required, unless the network is declared trusted.
 */
export function refuseExposure(host: string, requested: string, port: number, tlsRequired: boolean, insecure: boolean): void {
  if (isLoopback(host) || tlsRequired || insecure) return;
  const where = requested === host ? host : `${requested} (${host})`;
  throw new CowdiskError(
    ErrorCode.INSECURE,
    `Refusing to serve on ${where} port ${port} without TLS: anyone who can reach it could read and write the disks. Use --tls require (with --tls-psk FILE or --tls-certificates DIR), or --insecure-no-tls on a network you trust.`,
  );
}

/**
 * The address to bind for a host name or literal. A name that resolves to any address beyond
 * loopback stands for that address, so that the check refuses it.
 */
async function resolve(host: string): Promise<string> {
  if (net.isIP(host)) return host;
  let addresses: LookupAddress[];
  try {
    addresses = await promisify(lookup)(host, { all: true });
  } catch (err) {
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `--bind ${host}: the name does not resolve (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}).`, { cause: err });
  }
  return (addresses.find((a) => !isLoopback(a.address)) ?? addresses[0]).address;
}

function listenTcp(server: net.Server, port: number, host: string): Promise<void> {
  return new Promise((done, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => reject(listenError(err, `${host}:${port}`));
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      done();
    });
  });
}

async function listenUnix(server: net.Server, socketPath: string, mode: number): Promise<void> {
  const attempt = (): Promise<void> =>
    new Promise((done, reject) => {
      const onError = (err: Error): void => reject(err);
      server.once('error', onError);
      const umask = tightenUmask(mode);
      try {
        server.listen(socketPath, () => {
          server.off('error', onError);
          done();
        });
      } finally {
        if (umask !== undefined) process.umask(umask);
      }
    });
  try {
    await attempt();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || (await socketIsLive(socketPath))) {
      throw listenError(err as NodeJS.ErrnoException, socketPath);
    }
    removeSocket(socketPath);
    try {
      await attempt();
    } catch (again) {
      throw listenError(again as NodeJS.ErrnoException, socketPath);
    }
  }
  try {
    fs.chmodSync(socketPath, mode);
  } catch (err) {
    server.close();
    throw listenError(err as NodeJS.ErrnoException, socketPath);
  }
}

/** Tightens the umask so a socket bound now gets no bit outside `mode`; returns the umask to restore. */
function tightenUmask(mode: number): number | undefined {
  try {
    const old = process.umask(0o777);
    process.umask(old | (0o777 & ~mode));
    return old;
  } catch {
    // Worker threads may not change the umask; the chmod after bind() still sets the mode.
    return undefined;
  }
}

/** Whether something answers on a Unix socket path (a stale one left by a dead server does not). */
function socketIsLive(socketPath: string): Promise<boolean> {
  return new Promise((done) => {
    const probe = net.connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      done(true);
    });
    probe.once('error', () => done(false));
  });
}

function listenError(err: NodeJS.ErrnoException, where: string): CowdiskError {
  if (err.code === 'EADDRINUSE') {
    return new CowdiskError(ErrorCode.EXISTS, `${where} is already in use by another server; choose another --socket or --port.`, { cause: err });
  }
  return new CowdiskError(ErrorCode.IO, `Cannot listen on ${where} (${err.code ?? ''} ${err.message}).`, { cause: err });
}

/**
 * nbd+unix:///NAME?socket=PATH, the form libnbd, qemu and nbdinfo accept; nbds+unix:// when the
 * server requires TLS (libnbd's scheme for "TLS or nothing").
 */
export function unixUri(name: string, socketPath: string, tls = false): string {
  return `${tls ? 'nbds' : 'nbd'}+unix:///${encodeURIComponent(name)}?socket=${socketPath.split('/').map(encodeURIComponent).join('/')}`;
}

/** nbd://HOST:PORT/NAME (IPv6 hosts in brackets); nbds:// when the server requires TLS. */
export function tcpUri(name: string, host: string, port: number, tls = false): string {
  const h = host.includes(':') ? `[${host}]` : host;
  return `${tls ? 'nbds' : 'nbd'}://${h}:${port}/${encodeURIComponent(name)}`;
}
