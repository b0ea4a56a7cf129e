/**
 * The transmission phase: requests in, replies out, as nbdkit's server/protocol.c splits it:
 * parse -> validate (one checked place) -> handle -> reply.
 *
 * Requests are handled concurrently and answered as they complete, in whatever order that is (the
 * spec allows it, and a client with a queue depth of 16 gets 16 requests working at once). Nothing
 * waits that need not: `consume` parses every complete request that has arrived, starts each one
 * without awaiting it, and returns; each request's own async `run` queues its reply when the device
 * answers. The engine's file I/O resolves within the same tick, so a burst of requests from one
 * 'data' event is usually answered by one batched write (see reply-writer.ts).
 *
 * A READ the device can answer at once (BlockDevice.readNow: every byte it needs is in memory) is
 * answered inside `consume`, without a promise per layer (docs/PERFORMANCE.md has what that
 * saved at 4 KiB and queue depth 16).
 *
 * Headers are read in place from the receive buffer; the only per-request allocations are the
 * request's promise (none for a READ answered at once), the read buffer a READ must fill (carved
 * from a shared arena when small, see buffer-pool.ts), and a small WRITE payload that arrived
 * split across socket chunks. A WRITE of 128 KiB to 4 MiB is received into a pooled buffer,
 * which goes back to the pool once the write is done (framing.ts `expect`).
 *
 * Validation follows the spec's error rules: unknown commands and flags, a flag on a command it
 * does not apply to, lengths over the maximum, misalignment (for clients that agreed to the
 * minimum) and ranges past the end are EINVAL, except that a write or write-zeroes past the end is
 * ENOSPC; any write-like command on a read-only export is EPERM. Errors from the device go through
 * `nbdErrno`.
 */
import type { BlockDevice, Extent, WriteOptions, ZeroOptions } from '../image/device.js';
import { Cmd, CmdFlag, Limit, Magic, NbdErrno, Size, commandName } from './constants.js';
import { errorMessage, nbdErrno, pastEndErrno } from './errno.js';
import { blockSizes, isReadOnly } from './exports.js';
import type { ReceiveBuffer } from './framing.js';
import type { Session } from './handshake.js';
import { BufferPool } from './buffer-pool.js';
import { descriptors, type MetaContext } from './meta-context.js';
import { readU64 } from './u64.js';
import type { ReplyWriter } from './reply-writer.js';

export interface TransmissionHost {
  readonly writer: ReplyWriter;
  /** Whether another request may start now (the connection's memory and queue-depth limits). */
  mayStart(): boolean;
  /** A request has finished and its reply is queued. */
  settled(): void;
  /**
   * A request was answered inside `consume`, without starting (a read the device answered at
   * once): its reply is queued and goes out with the others when `consume` returns.
   */
  answeredAtOnce(): void;
}

/** What `consume` stopped on. */
export const Consumed = {
  /** Everything complete was handled (or the host said to wait); more input is welcome. */
  MORE: 0,
  /** The client sent NBD_CMD_DISC: finish what is in flight, then close. */
  DISCONNECT: 1,
  /** The stream is not NBD requests (bad magic): framing is lost, close now. */
  FATAL: 2,
} as const;

/** Structured reads at least this long answer ranges that read as zeros with OFFSET_HOLE. */
const HOLE_READ_MIN = 64 * 1024;
/**
 * A BLOCK_STATUS looks at no more than this many blocks: the extents of a longer range would cost
 * memory and time in proportion to a length the client chose (up to 4 GiB, and 256 such requests
 * may be in flight). The answer then stops short, which the spec allows; clients ask again.
 */
const STATUS_MAX_BLOCKS = 8192;
/** A REQ_ONE BLOCK_STATUS first asks the device about this many blocks... */
const REQ_ONE_FIRST_BLOCKS = 16;
/** ...and this many times more each time the first extent runs past the window. */
const REQ_ONE_GROWTH = 8;
/** NBD_CMD_CACHE reads through the range in pieces of this size. */
const CACHE_PIECE = 1024 * 1024;
const KNOWN_FLAGS = CmdFlag.FUA | CmdFlag.NO_HOLE | CmdFlag.DF | CmdFlag.REQ_ONE | CmdFlag.FAST_ZERO;
const FUA: WriteOptions = { fua: true };
const EMPTY: Buffer = Buffer.alloc(0);
/**
 * The largest WRITE payload received into a buffer taken when its header arrives (framing.ts
 * `expect`); a longer one (up to Limit.MAX_BLOCK) is kept as its bytes come, as before. The buffer
 * is taken on the header's word, so this bounds what a header alone can make the server set aside
 * per connection; clients write 1-2 MiB at most by default (qemu-img, nbdcopy, the kernel).
 */
