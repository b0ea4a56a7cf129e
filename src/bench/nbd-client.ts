/**
 * A small NBD client, for `cowdisk bench`: it measures cowdisk's server the way a remote disk
 * user sees it, so the client itself must be fast and must not hide time.
 *
 * What it speaks, and why no more:
 * - Fixed newstyle handshake, one NBD_OPT_GO for one export (the default export "" unless
 *   named), no information requested: the size and transmission flags always come, and asking
 *   for block sizes would promise to honour a minimum the bench's aligned writes never test. A server that does not know NBD_OPT_GO (older than 2016)
 *   is refused with a message rather than served by a second, rarely tested path.
 * - Simple replies only (no NBD_OPT_STRUCTURED_REPLY): WRITE, READ and FLUSH answer with a
 *   16-byte header, so the reply parser is one small loop.
 * - WRITE (optionally FUA), READ, FLUSH, and DISC on close.
 *
 * Requests are pipelined: each call sends its request at once and returns a promise that the
 * matching reply settles, whatever order replies come in. How many are in flight is the
 * caller's choice (the queue depth). Requests issued in the same turn of the event loop leave in
 * one batch: the socket is corked at the first and uncorked in a microtask, which runs after the
 * other completions of that turn have issued theirs. At queue depth 1 that adds nothing; at depth
 * 16 it turns a burst of refills into one writev instead of sixteen.
 *
 * The edge is checked here (range, read-only export, flush advertised), so a caller's mistake is
 * a CowdiskError before anything is sent, and an error the server answers is an NbdReplyError
 * that names the command, the range and the NBD error value. A reply the client cannot match, or
 * any framing it does not expect, means the stream is lost: the connection is closed and every
 * request in flight fails.
 *
 * The caller must leave a buffer it passed to `write` or `read` alone until the promise settles:
 * write payloads are sent by reference, not copied.
 */
import * as net from 'node:net';
import { CowdiskError, ErrorCode } from '../errors.js';
import { ClientFlag, Cmd, CmdFlag, HandshakeFlag, Info, Limit, Magic, NbdErrno, Opt, Rep, Size, TransmissionFlag, commandName } from '../nbd/constants.js';
import { ReceiveBuffer } from '../nbd/framing.js';
import { readU64, writeU64 } from '../nbd/u64.js';

/** Option replies longer than this are a broken or hostile server, not an answer to NBD_OPT_GO. */
const MAX_OPTION_REPLY = 64 * 1024;
/** The oldstyle greeting's second magic (0x00420281861253): a server from before newstyle. */
const OLDSTYLE_HI = 0x00004202;
const OLDSTYLE_LO = 0x81861253;

export interface NbdClientOptions {
  /** The export to open; "" (the default) is the server's default export. */
  exportName?: string;
}

/** A reply to a request carried a non-zero NBD error value. */
export class NbdReplyError extends CowdiskError {
  constructor(
    /** The NBD error value (NBD_EIO = 5, NBD_EPERM = 1, ...). */
    readonly errno: number,
    cmd: number,
    offset: number,
    length: number,
  ) {
    super(
      errno === NbdErrno.EPERM ? ErrorCode.READ_ONLY : ErrorCode.IO,
      `The NBD server answered ${commandName(cmd)} (${length} bytes at offset ${offset}) with ${errnoName(errno)}.`,
    );
  }
}

interface Pending {
  handle: number;
  cmd: number;
  offset: number;
  length: number;
  /** READ only: where the reply's data goes. */
  into: Buffer | undefined;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class NbdClient {
  /** Size of the export in bytes. */
  readonly size: number;
  /** The export's 16-bit transmission flags (TransmissionFlag). */
  readonly flags: number;

  private readonly pending = new Map<number, Pending>();
  private nextHandle = 0;
  private corked = false;
  /** The READ whose data is being received, and how much of it has arrived. */
  private reading: Pending | undefined;
  private filled = 0;
  private failure: Error | undefined;
  private closing = false;
  private idle: (() => void) | undefined;
  private readonly closed: Promise<void>;
  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
  };

  /** Connects to a Unix socket, negotiates the export, and resolves once requests can be sent. */
  static async connect(socketPath: string, options: NbdClientOptions = {}): Promise<NbdClient> {
    const socket = await open(socketPath);
    const rx = new ReceiveBuffer();
    try {
      const negotiated = await negotiate(socket, rx, options.exportName ?? '', socketPath);
      return new NbdClient(socket, rx, negotiated);
    } catch (err) {
      socket.destroy();
      throw err;
    }
  }

