/**
 * Serializer for the transmission phase: simple replies and structured reply chunks, batched.
 *
 * This is the hot path of every request, so it is built to allocate and write as little as possible:
 * - Reply headers are written into an arena (one 16 KiB buffer shared by many replies); a reply
 *   costs no allocation of its own. An arena is never rewritten: once a slice of it is queued, the
 *   next replies go after it, and a full arena is simply replaced (the socket keeps the old one
 *   alive until it is sent).
 * - Read data is queued by reference behind its header, never copied.
 * - Replies produced in the same turn of the event loop leave in one batch: `flush` corks the
 *   socket, writes every queued piece and uncorks, which becomes a single writev. The connection
 *   flushes at once when nothing else is in flight (queue depth 1: no added latency) and otherwise
 *   schedules one flush with setImmediate, which runs after every request that completed in this
 *   turn has queued its reply.
 */
import type { Socket } from 'node:net';
import { Magic, ReplyFlag, ReplyType, Size } from './constants.js';
import { writeU64 } from './u64.js';

const ARENA_SIZE = 16 * 1024;

export class ReplyWriter {
  /** Bytes of read data queued and not yet handed to the socket. */
  queuedBytes = 0;

  private arena = Buffer.allocUnsafe(ARENA_SIZE);
  private pos = 0;
  /** Start of the arena bytes written since the last cut. */
  private segment = 0;
  private queue: Buffer[] = [];
  /** What to run once the queued pieces are in the kernel's hands (see afterSent). */
  private releases: Array<() => void> = [];
  private scheduled = false;
  private readonly flushLater = (): void => {
    this.scheduled = false;
    this.flush();
  };

  constructor(private readonly socket: Socket) {}

  /** Whether anything waits to be written. */
  get pending(): boolean {
    return this.pos > this.segment || this.queue.length > 0 || this.releases.length > 0;
  }

  /** Simple reply: magic, error, handle. */
  simple(handleHi: number, handleLo: number, error: number): void {
    const b = this.reserve(Size.SIMPLE_REPLY);
    const at = this.pos - Size.SIMPLE_REPLY;
    b.writeUInt32BE(Magic.SIMPLE_REPLY, at);
    b.writeUInt32BE(error, at + 4);
    b.writeUInt32BE(handleHi, at + 8);
    b.writeUInt32BE(handleLo, at + 12);
  }

  /** Simple reply to a successful READ: the header, then the data. */
  simpleRead(handleHi: number, handleLo: number, data: Buffer): void {
    this.simple(handleHi, handleLo, 0);
    this.attach(data);
  }

  /** NBD_REPLY_TYPE_OFFSET_DATA: offset, then the data (queued by reference). */
  offsetData(handleHi: number, handleLo: number, offset: number, data: Buffer, done: boolean): void {
    const at = this.chunkHeader(handleHi, handleLo, ReplyType.OFFSET_DATA, done, 8 + data.length, 8);
    writeU64(this.arena, offset, at);
    this.attach(data);
  }

  /** NBD_REPLY_TYPE_OFFSET_HOLE: offset and length of a range that reads as zeros. */
  offsetHole(handleHi: number, handleLo: number, offset: number, length: number, done: boolean): void {
    const at = this.chunkHeader(handleHi, handleLo, ReplyType.OFFSET_HOLE, done, 12, 12);
    writeU64(this.arena, offset, at);
    this.arena.writeUInt32BE(length, at + 8);
  }

  /** NBD_REPLY_TYPE_NONE with DONE: a successful reply with nothing (more) to say. */
  none(handleHi: number, handleLo: number): void {
    this.chunkHeader(handleHi, handleLo, ReplyType.NONE, true, 0, 0);
  }

