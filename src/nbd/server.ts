/**
 * NbdServer: serves a set of named exports over any number of listeners (Unix sockets, TCP), over
 * sockets handed to it (`handleConnection`), and straight into the transmission phase for the
 * kernel's nbd driver, which negotiates nothing (`serveTransmission`).
 *
 * Every connection to an export shares that export's one BlockDevice, which is what lets the server
 * advertise CAN_MULTI_CONN: a flush on any connection covers writes answered on all of them.
 *
 * The first export is also the default export "" (unless one is literally named ""). The server
 * owns the devices: `close()` stops accepting, lets every connection finish what is in flight,
 * and then closes each device once (which flushes it and clears its dirty flag).
 */
import * as net from 'node:net';
import { debuglog } from 'node:util';
import { CowdiskError, ErrorCode } from '../errors.js';
import { Limit } from './constants.js';
import { Connection, type ConnectionOwner } from './connection.js';
import type { ExportConfig } from './exports.js';
import { removeSocket, startListener, type Listener, type ListenOptions } from './listeners.js';
import { offeredContexts, type MetaContext } from './meta-context.js';
import type { TlsCredentials } from './tls-credentials.js';
import { DEFAULT_POLL_US, Poller } from './poller.js';

const debug = debuglog('nbd');

export interface NbdServerOptions {
  /** At least one; names unique. The first is also the default export "". */
  exports: ExportConfig[];
  /** Connections beyond this many are closed at once (default: no limit). */
  maxConnections?: number;
  /**
   * How long a closing connection may take to hand its last replies to the client, in
   * milliseconds, before it is cut (default 10 s): a client that never reads cannot hold
   * `close()` open.
   */
  drainTimeout?: number;
  /**
   * How long a client may take from connecting to the end of its handshake (NBD_OPT_GO or
   * EXPORT_NAME), in milliseconds, before it is disconnected (default 10 s; 0: no limit). A client
   * that connects and says nothing cannot hold a connection slot.
   */
  handshakeTimeout?: number;
  /**
   * The longest the event loop keeps polling after a reply for the next request, in microseconds
   * (poller.ts; default 200, 0 never polls). The window adapts to the client below this.
   */
  pollMicros?: number;
  /**
   * Also offer QEMU's `qemu:allocation-depth` metadata context (meta-context.ts), as qemu-nbd does
   * with `--allocation-depth`. Default false: `base:allocation` and `cowdisk:layer` only.
   */
  allocationDepth?: boolean;
  /**
   * TLS (`loadTlsCredentials` in tls-credentials.ts): its mode says whether STARTTLS is offered
   * (`on`) or required (`require`). Without it the server is in the spec's NOTLS mode.
   */
  tls?: TlsCredentials;
  /**
   * Called when a client is refused for TLS reasons (a failed TLS handshake: COWDISK_E_TLS_HANDSHAKE;
   * a plaintext client where TLS is required: COWDISK_E_TLS_REQUIRED). The server carries on
   * either way; this is for the log.
   */
  onClientRefused?: (error: CowdiskError) => void;
}

export interface TransmissionOptions {
  /** Whether structured replies are in use. The kernel's client never negotiates them. Default false. */
  structuredReplies?: boolean;
}

export class NbdServer implements ConnectionOwner {
  readonly exports: readonly ExportConfig[];
  readonly drainTimeout: number;
  readonly handshakeTimeout: number;
  readonly poller: Poller;
  readonly metaContexts: readonly MetaContext[];
  readonly tls: TlsCredentials | undefined;
  private readonly onClientRefused: ((error: CowdiskError) => void) | undefined;
  private readonly maxConnections: number;
  private readonly listeners: Listener[] = [];
  private readonly connections = new Set<Connection>();
  private closing: Promise<void> | undefined;

