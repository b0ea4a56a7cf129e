/**
 * One client connection: owns the socket, feeds its bytes to the handshake and then to the
 * transmission phase, and decides when to stop reading and when to close.
 *
 * Memory stays bounded whatever the client does. Input is parsed only while the connection is
 * under its limits (MAX_INFLIGHT requests, MAX_BUFFERED bytes of read buffers, write payloads and
 * replies not yet taken by the client); beyond them the socket is paused, so a client that sends
 * requests without reading replies stops being read instead of growing the server. Frames are
 * checked against their limits before any byte is kept (framing.ts).
 *
 * Ending, in its five forms:
 * - NBD_CMD_DISC (soft disconnect): stop reading, finish what is in flight, send those replies, close.
 * - EOF from the client: the same, though nobody may be left to read the replies.
 * - The handshake refusing the client (bad option magic, unknown client flags, option data over the
 *   limit, NBD_OPT_ABORT): stop reading, send the replies already queued, close.
 * - A bad request magic in transmission (framing is lost): close at once. What was already handed
 *   to the device still completes; its replies are dropped.
 * - Server shutdown: buffered requests are answered ESHUTDOWN, in-flight ones finish, then close;
 *   a connection still negotiating is closed at once.
 * Where final replies are sent, a client that does not read them is cut off after the owner's
 * drain timeout, so it cannot hold a shutdown open. A client that has not finished the handshake
 * within the owner's handshake timeout is cut off too.
 * `done` resolves when the socket is closed and no request is in flight, which is what the server
 * waits for before it closes the devices.
 *
 * TLS: after the handshake acknowledges NBD_OPT_STARTTLS, the connection stops listening to the
 * plain socket, lets node:tls take it over (tls-session.ts), and from then on reads, writes and
 * pauses the TLS socket instead; the plain socket's 'close' stays the one sign that the
 * connection is gone, since closing either closes both. Bytes the client sent after STARTTLS but
 * before its TLS handshake would be neither NBD nor TLS, so they close the connection. A failed
 * TLS handshake, like a plaintext client refused by a server that requires TLS, costs this
 * connection only and is reported to the owner (`clientRefused`) once, as a CowdiskError.
 */
import type { Socket } from 'node:net';
import { debuglog } from 'node:util';
import { CowdiskError, ErrorCode, isCowdiskError } from '../errors.js';
import { native } from '../native.js';
import type { ExportConfig } from './exports.js';
import { ReceiveBuffer } from './framing.js';
import { Handshake, type HandshakeHost, type Session } from './handshake.js';
import type { MetaContext } from './meta-context.js';
import { readIntoOwnBuffers } from './own-reads.js';
import type { Poller } from './poller.js';
import { ReplyWriter } from './reply-writer.js';
import type { TlsCredentials, TlsMode } from './tls-credentials.js';
import { startTls } from './tls-session.js';
import { Consumed, Transmission, type TransmissionHost } from './transmission.js';

const debug = debuglog('nbd');

/** Requests one connection may have in flight before it stops reading. */
export const MAX_INFLIGHT = 256;
/**
 * The send buffer a Unix socket asks for (the kernel grants twice this, up to net.core.wmem_max).
 * With the default (about 200 KiB) a 1 MiB reply leaves in five or six writes, each waiting for
 * the event loop to see the socket writable again; with room for a whole reply it leaves in one or
 * two. Measured with 1 MiB reads at QD4: 0.77x the floor's MiB/s before, 0.95x with this alone
 * (docs/PERFORMANCE.md). TCP sockets are left alone: setting SO_SNDBUF there turns off the
 * kernel's own sizing of the buffer to the connection's bandwidth and delay.
 */
export const UNIX_SEND_BUFFER = 1024 * 1024;
/** Bytes of read buffers, write payloads and unsent replies one connection may hold before it stops reading. */
export const MAX_BUFFERED = 64 * 1024 * 1024;
/** During the handshake, unsent option replies beyond this pause reading. */
const HANDSHAKE_BUFFERED = 1024 * 1024;