const EXPECT_MAX = 4 * 1024 * 1024;

export class Transmission {
  /** Requests started and not yet answered. */
  inflight = 0;
  /** Bytes those requests hold (read buffers to fill, write payloads). */
  inflightBytes = 0;
  /** The server is closing: new requests are answered ESHUTDOWN. */
  shuttingDown = false;

  private readonly device: BlockDevice;
  private readonly size: number;
  private readonly readOnly: boolean;
  private readonly structured: boolean;
  private readonly contexts: readonly MetaContext[];
  /** Alignment required of offsets and lengths: the advertised minimum, or 1 for clients that did not agree to it. */
  private readonly alignment: number;
  /** The device honours FUA itself; otherwise a FUA request is followed by a flush. */
  private readonly deviceFua: boolean;
  private readonly fastZero: boolean;
  private readonly extents: boolean;
  /** Bytes of an oversized WRITE payload still to be thrown away. */
  private discarding = 0;
  /** A large WRITE whose payload is arriving straight into a pooled buffer (rx.expect). */
  private arriving: { flags: number; handleHi: number; handleLo: number; offset: number } | undefined;
  /** WRITE payloads that are pooled buffers (not views into received chunks): back to the pool after the write. */
  private readonly pooledPayloads = new Set<Buffer>();
  /** Why the last validation failed, for the error message of a structured reply. */
  private why = '';
  private cacheScratch: Buffer | undefined;
  /** Large read buffers, reused once their reply is sent (buffer-pool.ts). */
  private readonly buffers = new BufferPool();
  /** A full arena of replies queued at once serves again once they are all sent. */
  private readonly retireArena = (arena: Buffer): void => {
    this.host.writer.afterSent(() => this.buffers.recycle(arena));
  };

  constructor(
    private readonly host: TransmissionHost,
    session: Session,
  ) {
    const exp = session.export;
    this.device = exp.device;
    this.size = exp.device.size;
    this.readOnly = isReadOnly(exp);
    this.structured = session.structuredReplies;
    this.contexts = session.contexts;
    this.alignment = session.enforceMinimum ? blockSizes(exp).minimum : 1;
    const caps = exp.device.capabilities;
    this.deviceFua = caps.fua;
    this.fastZero = caps.fastZero;
    this.extents = caps.extents;
  }

  /** Parses and starts every complete request in `rx`, while the host lets more start. */
  consume(rx: ReceiveBuffer): number {
    for (;;) {
      if (this.discarding > 0) {
        this.discarding -= rx.skip(this.discarding);
        if (this.discarding > 0) return Consumed.MORE;
      }
      const arriving = this.arriving;
      if (arriving !== undefined) {
        // Admitted when its header was parsed: it starts as soon as its payload is in.
        const payload = rx.filled();
        if (payload === undefined) return Consumed.MORE;
        this.arriving = undefined;
        this.start(Cmd.WRITE, arriving.flags, arriving.handleHi, arriving.handleLo, arriving.offset, payload.length, payload);
        continue;
      }
      // When shutting down, what has arrived is answered ESHUTDOWN at once, whatever the limits.
      if ((!this.shuttingDown && !this.host.mayStart()) || !rx.contiguous(Size.REQUEST)) return Consumed.MORE;
      const b = rx.view;
      const at = rx.at;
      if (b.readUInt32BE(at) !== Magic.REQUEST) return Consumed.FATAL;
      const flags = b.readUInt16BE(at + 4);
      const cmd = b.readUInt16BE(at + 6);
      const handleHi = b.readUInt32BE(at + 8);
      const handleLo = b.readUInt32BE(at + 12);
      const offset = readU64(b, at + 16);
      const length = b.readUInt32BE(at + 24);
      let payload: Buffer = EMPTY;
      if (cmd === Cmd.WRITE) {
        if (length > Limit.MAX_BLOCK) {
          // Too big to hold: drop the payload as it streams in, answer EINVAL, keep the connection.
          rx.consume(Size.REQUEST);
          this.discarding = length;
          this.fail(handleHi, handleLo, NbdErrno.EINVAL, `write of ${length} bytes is over the maximum of ${Limit.MAX_BLOCK}`);
          continue;
        }
        if (length >= BufferPool.MIN_POOLED && length <= EXPECT_MAX) {
          // Large: received into a pooled buffer rather than gathered from chunks (framing.ts).
          rx.consume(Size.REQUEST);
          const buf = this.buffers.take(length);
          this.pooledPayloads.add(buf);
          rx.expect(buf);
          this.arriving = { flags, handleHi, handleLo, offset };
          continue;
        }
        if (rx.length < Size.REQUEST + length) return Consumed.MORE;
        rx.consume(Size.REQUEST);
        if (length > 0) payload = rx.take(length);
      } else {
        rx.consume(Size.REQUEST);
        if (cmd === Cmd.DISC) return Consumed.DISCONNECT;
      }
      this.start(cmd, flags, handleHi, handleLo, offset, length, payload);
    }
  }

