/**
 * The TLS handshake of one connection, after the server has answered NBD_OPT_STARTTLS with ACK:
 * node:tls (OpenSSL) takes over the connected socket, and the rest of the negotiation and all of
 * transmission run inside the TLS session it returns. Nothing below node:tls is written here.
 *
 * Each handshake runs in a tls.Server of its own that never listens: the socket is handed to it
 * with the documented 'connection' injection, and the server's 'secureConnection' and
 * 'tlsClientError' events give the outcome with Node's own checks applied (a client certificate
 * verified against the CA under verifyPeer, which a bare TLSSocket would leave to the caller).
 * The price is building the server's SecureContext again per connection (about a millisecond
 * with an RSA-3072 key), paid only by clients that send STARTTLS.
 *
 * A failure becomes a CowdiskError (COWDISK_E_TLS_HANDSHAKE) whose message says what went wrong
 * in the user's terms (the wrong key, a certificate the CA did not sign, none at all, a client
 * that went away) rather than OpenSSL's; it costs this connection only.
 */
import type { Socket } from 'node:net';
import * as tls from 'node:tls';
import { CowdiskError, ErrorCode } from '../errors.js';
import type { HandshakeNotes, TlsCredentials } from './tls-credentials.js';

/**
 * tls.Server's own handshake timer, set out of the way (it reads 0 as its default of 120 s): the
 * connection's handshake timeout, which runs from connect to NBD_OPT_GO, already bounds this.
 */
const NO_LIMIT = 2 ** 31 - 1;

/**
 * Runs the server side of the TLS handshake on `socket`; resolves with the TLS socket to use from
 * now on, or rejects with COWDISK_E_TLS_HANDSHAKE.
 */
export function startTls(socket: Socket, credentials: TlsCredentials): Promise<tls.TLSSocket> {
  const notes: HandshakeNotes = {};
  const server = new tls.Server({ ...credentials.serverOptions(notes), handshakeTimeout: NO_LIMIT });
  return new Promise((resolve, reject) => {
    server.once('secureConnection', (secure: tls.TLSSocket) => resolve(secure));
    server.once('tlsClientError', (err: Error, secure: tls.TLSSocket) => {
      secure.destroy();
      reject(handshakeError(err, secure, notes, credentials));
    });
    server.emit('connection', socket);
  });
}

/** OpenSSL's reason for a failure, in words a person running the server can act on. */
function handshakeError(err: Error & { code?: string; reason?: string }, secure: tls.TLSSocket, notes: HandshakeNotes, credentials: TlsCredentials): CowdiskError {
  const said = `${err.code ?? ''} ${err.reason ?? ''} ${err.message}`;
  let why: string;
  if (notes.unknownIdentity) {
    why = `the client named PSK identity ${JSON.stringify(notes.identity)}, which is not in the PSK file`;
  } else if (secure.authorizationError) {
    why = `the client's certificate is not accepted (${String(secure.authorizationError)}): it must be signed by ca-cert.pem`;
  } else if (/PEER_DID_NOT_RETURN_A_CERTIFICATE|certificate required/i.test(said)) {
    why = 'the client sent no certificate, and --tls-verify-peer requires one signed by ca-cert.pem';
  } else if (credentials.kind === 'psk' && /DECRYPT|BAD_RECORD_MAC|BINDER|bad record mac|decrypt/i.test(said)) {
    why = `the client's key for PSK identity ${JSON.stringify(notes.identity ?? '')} is not the one in the PSK file`;
  } else if (/UNKNOWN_CA|BAD_CERTIFICATE|CERTIFICATE_UNKNOWN|alert unknown ca|alert bad certificate|certificate unknown/i.test(said)) {
    why = "the client does not trust this server's certificate: give the client ca-cert.pem, and a server certificate that names the host it connects to";
  } else if (/WRONG_VERSION_NUMBER|HTTP_REQUEST|UNKNOWN_PROTOCOL|wrong version number|unknown protocol/i.test(said)) {
    why = 'the client did not start TLS after NBD_OPT_STARTTLS was accepted';
  } else if (/NO_SHARED_CIPHER|NO_SUITABLE_SIGNATURE_ALGORITHM|no shared cipher|no suitable signature/i.test(said)) {
    why = credentials.kind === 'psk' ? 'the client offered no pre-shared key: this server authenticates clients with --tls-psk' : 'the client offered no cipher suite this server accepts';
  } else if (err.code === 'ECONNRESET' || /socket hang up|EPIPE/.test(said)) {
    why =
      credentials.kind === 'x509'
        ? "the client closed the connection during the TLS handshake (as a client does that does not trust this server's certificate)"
        : 'the client closed the connection during the TLS handshake';
  } else {
    why = err.message;
  }
  return new CowdiskError(ErrorCode.TLS_HANDSHAKE, `TLS handshake with a client failed: ${why}.`, { cause: err });
}
