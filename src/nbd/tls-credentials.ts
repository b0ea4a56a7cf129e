/**
 * TLS credentials for the NBD server, in the forms qemu-nbd and nbdkit read, loaded and checked
 * once at start-up so that a mistake is a clear error before anything listens, never a failure
 * on some client's handshake later.
 *
 * Two kinds, one per server (as qemu-nbd's one `tls-creds` object; nbdkit lets `--tls-psk` win
 * over certificates, which hides a mistake, so giving both is refused here):
 * - x509: a directory holding `ca-cert.pem` (the CA that signed the server's certificate, and the
 *   one client certificates must be signed by under `verifyPeer`), `server-cert.pem`,
 *   `server-key.pem`, and optionally `ca-crl.pem` (revoked certificates).
 * - PSK: a file of `identity:hexkey` lines, as `psktool -u NAME -p FILE` writes them. The client
 *   names its identity and proves it holds the key; nothing else authenticates either side.
 *
 * Cipher suites: the x509 server uses Node's defaults (TLS 1.2 and 1.3). PSK needs suites named
 * explicitly (OpenSSL offers none by default): TLS 1.3's, which authenticate with the PSK and
 * add an ephemeral key exchange, then TLS 1.2's PSK suites for older clients, forward-secret ones
 * first. TLS below 1.2 is never offered (the spec: MUST support 1.2, SHOULD NOT offer older).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { CowdiskError, ErrorCode } from '../errors.js';

/** nbdkit's `--tls`: off (STARTTLS refused), on (offered), require (nothing but STARTTLS and ABORT before it). */
export type TlsMode = 'off' | 'on' | 'require';

export interface TlsSettings {
  mode: 'on' | 'require';
  /** A directory in qemu-nbd's and nbdkit's layout (above). */
  certificates?: string;
  /** A psktool file (above). */
  pskFile?: string;
  /** Require a client certificate signed by the directory's `ca-cert.pem` (x509 only). */
  verifyPeer?: boolean;
}

/** What a connection's TLS handshake learnt, for the message when it fails. */
export interface HandshakeNotes {
  /** The PSK identity the client named. */
  identity?: string;
  /** That identity is not in the PSK file. */
  unknownIdentity?: boolean;
}

export interface TlsCredentials {
  readonly mode: 'on' | 'require';
  readonly kind: 'x509' | 'psk';
  readonly verifyPeer: boolean;
  /** Where they came from, for people: "certificates in DIR", "2 PSK identities in FILE". */
  readonly description: string;
  /** Options for the node:tls server one connection's handshake runs in; `notes` collects what it learns. */
  serverOptions(notes: HandshakeNotes): tls.TlsOptions;
}

const X509_FILES = { ca: 'ca-cert.pem', cert: 'server-cert.pem', key: 'server-key.pem', crl: 'ca-crl.pem' } as const;

// AES-GCM before ChaCha20: with the AES instructions every x86-64 and ARMv8 server has, GnuTLS
// clients (libnbd, QEMU) decrypt AES-GCM several times faster (measured here 3.4 GB/s against
// 0.5 GB/s per core), and an external PSK binds a TLS 1.3 session to SHA-256 suites, so OpenSSL
// would otherwise settle on ChaCha20 and the client would cap 1 MiB reads at a few hundred MiB/s.
const PSK_CIPHERS = [
  'TLS_AES_256_GCM_SHA384',
  'TLS_AES_128_GCM_SHA256',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-PSK-CHACHA20-POLY1305',
  'DHE-PSK-AES256-GCM-SHA384',
  'DHE-PSK-AES128-GCM-SHA256',
  'DHE-PSK-CHACHA20-POLY1305',
  'PSK-AES256-GCM-SHA384',
  'PSK-AES128-GCM-SHA256',
  'PSK-CHACHA20-POLY1305',
].join(':');

/** RFC 4279: identities up to 128 bytes; OpenSSL takes keys up to 256 bytes (psktool makes 32). */
const MAX_IDENTITY = 128;
const MAX_KEY = 256;