  private start(cmd: number, flags: number, handleHi: number, handleLo: number, offset: number, length: number, payload: Buffer): void {
    if (this.shuttingDown) {
      this.release(payload);
      this.fail(handleHi, handleLo, NbdErrno.ESHUTDOWN, 'the server is shutting down');
      return;
    }
    const error = this.validate(cmd, flags, offset, length);
    if (error !== 0) {
      this.release(payload);
      this.fail(handleHi, handleLo, error, `${commandName(cmd)}: ${this.why}`);
      return;
    }
    if (cmd === Cmd.READ && this.readAtOnce(flags, handleHi, handleLo, offset, length)) {
      this.host.answeredAtOnce();
      return;
    }
    const cost = cmd === Cmd.READ ? length : payload.length;
    this.inflight++;
    this.inflightBytes += cost;
    void this.run(cmd, flags, handleHi, handleLo, offset, length, payload, cost);
  }

  /** A WRITE payload is done with: a pooled one goes back to the pool. */
  private release(payload: Buffer): void {
    if (payload.length >= BufferPool.MIN_POOLED && this.pooledPayloads.delete(payload)) this.buffers.give(payload);
  }

  /** The one checked place: 0 when the request may go to the device, else the NBD error. */
  private validate(cmd: number, flags: number, offset: number, length: number): number {
    if (cmd > Cmd.BLOCK_STATUS) return this.invalid(`unknown command ${cmd}`);
    if ((flags & ~KNOWN_FLAGS) !== 0) return this.invalid(`unknown command flags 0x${flags.toString(16)}`);
    if ((flags & (CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO)) !== 0 && cmd !== Cmd.WRITE_ZEROES) {
      return this.invalid('NO_HOLE and FAST_ZERO apply to WRITE_ZEROES only');
    }
    if ((flags & CmdFlag.DF) !== 0 && (cmd !== Cmd.READ || !this.structured)) {
      return this.invalid('DF applies to READ with structured replies only');
    }
    if ((flags & CmdFlag.REQ_ONE) !== 0 && cmd !== Cmd.BLOCK_STATUS) return this.invalid('REQ_ONE applies to BLOCK_STATUS only');
    const writeLike = cmd === Cmd.WRITE || cmd === Cmd.TRIM || cmd === Cmd.WRITE_ZEROES;
    if (writeLike && this.readOnly) {
      this.why = 'the export is read-only';
      return NbdErrno.EPERM;
    }
    if (cmd === Cmd.FLUSH) return offset === 0 && length === 0 ? 0 : this.invalid('offset and length must be 0');
    if (cmd === Cmd.BLOCK_STATUS) {
      if (this.contexts.length === 0) return this.invalid('no metadata context was selected with NBD_OPT_SET_META_CONTEXT');
      if (length === 0) return this.invalid('length 0');
    }
    if ((cmd === Cmd.READ || cmd === Cmd.CACHE) && length > Limit.MAX_BLOCK) {
      return this.invalid(`length ${length} is over the maximum of ${Limit.MAX_BLOCK}`);
    }
    if (this.alignment > 1 && (offset % this.alignment !== 0 || length % this.alignment !== 0)) {
      return this.invalid(`offset ${offset} and length ${length} must be multiples of ${this.alignment}`);
    }
    if (offset + length > this.size) {
      this.why = `range ${offset}+${length} is past the end of the export (${this.size} bytes)`;
      return pastEndErrno(cmd);
    }
    return 0;
  }

