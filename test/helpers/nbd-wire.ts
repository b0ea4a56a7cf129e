/**
 * An NBD client written for the tests, byte by byte from the spec, independent of the server's
 * own serializers and constants (a test that encoded its expectations with the code under test
 * would prove nothing). It speaks raw sockets so tests can send what no well-behaved client would:
 * bad magic, giant lengths, frames cut anywhere, connections dropped mid-request.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';

export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_MAGIC = 0x67446698;
export const STRUCTURED_MAGIC = 0x668e33ef;

export const OPT = { EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5, INFO: 6, GO: 7, STRUCTURED_REPLY: 8, LIST_META: 9, SET_META: 10 };
export const REP = { ACK: 1, SERVER: 2, INFO: 3, META_CONTEXT: 4 };
export const REP_ERR = {
  UNSUP: 2 ** 31 + 1,
  POLICY: 2 ** 31 + 2,
  INVALID: 2 ** 31 + 3,
  TLS_REQD: 2 ** 31 + 5,
  UNKNOWN: 2 ** 31 + 6,
  SHUTDOWN: 2 ** 31 + 7,
  TOO_BIG: 2 ** 31 + 9,
};
export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 };
export const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 };
export const FLAG = { FUA: 1, NO_HOLE: 2, DF: 4, REQ_ONE: 8, FAST_ZERO: 16 };
export const ERR = { EPERM: 1, EIO: 5, EINVAL: 22, ENOSPC: 28, EOVERFLOW: 75, ENOTSUP: 95, ESHUTDOWN: 108 };
export const CHUNK = { NONE: 0, OFFSET_DATA: 1, OFFSET_HOLE: 2, BLOCK_STATUS: 5, ERROR: 32769 };

function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
}
function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
}
function u64(v: bigint | number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(v));
  return b;
}
function str(s: string | Buffer): Buffer {
  return typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
}

export const encode = {
  clientFlags: (flags: number): Buffer => u32(flags),
  option: (option: number, data: Buffer = Buffer.alloc(0), length = data.length): Buffer =>
    Buffer.concat([u64(IHAVEOPT), u32(option), u32(length), data]),
  /** NBD_OPT_INFO / NBD_OPT_GO payload. */
  infoRequest: (name: string | Buffer, infos: number[] = []): Buffer => {
    const n = str(name);
    return Buffer.concat([u32(n.length), n, u16(infos.length), ...infos.map(u16)]);
  },
  /** NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT payload. */
  metaRequest: (name: string, queries: string[]): Buffer => {
    const n = str(name);
    return Buffer.concat([u32(n.length), n, u32(queries.length), ...queries.flatMap((q) => [u32(str(q).length), str(q)])]);
  },
  request: (type: number, handle: bigint, offset: bigint | number, length: number, flags = 0, payload?: Buffer): Buffer =>
    Buffer.concat([u32(REQUEST_MAGIC), u16(flags), u16(type), u64(handle), u64(offset), u32(length), payload ?? Buffer.alloc(0)]),
};