export function loadTlsCredentials(settings: TlsSettings): TlsCredentials {
  const { certificates, pskFile } = settings;
  const verifyPeer = settings.verifyPeer ?? false;
  if (certificates !== undefined && pskFile !== undefined) {
    throw credentialsError('Give either --tls-certificates or --tls-psk, not both: a server authenticates one way.');
  }
  if (pskFile !== undefined) {
    if (verifyPeer) {
      throw credentialsError('--tls-verify-peer checks client certificates; with --tls-psk the key already authenticates every client. Drop one of them.');
    }
    return pskCredentials(settings.mode, pskFile);
  }
  if (certificates !== undefined) return x509Credentials(settings.mode, certificates, verifyPeer);
  throw credentialsError(`--tls ${settings.mode} needs credentials: --tls-psk FILE (made by psktool) or --tls-certificates DIR (ca-cert.pem, server-cert.pem, server-key.pem).`);
}

function x509Credentials(mode: TlsSettings['mode'], dir: string, verifyPeer: boolean): TlsCredentials {
  const read = (name: string, optional = false): Buffer | undefined => {
    const file = path.join(dir, name);
    try {
      return fs.readFileSync(file);
    } catch (err) {
      if (optional && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw credentialsError(
        `${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): --tls-certificates expects a directory holding ca-cert.pem, server-cert.pem and server-key.pem, as qemu-nbd and nbdkit do.`,
        file,
        err,
      );
    }
  };
  const options: tls.TlsOptions = {
    ca: read(X509_FILES.ca),
    cert: read(X509_FILES.cert),
    key: read(X509_FILES.key),
    crl: read(X509_FILES.crl, true),
    minVersion: 'TLSv1.2',
    requestCert: verifyPeer,
    rejectUnauthorized: verifyPeer,
  };
  try {
    // Parses every PEM and checks that the key matches the certificate, now rather than per client.
    tls.createSecureContext(options);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw credentialsError(
      `The certificates in ${dir} are not usable (${e.code ?? ''} ${e.message}): server-key.pem must be the private key of server-cert.pem, and every file PEM-encoded.`,
      dir,
      err,
    );
  }
  return {
    mode,
    kind: 'x509',
    verifyPeer,
    description: `certificates in ${dir}${verifyPeer ? ', client certificates required' : ''}`,
    serverOptions: () => options,
  };
}

function pskCredentials(mode: TlsSettings['mode'], file: string): TlsCredentials {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw credentialsError(`${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); make one with: psktool -u NAME -p ${file}`, file, err);
  }
  const keys = parsePskFile(text, file);
  return {
    mode,
    kind: 'psk',
    verifyPeer: false,
    description: `${keys.size} PSK ${keys.size === 1 ? 'identity' : 'identities'} in ${file}`,
    serverOptions: (notes) => ({
      ciphers: PSK_CIPHERS,
      // Lets the DHE-PSK suites of TLS 1.2 run with well-known groups.
      dhparam: 'auto',
      minVersion: 'TLSv1.2',
      pskCallback: (_socket: tls.TLSSocket, identity: string) => {
        notes.identity = identity;
        const key = keys.get(identity);
        notes.unknownIdentity = key === undefined;
        return key ?? null;
      },
    }),
  };
}

/** psktool's format: one `identity:hexkey` per line; blank lines are ignored, anything else is an error. */
export function parsePskFile(text: string, file: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '') return;
    const where = `${file} line ${i + 1}`;
    const colon = line.indexOf(':');
    const identity = line.slice(0, colon);
    const hex = line.slice(colon + 1);
    if (colon <= 0 || !/^(?:[0-9a-fA-F]{2})+$/.test(hex)) {
      throw credentialsError(`${where} is not "identity:hexkey" (what psktool -u NAME -p FILE writes).`, file);
    }
    if (Buffer.byteLength(identity, 'utf8') > MAX_IDENTITY) throw credentialsError(`${where}: the identity is longer than ${MAX_IDENTITY} bytes.`, file);
    if (hex.length / 2 > MAX_KEY) throw credentialsError(`${where}: the key is longer than ${MAX_KEY} bytes.`, file);
    if (keys.has(identity)) throw credentialsError(`${where}: identity ${JSON.stringify(identity)} appears twice; keep one key per identity.`, file);
    keys.set(identity, Buffer.from(hex, 'hex'));
  });
  if (keys.size === 0) throw credentialsError(`${file} holds no identities; add one with: psktool -u NAME -p ${file}`, file);
  return keys;
}

function credentialsError(message: string, file?: string, cause?: unknown): CowdiskError {
  return new CowdiskError(ErrorCode.TLS_CREDENTIALS, message, { path: file, cause });
}
