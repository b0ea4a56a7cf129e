/**
 * Reading a socket into memory of ours instead of a fresh buffer per read.
 *
 * Node reads a socket into a new 64 KiB buffer each time and emits it as a 'data' chunk. For a
 * server that receives WRITE payloads that is the costly part of the receive path: a 1 MiB write
 * arrives as sixteen fresh buffers that are then gathered into a seventeenth, and V8 meets that
 * much external memory with a full mark-compact per 64 MiB received. Measured here with 1 MiB
 * sequential writes at QD4 into a fresh clone: 230-250 MiB/s and 3.2 s of system time per 960 MiB,
 * against nbdkit's 1.9 GB/s on the same file system (docs/PERFORMANCE.md).
 *
 * Node has the mechanism to do better, the `onread` option of `net.Socket` ("incoming data is
 * stored in a single buffer and passed to the supplied callback"; the buffer may be a function
 * that returns the next one), but offers it only for sockets a program creates, not for the ones a
 * server accepts. Those sockets carry the same slots, so this module fills them in on an accepted
 * socket the way the constructor would for `onread: { buffer: next, callback }`: the three
 * symbols the constructor sets (found by their descriptions) and the handle's `useUserBuffer`.
 * Pausing and resuming keep working: `Socket.pause()` stops the handle's reads when these slots
 * are set. It is feature-detected: where a Node lacks any piece, `readIntoOwnBuffers` says no
 * and the connection keeps its 'data' listener (test/nbd/own-reads.test.ts asserts that the Node
 * the project runs on says yes).
 *
 * Only for a plain socket whose readable side holds nothing buffered (no data would then be
 * delivered out of order), and not under TLS: node:tls reads the socket itself.
 */
import type { Socket } from 'node:net';

type Slots = { buffer: symbol; gen: symbol; callback: symbol };

let slots: Slots | null | undefined;

/** The onread slots of net.Socket, if this Node has them where Node 20 has them. */
function onreadSlots(socket: Socket): Slots | null {
  if (slots !== undefined) return slots;
  const own = Object.getOwnPropertySymbols(socket);
  const find = (name: string): symbol | undefined => own.find((s) => s.description === name);
  const buffer = find('kBuffer');
  const gen = find('kBufferGen');
  const callback = find('kBufferCb');
  slots = buffer && gen && callback ? { buffer, gen, callback } : null;
  return slots;
}

/**
 * From the next read on, the socket's bytes land in the memory `next()` returns, and `received(n)`
 * is told how many did (next is asked again after each read). False, and nothing changed, when
 * this socket or this Node cannot do it.
 */
export function readIntoOwnBuffers(socket: Socket, next: () => Buffer, received: (n: number) => void): boolean {
  const handle = (socket as unknown as { _handle?: { useUserBuffer?: (buf: Buffer) => void } })._handle;
  if (!handle || typeof handle.useUserBuffer !== 'function') return false;
  if (socket.readableLength > 0 || socket.destroyed) return false;
  const s = onreadSlots(socket);
  if (!s) return false;
  const target = socket as unknown as Record<symbol, unknown>;
  if (target[s.buffer] !== null || target[s.gen] !== null || target[s.callback] !== null) return false;
  const first = next();
  target[s.buffer] = first;
  target[s.gen] = next;
  target[s.callback] = (n: number): void => received(n);
  handle.useUserBuffer(first);
  return true;
}