  private invalid(why: string): number {
    this.why = why;
    return NbdErrno.EINVAL;
  }

  private async run(
    cmd: number,
    flags: number,
    handleHi: number,
    handleLo: number,
    offset: number,
    length: number,
    payload: Buffer,
    cost: number,
  ): Promise<void> {
    const device = this.device;
    // FUA goes to the device when it honours it; otherwise the write is followed by a flush.
    const fua = (flags & CmdFlag.FUA) !== 0;
    const deviceFua = fua && this.deviceFua ? FUA : undefined;
    try {
      switch (cmd) {
        case Cmd.READ:
          await this.read(flags, handleHi, handleLo, offset, length);
          return;
        case Cmd.BLOCK_STATUS:
          await this.blockStatus(flags, handleHi, handleLo, offset, length);
          return;
        case Cmd.WRITE:
          if (length > 0) await device.write(payload, offset, deviceFua);
          break;
        case Cmd.FLUSH:
          await device.flush();
          break;
        case Cmd.TRIM:
          if (length > 0) await device.trim(offset, length, deviceFua);
          break;
        case Cmd.CACHE:
          await this.cache(offset, length);
          break;
        case Cmd.WRITE_ZEROES:
          if ((flags & CmdFlag.FAST_ZERO) !== 0 && !this.fastZero) {
            this.fail(handleHi, handleLo, NbdErrno.ENOTSUP, 'NBD_CMD_WRITE_ZEROES: zeroing would not be faster than writing');
            return;
          }
          if (length > 0) await device.zero(offset, length, zeroOptions(flags, deviceFua !== undefined));
          break;
      }
      if (fua && !this.deviceFua && (cmd === Cmd.WRITE || cmd === Cmd.TRIM || cmd === Cmd.WRITE_ZEROES)) await device.flush();
      this.host.writer.simple(handleHi, handleLo, 0);
    } catch (err) {
      this.fail(handleHi, handleLo, nbdErrno(err, cmd, flags), `${commandName(cmd)}: ${errorMessage(err)}`);
    } finally {
      this.release(payload);
      this.inflight--;
      this.inflightBytes -= cost;
      this.host.settled();
    }
  }

  /**
   * The hot path of a READ: when the device can answer at once (BlockDevice.readNow: the bytes are
   * in memory), the reply is queued here, with no promise, no async function and no request
   * bookkeeping; false when the read must start as usual (nothing has been queued then). Only for
   * reads answered with one piece of data: a long structured read asks for extents first.
   */
  private readAtOnce(flags: number, handleHi: number, handleLo: number, offset: number, length: number): boolean {
    const device = this.device;
    if (device.readNow === undefined || length === 0) return false;
    if (this.structured && (flags & CmdFlag.DF) === 0 && length >= HOLE_READ_MIN && this.extents) return false;
    const small = length < BufferPool.MIN_POOLED;
    const buf = small ? this.buffers.takeNow(length, this.retireArena) : this.buffers.take(length);
    if (!device.readNow(buf, offset)) {
      if (!small) this.buffers.give(buf);
      return false;
    }
    const w = this.host.writer;
    if (!small) w.afterSent(() => this.buffers.give(buf));
    if (this.structured) w.offsetData(handleHi, handleLo, offset, buf, true);
    else w.simpleRead(handleHi, handleLo, buf);
    return true;
  }

  /**
   * READ. Simple replies carry the data after the header. Structured replies send OFFSET_DATA, and
   * for reads long enough to be worth asking, OFFSET_HOLE for the ranges the device reports as
   * zeros (nothing is read or sent for them). With DF the answer is a single OFFSET_DATA chunk.
   */
  private async read(flags: number, handleHi: number, handleLo: number, offset: number, length: number): Promise<void> {
    const w = this.host.writer;
    if (length === 0) {
      if (this.structured) w.none(handleHi, handleLo);
      else w.simple(handleHi, handleLo, 0);
      return;
    }
    // From the pool, back to it once the reply is sent, or at once if the read fails.
    const buf = this.buffers.take(length);
    let runs: number[] | undefined;
    try {
      if (!this.structured || (flags & CmdFlag.DF) !== 0 || length < HOLE_READ_MIN || !this.extents) {
        await this.device.read(buf, offset);
      } else {
        runs = zeroRuns(await this.device.extents(offset, length), offset, length);
        for (let i = 0; i < runs.length; i += 3) {
          if (runs[i + 2] === 0) await this.device.read(buf.subarray(runs[i] - offset, runs[i + 1] - offset), runs[i]);
        }
      }
    } catch (err) {
      this.buffers.give(buf);
      throw err;
    }
    w.afterSent(() => this.buffers.give(buf));
    if (runs === undefined) {
      if (this.structured) w.offsetData(handleHi, handleLo, offset, buf, true);
      else w.simpleRead(handleHi, handleLo, buf);
      return;
    }
    for (let i = 0; i < runs.length; i += 3) {
      const start = runs[i];
      const end = runs[i + 1];
      const done = i + 3 === runs.length;
      if (runs[i + 2] === 0) w.offsetData(handleHi, handleLo, start, buf.subarray(start - offset, end - offset), done);
      else w.offsetHole(handleHi, handleLo, start, end - start, done);
    }
  }