  /** NBD_REPLY_TYPE_ERROR with DONE: the error value and a message for people. */
  error(handleHi: number, handleLo: number, error: number, message: string): void {
    const text = Buffer.from(message, 'utf8');
    const at = this.chunkHeader(handleHi, handleLo, ReplyType.ERROR, true, 6 + text.length, 6 + text.length);
    this.arena.writeUInt32BE(error, at);
    this.arena.writeUInt16BE(text.length, at + 4);
    text.copy(this.arena, at + 6);
  }

  /** NBD_REPLY_TYPE_BLOCK_STATUS: context id, then (length, status) pairs. */
  blockStatus(handleHi: number, handleLo: number, contextId: number, pairs: readonly number[], done: boolean): void {
    const size = 4 + pairs.length * 4;
    const at = this.chunkHeader(handleHi, handleLo, ReplyType.BLOCK_STATUS, done, size, size);
    this.arena.writeUInt32BE(contextId, at);
    for (let i = 0; i < pairs.length; i++) this.arena.writeUInt32BE(pairs[i], at + 4 + i * 4);
  }

  /**
   * Runs `done` once everything queued so far has been handed to the kernel: then a read buffer
   * queued by reference may be reused. Never, if the connection goes first (the buffer is then
   * simply left to the garbage collector).
   */
  afterSent(done: () => void): void {
    this.releases.push(done);
  }

  /** Hands everything queued to the socket in one corked batch. */
  flush(): void {
    this.cut();
    const queue = this.queue;
    const releases = this.releases;
    if (queue.length === 0 && releases.length === 0) return;
    this.queue = [];
    this.releases = [];
    this.queuedBytes = 0;
    const socket = this.socket;
    if (socket.destroyed) return;
    // Writes complete in order, so the last one's callback covers the whole batch.
    const sent = releases.length === 0 ? undefined : () => releases.forEach((release) => release());
    if (queue.length === 0) {
      sent!();
      return;
    }
    if (queue.length === 1) {
      socket.write(queue[0], sent);
      return;
    }
    socket.cork();
    for (let i = 0; i < queue.length; i++) socket.write(queue[i], i === queue.length - 1 ? sent : undefined);
    socket.uncork();
  }

  /** Flushes once the requests completing in this turn of the event loop have queued their replies. */
  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.flushLater);
  }

  /** Forgets what is queued (the connection is gone). */
  discard(): void {
    this.queue = [];
    this.releases = [];
    this.queuedBytes = 0;
    this.segment = this.pos;
  }

  /**
   * Writes a structured chunk header and reserves `inArena` payload bytes right after it; returns
   * where that payload starts. `length` is the payload length announced in the header.
   */
  private chunkHeader(
    handleHi: number,
    handleLo: number,
    type: number,
    done: boolean,
    length: number,
    inArena: number,
  ): number {
    const total = Size.STRUCTURED_HEADER + inArena;
    const b = this.reserve(total);
    const at = this.pos - total;
    b.writeUInt32BE(Magic.STRUCTURED_REPLY, at);
    b.writeUInt16BE(done ? ReplyFlag.DONE : 0, at + 4);
    b.writeUInt16BE(type, at + 6);
    b.writeUInt32BE(handleHi, at + 8);
    b.writeUInt32BE(handleLo, at + 12);
    b.writeUInt32BE(length, at + 16);
    return at + Size.STRUCTURED_HEADER;
  }

  /** Makes room for n bytes at `pos` and advances `pos` past them; returns the arena. */
  private reserve(n: number): Buffer {
    if (this.pos + n > this.arena.length) {
      this.cut();
      this.arena = Buffer.allocUnsafe(Math.max(ARENA_SIZE, n));
      this.pos = 0;
      this.segment = 0;
    }
    this.pos += n;
    return this.arena;
  }

  /** Queues the arena bytes written since the last cut. */
  private cut(): void {
    if (this.pos > this.segment) {
      this.queue.push(this.arena.subarray(this.segment, this.pos));
      this.segment = this.pos;
    }
  }

  private attach(data: Buffer): void {
    if (data.length === 0) return;
    this.cut();
    this.queue.push(data);
    this.queuedBytes += data.length;
  }
}