  constructor(options: NbdServerOptions) {
    const exports = options.exports;
    if (exports.length === 0) throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, 'An NBD server needs at least one export.');
    const seen = new Set<string>();
    for (const exp of exports) {
      if (Buffer.byteLength(exp.name, 'utf8') > Limit.STRING || exp.name.includes('\0')) {
        throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `Export name ${JSON.stringify(exp.name.slice(0, 40))} is not valid: at most 4096 bytes, no NUL.`);
      }
      if (seen.has(exp.name)) throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `Two exports are named ${JSON.stringify(exp.name)}; give each a different name.`);
      seen.add(exp.name);
    }
    this.exports = [...exports];
    this.maxConnections = options.maxConnections ?? Infinity;
    this.drainTimeout = options.drainTimeout ?? 10_000;
    this.handshakeTimeout = options.handshakeTimeout ?? 10_000;
    this.poller = new Poller(options.pollMicros ?? DEFAULT_POLL_US);
    this.metaContexts = offeredContexts({ allocationDepth: options.allocationDepth });
    this.tls = options.tls;
    this.onClientRefused = options.onClientRefused;
  }

  /** Open connections (including ones still negotiating). */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** Open connections whose socket reads land in the server's own buffers (own-reads.ts). */
  get ownReadCount(): number {
    let n = 0;
    for (const c of this.connections) if (c.ownReads) n++;
    return n;
  }

  findExport(name: string): ExportConfig | undefined {
    const exact = this.exports.find((e) => e.name === name);
    if (exact || name !== '') return exact;
    return this.exports[0];
  }

  listExports(): readonly ExportConfig[] {
    return this.exports;
  }

  clientRefused(error: CowdiskError): void {
    debug('client refused: %s', error.message);
    this.onClientRefused?.(error);
  }

  /**
   * Starts listening; resolves with one NBD URI per export, in export order. Unix sockets are
   * created mode 0600 and non-loopback TCP addresses are refused without TLS required (see
   * listeners.ts). A stale Unix socket left by a server that is gone is replaced; a live one is an
   * error.
   */
  async listen(options: ListenOptions): Promise<string[]> {
    if (this.closing) throw new CowdiskError(ErrorCode.CLOSED, 'The NBD server is closed.');
    const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
      void this.handleConnection(socket);
    });
    server.on('error', (err) => debug('listener: %s', err.message));
    const listener = await startListener(server, options, this.tls?.mode === 'require');
    this.listeners.push(listener);
    return this.exports.map((e) => listener.uri(e.name));
  }

  /** Where each listener listens: a socket path or HOST:PORT. */
  addresses(): string[] {
    return this.listeners.map((l) => l.address);
  }

  /** The URIs of export `name` on every listener ("" is the default export). */
  uris(name = ''): string[] {
    return this.listeners.map((l) => l.uri(name));
  }

  /** Serves an already-connected socket from the handshake on. Resolves when the connection is over. */
  handleConnection(socket: net.Socket): Promise<void> {
    if (this.closing || this.connections.size >= this.maxConnections) {
      debug('refusing a connection: %s', this.closing ? 'shutting down' : 'too many connections');
      socket.destroy();
      return Promise.resolve();
    }
    return this.track(new Connection(this, socket));
  }

  /**
   * Serves `socket` starting directly in the transmission phase, for a client that did the
   * handshake some other way (the kernel's nbd driver, configured by `attach` with
   * `transmissionFlags(export)` and the export's size). Resolves when the connection is over.
   */
  serveTransmission(socket: net.Socket, exportName: string, options: TransmissionOptions = {}): Promise<void> {
    const exp = this.findExport(exportName);
    if (!exp) throw new CowdiskError(ErrorCode.NOT_FOUND, `No export named ${JSON.stringify(exportName)}.`);
    if (this.closing) throw new CowdiskError(ErrorCode.CLOSED, 'The NBD server is closed.');
    const session = { export: exp, structuredReplies: options.structuredReplies ?? false, contexts: [], enforceMinimum: false };
    return this.track(new Connection(this, socket, session));
  }

  /**
   * Stops accepting, lets every connection finish its in-flight requests (new ones are answered
   * ESHUTDOWN), then closes every device once (flushing it) and removes the Unix sockets.
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    for (const l of this.listeners) l.server.close();
    for (const c of this.connections) c.shutdown();
    await Promise.all([...this.connections].map((c) => c.done));
    await Promise.all(this.listeners.map((l) => l.closed));
    for (const l of this.listeners) if (l.socketPath) removeSocket(l.socketPath);
    let failure: unknown;
    for (const device of new Set(this.exports.map((e) => e.device))) {
      try {
        await device.close();
      } catch (err) {
        failure ??= err;
      }
    }
    if (failure !== undefined) throw failure;
  }

  private track(connection: Connection): Promise<void> {
    this.connections.add(connection);
    return connection.done.then(() => {
      this.connections.delete(connection);
    });
  }
}