export interface ConnectionOwner {
  findExport(name: string): ExportConfig | undefined;
  listExports(): readonly ExportConfig[];
  /** The metadata contexts clients may list and select. */
  readonly metaContexts: readonly MetaContext[];
  /** How long a closing connection may take to hand its last replies over before it is cut (ms). */
  readonly drainTimeout: number;
  /** How long a client may take to finish the handshake before it is cut (ms; 0: no limit). */
  readonly handshakeTimeout?: number;
  /** Keeps the event loop awake between a reply and the next request (poller.ts). */
  readonly poller?: Poller;
  /** TLS credentials and mode; none: STARTTLS is refused. */
  readonly tls?: TlsCredentials;
  /** A client was refused: its TLS handshake failed, or it would not start TLS where it is required. */
  clientRefused?(error: CowdiskError): void;
}

let nextId = 1;

export class Connection implements HandshakeHost, TransmissionHost {
  readonly id = nextId++;
  /** Replies go through this; replaced when TLS starts. */
  writer: ReplyWriter;
  /** Resolves when the socket is closed and nothing is in flight. Never rejects. */
  readonly done: Promise<void>;

  private readonly rx = new ReceiveBuffer();
  private handshake: Handshake | undefined;
  private transmission: Transmission | undefined;
  /** No more input will be parsed. */
  private ending = false;
  private paused = false;
  private pumping = false;
  private closed = false;
  /** The TLS handshake is running: nothing is read or parsed meanwhile. */
  private upgrading = false;
  /** The server cut the connection (`destroy`), as opposed to the client leaving. */
  private cut = false;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private resolveDone!: () => void;
  /** The socket in use: the one accepted, or the TLS socket over it once TLS runs. */
  private socket: Socket;
  /** The socket reads into the receive buffer's memory (own-reads.ts) rather than emitting 'data'. */
  ownReads = false;

  constructor(
    private readonly owner: ConnectionOwner,
    plain: Socket,
    session?: Session,
  ) {
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
    this.socket = plain;
    this.writer = new ReplyWriter(plain);
    // Replies to requests already received must still go out after the client half-closes.
    plain.allowHalfOpen = true;
    if (typeof plain.setNoDelay === 'function') plain.setNoDelay(true);
    roomForLargeReplies(plain);
    this.listen(plain);
    plain.on('close', () => this.socketClosed());
    if (session) {
      this.transmission = new Transmission(this, session);
      this.readOwn();
    } else {
      this.handshake = new Handshake(this);
      this.handshake.greet();
      // A client that connects and never finishes negotiating would hold a connection slot
      // (and, under --max-connections, lock everyone else out) for ever.
      const limit = Math.min(owner.handshakeTimeout ?? 0, 2 ** 31 - 1); // setTimeout's own limit
      if (limit > 0) {
        this.handshakeTimer = setTimeout(() => {
          if (!this.handshake) return;
          if (this.upgrading) {
            this.owner.clientRefused?.(
              new CowdiskError(ErrorCode.TLS_HANDSHAKE, `TLS handshake with a client failed: it did not finish within the handshake timeout (${limit / 1000} s).`),
            );
          }
          this.destroy(`handshake not finished within ${limit} ms`);
        }, limit).unref();
      }
    }
  }

  readonly send = (message: Buffer): void => {
    if (!this.socket.destroyed) this.socket.write(message);
  };

  get tlsMode(): TlsMode {
    return this.owner.tls?.mode ?? 'off';
  }

  private readonly onData = (chunk: Buffer): void => {
    this.owner.poller?.arrived();
    this.rx.push(chunk);
    this.pump();
  };
  private readonly onReceived = (n: number): void => {
    this.owner.poller?.arrived();
    this.rx.received(n);
    this.pump();
  };
  private readonly onEnd = (): void => this.inputEnded();
  private readonly onDrain = (): void => this.pump();
  private readonly onError = (err: Error): void => debug('connection %d: %s', this.id, err.message);

  private listen(socket: Socket): void {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('drain', this.onDrain);
    socket.on('error', this.onError);
  }

