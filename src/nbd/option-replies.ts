/**
 * Serializer for the handshake: the greeting, option replies (NBD_REP_*) and the old
 * NBD_OPT_EXPORT_NAME answer. The handshake happens once per connection, so clarity wins over speed
 * here: each function returns a fresh buffer holding one whole message.
 */
import { HandshakeFlag, Info, Magic, Rep, Size } from './constants.js';
import { writeU64 } from './u64.js';

/** 'NBDMAGIC', 'IHAVEOPT', handshake flags FIXED_NEWSTYLE | NO_ZEROES. */
export function greeting(): Buffer {
  const b = Buffer.alloc(Size.GREETING);
  b.writeUInt32BE(Magic.NBDMAGIC_HI, 0);
  b.writeUInt32BE(Magic.NBDMAGIC_LO, 4);
  b.writeUInt32BE(Magic.IHAVEOPT_HI, 8);
  b.writeUInt32BE(Magic.IHAVEOPT_LO, 12);
  b.writeUInt16BE(HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES, 16);
  return b;
}

/** One option reply: magic, the option it answers, reply type, payload length, payload. */
export function optionReply(option: number, type: number, payload?: Buffer): Buffer {
  const length = payload?.length ?? 0;
  const b = Buffer.allocUnsafe(Size.OPTION_REPLY_HEADER + length);
  b.writeUInt32BE(Magic.REPLY_HI, 0);
  b.writeUInt32BE(Magic.REPLY_LO, 4);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(type, 12);
  b.writeUInt32BE(length, 16);
  if (payload) payload.copy(b, Size.OPTION_REPLY_HEADER);
  return b;
}

/** An error reply (bit 31 set) carrying a message for the user. */
export function errorReply(option: number, type: number, message: string): Buffer {
  return optionReply(option, type, Buffer.from(truncate(message), 'utf8'));
}

/** NBD_REP_SERVER: name length, name, then the description for people. */
export function serverReply(option: number, name: string, description: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const d = Buffer.from(truncate(description), 'utf8');
  const p = Buffer.allocUnsafe(4 + n.length + d.length);
  p.writeUInt32BE(n.length, 0);
  n.copy(p, 4);
  d.copy(p, 4 + n.length);
  return optionReply(option, Rep.SERVER, p);
}

/** NBD_REP_INFO with NBD_INFO_EXPORT: size and transmission flags. */
export function infoExport(option: number, size: number, flags: number): Buffer {
  const p = Buffer.allocUnsafe(12);
  p.writeUInt16BE(Info.EXPORT, 0);
  writeU64(p, size, 2);
  p.writeUInt16BE(flags, 10);
  return optionReply(option, Rep.INFO, p);
}

/** NBD_REP_INFO with NBD_INFO_NAME or NBD_INFO_DESCRIPTION: a type and a string. */
export function infoString(option: number, info: number, text: string): Buffer {
  const s = Buffer.from(truncate(text), 'utf8');
  const p = Buffer.allocUnsafe(2 + s.length);
  p.writeUInt16BE(info, 0);
  s.copy(p, 2);
  return optionReply(option, Rep.INFO, p);
}

/** NBD_REP_INFO with NBD_INFO_BLOCK_SIZE: minimum, preferred, maximum. */
export function infoBlockSize(option: number, minimum: number, preferred: number, maximum: number): Buffer {
  const p = Buffer.allocUnsafe(14);
  p.writeUInt16BE(Info.BLOCK_SIZE, 0);
  p.writeUInt32BE(minimum, 2);
  p.writeUInt32BE(preferred, 6);
  p.writeUInt32BE(maximum, 10);
  return optionReply(option, Rep.INFO, p);
}

/** NBD_REP_META_CONTEXT: context id and name. */
export function metaContextReply(option: number, id: number, name: string): Buffer {
  const s = Buffer.from(name, 'utf8');
  const p = Buffer.allocUnsafe(4 + s.length);
  p.writeUInt32BE(id, 0);
  s.copy(p, 4);
  return optionReply(option, Rep.META_CONTEXT, p);
}

/** The answer to NBD_OPT_EXPORT_NAME: size, flags and (unless NO_ZEROES) 124 zero bytes. */
export function exportNameReply(size: number, flags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(noZeroes ? Size.EXPORT_NAME_REPLY_NO_ZEROES : Size.EXPORT_NAME_REPLY);
  writeU64(b, size, 0);
  b.writeUInt16BE(flags, 8);
  return b;
}

/** Strings in the protocol are at most 4096 bytes (names are checked before they get here). */
function truncate(text: string): string {
  if (Buffer.byteLength(text, 'utf8') <= 4096) return text;
  return `${Buffer.from(text, 'utf8').subarray(0, 4000).toString('utf8')}...`;
}