  /**
   * BLOCK_STATUS: one chunk per selected context, the last one marked DONE, describing at most
   * STATUS_MAX_BLOCKS blocks from the offset. With REQ_ONE only the first extent matters, so the
   * device is asked about a window that grows until that extent ends inside it: qemu maps a disk
   * with REQ_ONE queries that reach far beyond the one extent it wants, and asking about all of
   * each would make mapping a disk quadratic in its size.
   */
  private async blockStatus(flags: number, handleHi: number, handleLo: number, offset: number, length: number): Promise<void> {
    const reqOne = (flags & CmdFlag.REQ_ONE) !== 0;
    const blockSize = this.device.blockSize;
    const limit = this.extents ? Math.min(length, STATUS_MAX_BLOCKS * blockSize) : length;
    let span = reqOne && this.extents ? Math.min(limit, REQ_ONE_FIRST_BLOCKS * blockSize) : limit;
    let answers: number[][];
    for (;;) {
      const extents: readonly Extent[] = this.extents
        ? await this.device.extents(offset, span)
        : [{ offset, length: span, kind: 'data', layer: 0 }];
      answers = this.contexts.map((context) => descriptors(extents, context, offset, span, reqOne));
      if (span === limit || answers.every((pairs) => pairs.length > 0 && pairs[0] < span)) break;
      span = Math.min(limit, span * REQ_ONE_GROWTH);
    }
    const last = answers.length - 1;
    answers.forEach((pairs, i) => {
      this.host.writer.blockStatus(handleHi, handleLo, this.contexts[i].id, pairs.length > 0 ? pairs : [limit, 0], i === last);
    });
  }

  /** CACHE: reads the range through (into a scratch buffer), so the layers below are warm. */
  private async cache(offset: number, length: number): Promise<void> {
    const scratch = (this.cacheScratch ??= Buffer.allocUnsafe(CACHE_PIECE));
    for (let pos = offset, end = offset + length; pos < end; pos += CACHE_PIECE) {
      await this.device.read(scratch.subarray(0, Math.min(CACHE_PIECE, end - pos)), pos);
    }
  }

  private fail(handleHi: number, handleLo: number, error: number, message: string): void {
    if (this.structured) this.host.writer.error(handleHi, handleLo, error, message);
    else this.host.writer.simple(handleHi, handleLo, error);
  }
}

function zeroOptions(flags: number, fua: boolean): ZeroOptions {
  return { fua, noHole: (flags & CmdFlag.NO_HOLE) !== 0, fastZero: (flags & CmdFlag.FAST_ZERO) !== 0 };
}

/**
 * Splits [offset, offset + length) into runs that must be read (0) or read as zeros (1), from the
 * device's extents: a flat array [start, end, zero, start, end, zero, ...]. A range the extents do
 * not cover is read.
 */
function zeroRuns(extents: readonly Extent[], offset: number, length: number): number[] {
  const runs: number[] = [];
  const end = offset + length;
  let pos = offset;
  const push = (start: number, stop: number, zero: number): void => {
    const n = runs.length;
    if (n > 0 && runs[n - 1] === zero && runs[n - 2] === start) runs[n - 2] = stop;
    else runs.push(start, stop, zero);
  };
  for (const e of extents) {
    const start = Math.max(e.offset, pos);
    const stop = Math.min(e.offset + e.length, end);
    if (stop <= start) continue;
    if (start > pos) push(pos, start, 0);
    push(start, stop, e.kind === 'data' ? 0 : 1);
    pos = stop;
  }
  if (pos < end) push(pos, end, 0);
  return runs;
}