  private constructor(
    private readonly socket: net.Socket,
    private readonly rx: ReceiveBuffer,
    negotiated: Negotiated,
  ) {
    this.size = negotiated.size;
    this.flags = negotiated.flags;
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => {
      rx.push(chunk);
      this.receive();
    });
    socket.on('error', (err) => this.fail(new CowdiskError(ErrorCode.IO, `The NBD connection failed (${err.message}).`, { cause: err })));
    socket.on('close', () => this.fail(new CowdiskError(ErrorCode.IO, 'The NBD server closed the connection.')));
    // The handshake paused the socket so that no byte after it could be lost.
    socket.resume();
  }

  /** Requests sent and not answered yet. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Writes `buf` at `offset`; with `fua`, the data is durable when the promise resolves. */
  write(buf: Buffer, offset: number, options: { fua?: boolean } = {}): Promise<void> {
    if (this.flags & TransmissionFlag.READ_ONLY) {
      return Promise.reject(new CowdiskError(ErrorCode.READ_ONLY, 'The NBD export is read-only; it accepts no writes.'));
    }
    if (options.fua && !(this.flags & TransmissionFlag.SEND_FUA)) {
      return Promise.reject(new CowdiskError(ErrorCode.UNSUPPORTED, 'The NBD export does not accept FUA writes.'));
    }
    return this.request(Cmd.WRITE, options.fua ? CmdFlag.FUA : 0, offset, buf.length, buf, undefined);
  }

  /** Fills `buf` with the export's bytes at `offset`. */
  read(buf: Buffer, offset: number): Promise<void> {
    return this.request(Cmd.READ, 0, offset, buf.length, undefined, buf);
  }

  /** Everything answered before this call is durable once it resolves. */
  flush(): Promise<void> {
    if (!(this.flags & TransmissionFlag.SEND_FLUSH)) {
      return Promise.reject(new CowdiskError(ErrorCode.UNSUPPORTED, 'The NBD export does not accept FLUSH.'));
    }
    return this.request(Cmd.FLUSH, 0, 0, 0, undefined, undefined);
  }

  /**
   * Waits for the requests in flight, sends NBD_CMD_DISC and closes the connection. Later
   * requests fail with CLOSED.
   */
  async close(): Promise<void> {
    if (!this.closing) {
      this.closing = true;
      if (this.pending.size > 0 && !this.failure) await new Promise<void>((resolve) => (this.idle = resolve));
      if (!this.socket.destroyed) {
        this.socket.end(header(Cmd.DISC, 0, 0, 0, 0));
      }
    }
    await this.closed;
  }

  private request(cmd: number, flags: number, offset: number, length: number, payload: Buffer | undefined, into: Buffer | undefined): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closing) return Promise.reject(new CowdiskError(ErrorCode.CLOSED, 'The NBD client is closed.'));
    if (cmd !== Cmd.FLUSH) {
      if (!Number.isSafeInteger(offset) || offset < 0 || length < 0 || offset + length > this.size) {
        return Promise.reject(
          new CowdiskError(ErrorCode.OUT_OF_RANGE, `${length} bytes at offset ${offset} reach past the end of the ${this.size}-byte export.`),
        );
      }
      if (length > Limit.MAX_BLOCK) {
        return Promise.reject(new CowdiskError(ErrorCode.INVALID_ARGUMENT, `${length} bytes in one request is over the ${Limit.MAX_BLOCK} every server accepts.`));
      }
    }
    const handle = this.nextHandle;
    this.nextHandle = (this.nextHandle + 1) >>> 0;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(handle, { handle, cmd, offset, length, into, resolve, reject });
      if (!this.corked) {
        this.corked = true;
        this.socket.cork();
        queueMicrotask(this.uncork);
      }
      this.socket.write(header(cmd, flags, handle, offset, length));
      if (payload && payload.length > 0) this.socket.write(payload);
    });
  }

  /** Parses every whole reply (and any READ data) that has arrived. */
  private receive(): void {
    const rx = this.rx;
    for (;;) {
      const reading = this.reading;
      if (reading) {
        const into = reading.into!;
        const want = into.length - this.filled;
        const piece = rx.take(Math.min(want, rx.length));
        piece.copy(into, this.filled);
        this.filled += piece.length;
        if (this.filled < into.length) return;
        this.reading = undefined;
        this.settle(reading, 0);
        continue;
      }
      if (!rx.contiguous(Size.SIMPLE_REPLY)) return;
      const v = rx.view;
      const at = rx.at;
      const magic = v.readUInt32BE(at);
      const error = v.readUInt32BE(at + 4);
      const handle = v.readUInt32BE(at + 12);
      const entry = v.readUInt32BE(at + 8) === 0 ? this.pending.get(handle) : undefined;
      rx.consume(Size.SIMPLE_REPLY);
      if (magic !== Magic.SIMPLE_REPLY) {
        this.lost(`a reply with magic 0x${magic.toString(16)} (only simple replies were negotiated)`);
        return;
      }
      if (!entry) {
        this.lost(`a reply to handle ${handle}, which no request in flight has`);
        return;
      }
      // With simple replies, a READ's data follows only a reply without error.
      if (error === 0 && entry.cmd === Cmd.READ && entry.length > 0) {
        this.reading = entry;
        this.filled = 0;
        continue;
      }
      this.settle(entry, error);
    }
  }

  private settle(entry: Pending, error: number): void {
    this.pending.delete(entry.handle);
    if (error === 0) entry.resolve();
    else entry.reject(new NbdReplyError(error, entry.cmd, entry.offset, entry.length));
    if (this.pending.size === 0 && this.idle) {
      this.idle();
      this.idle = undefined;
    }
  }

  private lost(what: string): void {
    this.fail(new CowdiskError(ErrorCode.IO, `The NBD server sent ${what}; the connection is closed.`));
    this.socket.destroy();
  }

  /** Fails every request in flight and every later one. */
  private fail(err: Error): void {
    if (!this.failure) this.failure = this.closing ? new CowdiskError(ErrorCode.CLOSED, 'The NBD client is closed.') : err;
    this.rx.clear();
    this.reading = undefined;
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(err);
    if (this.idle) {
      this.idle();
      this.idle = undefined;
    }
  }
}

