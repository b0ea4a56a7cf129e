/**
 * TLS credentials made for a test by GnuTLS's own tools, as a user makes them (nbdkit-tls(1)):
 * `psktool` for PSK files, `certtool` for a CA, a server certificate for 127.0.0.1 / localhost,
 * client certificates and a revocation list. Directories follow the layouts the clients read: the server's is
 * qemu-nbd's and nbdkit's (ca-cert.pem, server-cert.pem, server-key.pem), a client's is libnbd's
 * and QEMU's (ca-cert.pem, client-cert.pem, client-key.pem), and QEMU's PSK directory holds
 * `keys.psk`. ECDSA keys: generating them takes milliseconds, RSA ones a third of a second each.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { run } from './nbd-tools.js';

export interface Ca {
  cert: string;
  key: string;
}

/** A PSK file with one freshly generated key per identity; returns its path. */
export async function makePsk(dir: string, identities: string[], name = 'keys.psk'): Promise<string> {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  for (const identity of identities) await run('psktool', ['-u', identity, '-p', file]);
  return file;
}

async function privateKey(file: string): Promise<void> {
  await run('certtool', ['--generate-privkey', '--key-type=ecdsa', '--no-text', '--outfile', file]);
}

function template(dir: string, name: string, lines: string[]): string {
  const file = path.join(dir, `${name}.info`);
  fs.writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

/** A self-signed CA in dir (ca-cert.pem, ca-key.pem). */
export async function makeCa(dir: string, cn = 'cowdisk test CA'): Promise<Ca> {
  fs.mkdirSync(dir, { recursive: true });
  const ca = { cert: path.join(dir, 'ca-cert.pem'), key: path.join(dir, 'ca-key.pem') };
  await privateKey(ca.key);
  const info = template(dir, 'ca', [`cn = ${cn}`, 'ca', 'cert_signing_key', 'crl_signing_key', 'expiration_days = 2']);
  await run('certtool', ['--generate-self-signed', '--load-privkey', ca.key, '--template', info, '--no-text', '--outfile', ca.cert]);
  return ca;
}

async function issue(ca: Ca, dir: string, prefix: 'server' | 'client', lines: string[]): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(ca.cert, path.join(dir, 'ca-cert.pem'));
  const key = path.join(dir, `${prefix}-key.pem`);
  await privateKey(key);
  const info = template(dir, prefix, [...lines, 'encryption_key', 'signing_key', 'expiration_days = 2']);
  await run('certtool', [
    '--generate-certificate', '--load-ca-certificate', ca.cert, '--load-ca-privkey', ca.key, '--load-privkey', key,
    '--template', info, '--no-text', '--outfile', path.join(dir, `${prefix}-cert.pem`),
  ]);
}

/** A server directory signed by `ca`, naming 127.0.0.1 and localhost (the only places tests listen). */
export async function makeServerDir(ca: Ca, dir: string): Promise<string> {
  await issue(ca, dir, 'server', ['cn = localhost', 'dns_name = localhost', 'ip_address = 127.0.0.1', 'tls_www_server']);
  return dir;
}

/** A client directory trusting `trusts`, with a client certificate signed by `signedBy` (none when omitted). */
export async function makeClientDir(dir: string, trusts: Ca, signedBy?: Ca): Promise<string> {
  fs.mkdirSync(dir, { recursive: true });
  if (signedBy) await issue(signedBy, dir, 'client', ['cn = cowdisk test client', 'tls_www_client']);
  fs.copyFileSync(trusts.cert, path.join(dir, 'ca-cert.pem'));
  return dir;
}

/** Revokes `cert` (signed by `ca`): writes the CA's revocation list into the server directory as ca-crl.pem. */
export async function revoke(ca: Ca, cert: string, serverDir: string): Promise<void> {
  const info = template(serverDir, 'crl', ['crl_next_update = 2', 'crl_number = 1']);
  await run('certtool', [
    '--generate-crl', '--load-ca-privkey', ca.key, '--load-ca-certificate', ca.cert, '--load-certificate', cert,
    '--template', info, '--no-text', '--outfile', path.join(serverDir, 'ca-crl.pem'),
  ]);
}