/** What the server sends, as the tests expect it, built independently of the server. */
export const expected = {
  greeting: (): Buffer => Buffer.concat([u64(NBDMAGIC), u64(IHAVEOPT), u16(0b11)]),
  optionReply: (option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer =>
    Buffer.concat([u64(REPLY_MAGIC), u32(option), u32(type), u32(data.length), data]),
  infoExport: (option: number, size: number, flags: number): Buffer =>
    expected.optionReply(option, REP.INFO, Buffer.concat([u16(INFO.EXPORT), u64(size), u16(flags)])),
  infoBlockSize: (option: number, min: number, pref: number, max: number): Buffer =>
    expected.optionReply(option, REP.INFO, Buffer.concat([u16(INFO.BLOCK_SIZE), u32(min), u32(pref), u32(max)])),
  simpleReply: (handle: bigint, error = 0, data?: Buffer): Buffer =>
    Buffer.concat([u32(SIMPLE_MAGIC), u32(error), u64(handle), data ?? Buffer.alloc(0)]),
};

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export interface Chunk {
  flags: number;
  type: number;
  handle: bigint;
  payload: Buffer;
}

/** A socket with an exact-length reader. */
export class RawClient {
  private received: Buffer[] = [];
  private bufferedLength = 0;
  private ended = false;
  private waiter: (() => void) | undefined;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.received.push(chunk);
      this.bufferedLength += chunk.length;
      this.waiter?.();
    });
    socket.on('close', () => {
      this.ended = true;
      this.waiter?.();
    });
    socket.on('error', () => undefined);
  }

  /** Connects to a Unix socket path, or to a TCP port on 127.0.0.1. */
  static connect(socketPath: string | number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = typeof socketPath === 'number' ? net.connect(socketPath, '127.0.0.1') : net.connect(socketPath);
      s.once('connect', () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  /** Connects and reads the greeting. */
  static async greeted(socketPath: string | number): Promise<RawClient> {
    const c = await RawClient.connect(socketPath);
    const g = await c.read(18);
    if (!g.equals(expected.greeting())) throw new Error(`unexpected greeting ${g.toString('hex')}`);
    return c;
  }

  /**
   * After the server acknowledged NBD_OPT_STARTTLS: node:tls's client handshake over this socket.
   * Resolves with a client on the TLS socket (this one must not be used again), or rejects with
   * the handshake's error.
   */
  async startTls(options: tls.ConnectionOptions): Promise<RawClient> {
    const secure = tls.connect({ ...options, socket: this.socket });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', () => resolve());
      secure.once('error', reject);
    });
    return new RawClient(secure);
  }

  write(data: Buffer): Promise<void> {
    return new Promise((resolve) => this.socket.write(data, () => resolve()));
  }

  /** Exactly n bytes, or an error if the server closes first or nothing comes in time. */
  async read(n: number, timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.bufferedLength < n) {
      if (this.ended) throw new Error(`server closed the connection after ${this.bufferedLength} of ${n} bytes`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${n} bytes (have ${this.bufferedLength})`);
      await this.wait(deadline - Date.now());
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.received[0];
      const k = Math.min(c.length, n - filled);
      c.copy(out, filled, 0, k);
      filled += k;
      if (k === c.length) this.received.shift();
      else this.received[0] = c.subarray(k);
    }
    this.bufferedLength -= n;
    return out;
  }

  /** Stops reading from the socket (replies pile up at the server), until `resume`. */
  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  /** Resolves true once the server has closed the connection (false if it stays open for timeoutMs). */
  async closedByServer(timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended && Date.now() < deadline) await this.wait(deadline - Date.now());
    return this.ended;
  }

  get available(): number {
    return this.bufferedLength;
  }

  async optionReply(): Promise<OptionReply> {
    const h = await this.read(20);
    if (h.readBigUInt64BE(0) !== REPLY_MAGIC) throw new Error(`bad option reply magic ${h.toString('hex')}`);
    const length = h.readUInt32BE(16);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await this.read(length) };
  }

  /** Reads option replies up to and including the final one (ACK or an error). */
  async optionReplies(): Promise<OptionReply[]> {
    const out: OptionReply[] = [];
    for (;;) {
      const r = await this.optionReply();
      out.push(r);
      if (r.type === REP.ACK || r.type >= 2 ** 31) return out;
    }
  }

  async simpleReply(dataLength = 0): Promise<{ error: number; handle: bigint; data: Buffer }> {
    const h = await this.read(16);
    if (h.readUInt32BE(0) !== SIMPLE_MAGIC) throw new Error(`bad simple reply magic ${h.toString('hex')}`);
    const error = h.readUInt32BE(4);
    return { error, handle: h.readBigUInt64BE(8), data: error === 0 ? await this.read(dataLength) : Buffer.alloc(0) };
  }

  /** In transmission with simple replies: READ `length` bytes at `offset`; the data, or an error naming what came back. */
  async readAt(handle: bigint, offset: number, length: number): Promise<Buffer> {
    await this.write(encode.request(CMD.READ, handle, offset, length));
    const r = await this.simpleReply(length);
    if (r.handle !== handle || r.error !== 0) throw new Error(`READ ${handle}: reply for handle ${r.handle} with error ${r.error}`);
    return r.data;
  }

  async chunk(): Promise<Chunk> {
    const h = await this.read(20);
    if (h.readUInt32BE(0) !== STRUCTURED_MAGIC) throw new Error(`bad structured reply magic ${h.toString('hex')}`);
    return { flags: h.readUInt16BE(4), type: h.readUInt16BE(6), handle: h.readBigUInt64BE(8), payload: await this.read(h.readUInt32BE(16)) };
  }

  /** Chunks of one reply, through the one flagged DONE. */
  async chunks(): Promise<Chunk[]> {
    const out: Chunk[] = [];
    for (;;) {
      const c = await this.chunk();
      out.push(c);
      if (c.flags & 1) return out;
    }
  }

  close(): void {
    this.socket.destroy();
  }

  private wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, Math.max(1, ms));
      function done(): void {
        clearTimeout(t);
        resolve();
      }
      this.waiter = () => {
        this.waiter = undefined;
        done();
      };
    });
  }
}

/** Negotiates (fixed newstyle, optionally structured replies and contexts) and enters transmission with NBD_OPT_GO. */
export async function negotiate(
  socketPath: string,
  name = '',
  options: { structured?: boolean; contexts?: string[]; blockSize?: boolean } = {},
): Promise<{ client: RawClient; size: number; flags: number; contextIds: Map<string, number> }> {
  const client = await RawClient.greeted(socketPath);
  await client.write(encode.clientFlags(1));
  const contextIds = new Map<string, number>();
  if (options.structured) {
    await client.write(encode.option(OPT.STRUCTURED_REPLY));
    const r = await client.optionReplies();
    if (r[0].type !== REP.ACK) throw new Error('structured replies refused');
  }
  if (options.contexts) {
    await client.write(encode.option(OPT.SET_META, encode.metaRequest(name, options.contexts)));
    for (const r of await client.optionReplies()) {
      if (r.type === REP.META_CONTEXT) contextIds.set(r.data.subarray(4).toString(), r.data.readUInt32BE(0));
    }
  }
  await client.write(encode.option(OPT.GO, encode.infoRequest(name, options.blockSize ? [INFO.BLOCK_SIZE] : [])));
  let size = -1;
  let flags = -1;
  for (const r of await client.optionReplies()) {
    if (r.type === REP.INFO && r.data.readUInt16BE(0) === INFO.EXPORT) {
      size = Number(r.data.readBigUInt64BE(2));
      flags = r.data.readUInt16BE(10);
    } else if (r.type !== REP.INFO && r.type !== REP.ACK) {
      throw new Error(`NBD_OPT_GO failed with reply type ${r.type}: ${r.data.toString()}`);
    }
  }
  return { client, size, flags, contextIds };
}