/** One transmission request header: magic, flags, type, handle, offset, length. */
function header(cmd: number, flags: number, handle: number, offset: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(Size.REQUEST);
  b.writeUInt32BE(Magic.REQUEST, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(cmd, 6);
  b.writeUInt32BE(0, 8);
  b.writeUInt32BE(handle, 12);
  writeU64(b, offset, 16);
  b.writeUInt32BE(length, 24);
  return b;
}

function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(NbdErrno)) if (value === errno) return `NBD_${name} (${errno})`;
  return `error value ${errno}`;
}

function open(socketPath: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    socket.setNoDelay(true);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(socket);
    });
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(new CowdiskError(ErrorCode.IO, `Cannot connect to the NBD server at ${socketPath} (${err.code ?? err.message}); is it running?`, { cause: err }));
    };
    socket.once('error', onError);
  });
}

interface Negotiated {
  size: number;
  flags: number;
}

/** The handshake: greeting, client flags, NBD_OPT_GO, and its replies up to the ACK. */
async function negotiate(socket: net.Socket, rx: ReceiveBuffer, exportName: string, where: string): Promise<Negotiated> {
  const input = new HandshakeInput(socket, rx, where);
  try {
    await input.need(Size.GREETING);
    const v = rx.view;
    const at = rx.at;
    if (v.readUInt32BE(at) !== Magic.NBDMAGIC_HI || v.readUInt32BE(at + 4) !== Magic.NBDMAGIC_LO) {
      throw new CowdiskError(ErrorCode.UNSUPPORTED, `${where} is not an NBD server (no NBDMAGIC greeting).`);
    }
    if (v.readUInt32BE(at + 8) === OLDSTYLE_HI && v.readUInt32BE(at + 12) === OLDSTYLE_LO) {
      throw new CowdiskError(ErrorCode.UNSUPPORTED, `The NBD server at ${where} speaks only the oldstyle handshake; cowdisk needs fixed newstyle.`);
    }
    const serverFlags = v.readUInt16BE(at + 16);
    if (v.readUInt32BE(at + 8) !== Magic.IHAVEOPT_HI || v.readUInt32BE(at + 12) !== Magic.IHAVEOPT_LO || !(serverFlags & HandshakeFlag.FIXED_NEWSTYLE)) {
      throw new CowdiskError(ErrorCode.UNSUPPORTED, `The NBD server at ${where} does not offer the fixed newstyle handshake cowdisk needs.`);
    }
    rx.consume(Size.GREETING);

    const name = Buffer.from(exportName, 'utf8');
    const message = Buffer.alloc(Size.CLIENT_FLAGS + Size.OPTION_HEADER + 4 + name.length + 2);
    message.writeUInt32BE(ClientFlag.FIXED_NEWSTYLE | (serverFlags & HandshakeFlag.NO_ZEROES ? ClientFlag.NO_ZEROES : 0), 0);
    message.writeUInt32BE(Magic.IHAVEOPT_HI, 4);
    message.writeUInt32BE(Magic.IHAVEOPT_LO, 8);
    message.writeUInt32BE(Opt.GO, 12);
    message.writeUInt32BE(4 + name.length + 2, 16);
    message.writeUInt32BE(name.length, 20);
    name.copy(message, 24);
    // The count of information requests (0) is the buffer's last two bytes, already zero.
    socket.write(message);

    let size: number | undefined;
    let flags = 0;
    for (;;) {
      await input.need(Size.OPTION_REPLY_HEADER);
      const h = rx.view;
      const p = rx.at;
      if (h.readUInt32BE(p) !== Magic.REPLY_HI || h.readUInt32BE(p + 4) !== Magic.REPLY_LO || h.readUInt32BE(p + 8) !== Opt.GO) {
        throw new CowdiskError(ErrorCode.IO, `The NBD server at ${where} sent a malformed reply to NBD_OPT_GO.`);
      }
      const type = h.readUInt32BE(p + 12);
      const length = h.readUInt32BE(p + 16);
      if (length > MAX_OPTION_REPLY) throw new CowdiskError(ErrorCode.IO, `The NBD server at ${where} sent a ${length}-byte option reply.`);
      rx.consume(Size.OPTION_REPLY_HEADER);
      await input.need(length);
      const data = rx.take(length);
      if (type === Rep.ACK) break;
      if (type === Rep.INFO && data.length >= 2) {
        const info = data.readUInt16BE(0);
        // Only NBD_INFO_EXPORT matters here; other information (a server may send it unasked) is skipped.
        if (info === Info.EXPORT && data.length >= 12) {
          size = readU64(data, 2);
          flags = data.readUInt16BE(10);
        }
        continue;
      }
      if (type & 0x80000000) throw optionError(type, data.toString('utf8'), exportName, where);
      // Any other reply type to NBD_OPT_GO is ignored, as the spec asks of clients.
    }
    if (size === undefined) throw new CowdiskError(ErrorCode.IO, `The NBD server at ${where} accepted NBD_OPT_GO without saying the export's size.`);
    if (!Number.isSafeInteger(size)) throw new CowdiskError(ErrorCode.UNSUPPORTED, `The export at ${where} is larger than 2^53 bytes.`);
    return { size, flags };
  } finally {
    input.done();
  }
}