  /**
   * In transmission on a plain socket, the socket's bytes land in the receive buffer's own memory
   * and large WRITE payloads straight in their pooled buffers (own-reads.ts, framing.ts).
   */
  private readOwn(): void {
    if ((this.socket as { encrypted?: boolean }).encrypted === true) return;
    this.ownReads = readIntoOwnBuffers(this.socket, () => this.rx.readBuffer(), this.onReceived);
  }

  private unlisten(socket: Socket): void {
    socket.off('data', this.onData);
    socket.off('end', this.onEnd);
    socket.off('drain', this.onDrain);
  }

  findExport(name: string): ExportConfig | undefined {
    return this.owner.findExport(name);
  }

  listExports(): readonly ExportConfig[] {
    return this.owner.listExports();
  }

  get metaContexts(): readonly MetaContext[] {
    return this.owner.metaContexts;
  }

  mayStart(): boolean {
    const t = this.transmission!;
    return t.inflight < MAX_INFLIGHT && t.inflightBytes + this.writer.queuedBytes + this.socket.writableLength < MAX_BUFFERED;
  }

  answeredAtOnce(): void {
    this.owner.poller?.answered();
  }

  settled(): void {
    const t = this.transmission!;
    if (this.closed) {
      if (t.inflight === 0) this.resolveDone();
      return;
    }
    this.sendReplies();
    this.owner.poller?.answered();
    if (this.ending) {
      if (t.inflight === 0) this.finish();
    } else if (this.paused) {
      this.pump();
    }
  }

  /** The server is closing. */
  shutdown(): void {
    if (this.closed || this.ending) return;
    if (!this.transmission) {
      this.destroy('server shutting down during the handshake');
      return;
    }
    this.transmission.shuttingDown = true;
    this.pump();
    this.stopReading();
  }

  /** Parses what has arrived, as far as the limits allow, and applies backpressure. */
  private pump(): void {
    if (this.pumping || this.ending || this.closed || this.upgrading) return;
    this.pumping = true;
    try {
      if (this.handshake) {
        const step = this.handshake.consume(this.rx);
        if (step.kind === 'starttls') {
          this.upgrade(this.handshake);
          return;
        }
        if (step.kind === 'close') {
          debug('connection %d: handshake ends: %s', this.id, step.reason);
          this.reportRefusal();
          // Paused, not just ignored: until the last replies drain, whatever the client sends
          // would otherwise pile up unread.
          this.stopReading();
          return;
        }
        if (step.kind === 'go') {
          this.handshake = undefined;
          clearTimeout(this.handshakeTimer);
          this.transmission = new Transmission(this, step.session);
          this.readOwn();
          debug('connection %d: transmission on export %s (reads into own buffers: %s)', this.id, JSON.stringify(step.session.export.name), this.ownReads);
        }
      }
      const t = this.transmission;
      if (t) {
        const result = t.consume(this.rx);
        if (result === Consumed.FATAL) {
          this.destroy('bad request magic');
          return;
        }
        if (result === Consumed.DISCONNECT) {
          debug('connection %d: NBD_CMD_DISC', this.id);
          this.stopReading();
          return;
        }
      }
    } catch (err) {
      // A bug must cost this connection, not the server.
      this.destroy(`internal error: ${(err as Error)?.stack ?? String(err)}`);
      return;
    } finally {
      this.pumping = false;
      if (this.writer.pending && !this.closed) this.sendReplies();
    }
    const wantPause = this.transmission ? !this.mayStart() : this.socket.writableLength > HANDSHAKE_BUFFERED;
    if (wantPause !== this.paused) {
      this.paused = wantPause;
      if (wantPause) this.socket.pause();
      else this.socket.resume();
    }
  }