function optionError(type: number, message: string, exportName: string, where: string): CowdiskError {
  const said = message ? `: ${message}` : '';
  switch (type) {
    case Rep.ERR_UNKNOWN:
      return new CowdiskError(ErrorCode.NOT_FOUND, `The NBD server at ${where} has no export named ${JSON.stringify(exportName)}${said}.`);
    case Rep.ERR_UNSUP:
      return new CowdiskError(ErrorCode.UNSUPPORTED, `The NBD server at ${where} does not support NBD_OPT_GO (servers since 2016 do)${said}.`);
    case Rep.ERR_TLS_REQD:
      return new CowdiskError(ErrorCode.UNSUPPORTED, `The NBD server at ${where} requires TLS, which cowdisk's client does not speak${said}.`);
    default:
      return new CowdiskError(ErrorCode.IO, `The NBD server at ${where} refused the export (reply type 0x${type.toString(16)})${said}.`);
  }
}

/** Waits for handshake bytes; the socket's end or error turns into a clear error. */
class HandshakeInput {
  private wake: (() => void) | undefined;
  private ended: CowdiskError | undefined;
  private readonly onData = (chunk: Buffer): void => {
    this.rx.push(chunk);
    this.wake?.();
  };
  private readonly onEnd = (err?: Error): void => {
    this.ended ??= new CowdiskError(
      ErrorCode.IO,
      `The NBD server at ${this.where} closed the connection during the handshake${err ? ` (${err.message})` : ''}.`,
      { cause: err },
    );
    this.wake?.();
  };

  constructor(
    private readonly socket: net.Socket,
    private readonly rx: ReceiveBuffer,
    private readonly where: string,
  ) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onEnd);
  }

  /** Resolves once n bytes are addressable as rx.view[rx.at ..]. */
  async need(n: number): Promise<void> {
    while (n > 0 && !this.rx.contiguous(n)) {
      if (this.ended) throw this.ended;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }

  /** Hands the socket over, paused: nothing that arrives next is read until the client resumes it. */
  done(): void {
    this.socket.pause();
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onEnd);
  }
}