  /**
   * STARTTLS was acknowledged: hands the socket to node:tls and carries on negotiating inside TLS.
   * The acknowledgement is already queued on the plain socket; node:tls writes nothing before it.
   */
  private upgrade(handshake: Handshake): void {
    const credentials = this.owner.tls!;
    if (this.rx.length > 0) {
      this.destroy('the client sent more than NBD_OPT_STARTTLS before its TLS handshake');
      return;
    }
    const plain = this.socket;
    this.upgrading = true;
    this.unlisten(plain);
    // A client that goes away mid-handshake must end it, not leave it half open until the timeout.
    plain.allowHalfOpen = false;
    startTls(plain, credentials).then(
      (secure) => {
        this.upgrading = false;
        if (this.closed) {
          secure.destroy();
          return;
        }
        secure.allowHalfOpen = true;
        debug('connection %d: TLS started (%s, %s)', this.id, secure.getProtocol(), secure.getCipher()?.name);
        this.socket = secure;
        this.writer = new ReplyWriter(secure);
        this.paused = false;
        this.listen(secure);
        handshake.tlsStarted();
        this.pump();
      },
      (err: unknown) => {
        this.upgrading = false;
        // Cut for a reason of ours (the handshake timeout, a shutdown): said there.
        if (this.cut) return;
        if (isCowdiskError(err)) this.owner.clientRefused?.(err);
        this.destroy(`TLS handshake failed: ${(err as Error).message}`);
      },
    );
  }

  /** Tells the owner, once, that a client was turned away for not starting TLS where it is required. */
  private reportRefusal(): void {
    const refused = this.handshake?.refusedWithoutTls;
    if (refused === undefined) return;
    this.handshake!.refusedWithoutTls = undefined;
    this.owner.clientRefused?.(
      new CowdiskError(
        ErrorCode.TLS_REQUIRED,
        `A client negotiated without TLS (${refused}) on a server that requires it, and was refused; clients must start TLS (an nbds:// URI for libnbd tools, tls-creds for QEMU).`,
      ),
    );
  }

  /** Requests handed to the device and not yet answered (none before transmission). */
  private get inflight(): number {
    return this.transmission?.inflight ?? 0;
  }

  /**
   * Hands the queued replies to the socket: at once when nothing else is in flight (queue depth 1
   * pays no delay), else once this turn's other completions have queued theirs (reply-writer.ts).
   */
  private sendReplies(): void {
    if (this.pumping || this.inflight > 0) this.writer.schedule();
    else this.writer.flush();
  }

  /** Stops parsing input; closes once what is in flight is answered. */
  private stopReading(): void {
    this.ending = true;
    this.rx.clear();
    this.socket.pause();
    if (this.inflight === 0) this.finish();
  }

  private inputEnded(): void {
    debug('connection %d: client closed its side', this.id);
    if (!this.ending) this.stopReading();
  }

  /**
   * Sends what is queued, then closes the socket. A client that does not read its last replies
   * cannot hold the connection (and a server shutdown) open: after `drainTimeout` it is cut.
   */
  private finish(): void {
    if (this.closed) return;
    this.writer.flush();
    const socket = this.socket;
    if (socket.destroyed) return;
    socket.end(() => socket.destroy());
    setTimeout(() => socket.destroy(), this.owner.drainTimeout).unref();
  }

  private destroy(reason: string): void {
    debug('connection %d: closing: %s', this.id, reason);
    this.cut = true;
    this.ending = true;
    this.rx.clear();
    this.writer.discard();
    this.socket.destroy();
  }

  private socketClosed(): void {
    this.reportRefusal();
    clearTimeout(this.handshakeTimer);
    this.closed = true;
    this.ending = true;
    this.rx.clear();
    this.writer.discard();
    // With requests still running on the device, `settled` resolves `done` after the last one.
    if (this.inflight === 0) this.resolveDone();
  }
}

/** Gives an accepted Unix socket room for a whole large reply (see UNIX_SEND_BUFFER). */
function roomForLargeReplies(socket: Socket): void {
  if (socket.remoteAddress !== undefined) return;
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return;
  try {
    native()?.setSendBuffer(fd, UNIX_SEND_BUFFER);
  } catch {
    // A socket that refuses a larger buffer keeps the default: slower for large reads, nothing more.
  }
}
