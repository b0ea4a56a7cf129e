/**
 * The numbers of the NBD protocol, in one place, as the spec (`doc/proto.md` in
 * NetworkBlockDevice/nbd) names them. Both the parsers and the serializers read them from here, and
 * docs/PROTOCOL.md refers to them by these names.
 *
 * They are `as const` objects rather than TypeScript `const enum`s: the test runner transpiles one
 * file at a time, and a `const enum` imported across files does not survive that.
 */

/** Magic numbers. 64-bit ones are split into two 32-bit halves so they can be compared in place. */
export const Magic = {
  /** 'NBDMAGIC' = 0x4e42444d41474943: first 8 bytes of the server greeting. */
  NBDMAGIC_HI: 0x4e42444d,
  NBDMAGIC_LO: 0x41474943,
  /** 'IHAVEOPT' = 0x49484156454f5054: newstyle greeting, and the prefix of every client option. */
  IHAVEOPT_HI: 0x49484156,
  IHAVEOPT_LO: 0x454f5054,
  /** 0x0003e889045565a9: prefix of every option reply. */
  REPLY_HI: 0x0003e889,
  REPLY_LO: 0x045565a9,
  /** 0x25609513: NBD_REQUEST_MAGIC. */
  REQUEST: 0x25609513,
  /** 0x67446698: NBD_SIMPLE_REPLY_MAGIC. */
  SIMPLE_REPLY: 0x67446698,
  /** 0x668e33ef: NBD_STRUCTURED_REPLY_MAGIC. */
  STRUCTURED_REPLY: 0x668e33ef,
} as const;

/** Handshake flags, sent by the server after the greeting (16 bits). */
export const HandshakeFlag = {
  /** bit 0: NBD_FLAG_FIXED_NEWSTYLE. */
  FIXED_NEWSTYLE: 1 << 0,
  /** bit 1: NBD_FLAG_NO_ZEROES. */
  NO_ZEROES: 1 << 1,
} as const;

/** Client flags, the client's 32-bit answer to the greeting. Any other bit closes the connection. */
export const ClientFlag = {
  /** bit 0: NBD_FLAG_C_FIXED_NEWSTYLE. */
  FIXED_NEWSTYLE: 1 << 0,
  /** bit 1: NBD_FLAG_C_NO_ZEROES. */
  NO_ZEROES: 1 << 1,
} as const;

/** Transmission flags (16 bits) describing an export. */
export const TransmissionFlag = {
  /** bit 0: NBD_FLAG_HAS_FLAGS, always set. */
  HAS_FLAGS: 1 << 0,
  /** bit 1: NBD_FLAG_READ_ONLY. */
  READ_ONLY: 1 << 1,
  /** bit 2: NBD_FLAG_SEND_FLUSH. */
  SEND_FLUSH: 1 << 2,
  /** bit 3: NBD_FLAG_SEND_FUA. */
  SEND_FUA: 1 << 3,
  /** bit 4: NBD_FLAG_ROTATIONAL (never set by cowdisk). */
  ROTATIONAL: 1 << 4,
  /** bit 5: NBD_FLAG_SEND_TRIM. */
  SEND_TRIM: 1 << 5,
  /** bit 6: NBD_FLAG_SEND_WRITE_ZEROES. */
  SEND_WRITE_ZEROES: 1 << 6,
  /** bit 7: NBD_FLAG_SEND_DF (only with structured replies). */
  SEND_DF: 1 << 7,
  /** bit 8: NBD_FLAG_CAN_MULTI_CONN. */
  CAN_MULTI_CONN: 1 << 8,
  /** bit 9: NBD_FLAG_SEND_RESIZE (experimental; never set). */
  SEND_RESIZE: 1 << 9,
  /** bit 10: NBD_FLAG_SEND_CACHE. */
  SEND_CACHE: 1 << 10,
  /** bit 11: NBD_FLAG_SEND_FAST_ZERO. */
  SEND_FAST_ZERO: 1 << 11,
} as const;

/** Option types (NBD_OPT_*), sent by the client during the handshake. */
export const Opt = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  /** 4: NBD_OPT_PEEK_EXPORT, withdrawn. */
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  /** 11: NBD_OPT_EXTENDED_HEADERS (64-bit requests; not supported: answered ERR_UNSUP). */
  EXTENDED_HEADERS: 11,
} as const;

/** Option reply types (NBD_REP_*). Errors have bit 31 set. */
export const Rep = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  /** 2^31 + 1 */
  ERR_UNSUP: 0x80000001,
  /** 2^31 + 2 */
  ERR_POLICY: 0x80000002,
  /** 2^31 + 3 */
  ERR_INVALID: 0x80000003,
  /** 2^31 + 4 */
  ERR_PLATFORM: 0x80000004,
  /** 2^31 + 5 */
  ERR_TLS_REQD: 0x80000005,
  /** 2^31 + 6 */
  ERR_UNKNOWN: 0x80000006,
  /** 2^31 + 7 */
  ERR_SHUTDOWN: 0x80000007,
  /** 2^31 + 8 */
  ERR_BLOCK_SIZE_REQD: 0x80000008,
  /** 2^31 + 9 */
  ERR_TOO_BIG: 0x80000009,
} as const;

/** Information types in NBD_REP_INFO replies to NBD_OPT_INFO / NBD_OPT_GO. */
export const Info = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
} as const;

/** Request types (NBD_CMD_*). */
export const Cmd = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
  /** 8: NBD_CMD_RESIZE (experimental; unknown here, answered EINVAL). */
  RESIZE: 8,
} as const;

/** Command flags (16 bits) on a request. */
export const CmdFlag = {
  /** bit 0: NBD_CMD_FLAG_FUA, valid on every command once SEND_FUA is advertised. */
  FUA: 1 << 0,
  /** bit 1: NBD_CMD_FLAG_NO_HOLE, WRITE_ZEROES only. */
  NO_HOLE: 1 << 1,
  /** bit 2: NBD_CMD_FLAG_DF, READ only, with structured replies. */
  DF: 1 << 2,
  /** bit 3: NBD_CMD_FLAG_REQ_ONE, BLOCK_STATUS only. */
  REQ_ONE: 1 << 3,
  /** bit 4: NBD_CMD_FLAG_FAST_ZERO, WRITE_ZEROES only. */
  FAST_ZERO: 1 << 4,
} as const;

/** Structured reply chunk flags. */
export const ReplyFlag = {
  /** bit 0: NBD_REPLY_FLAG_DONE, set on the last chunk of a reply. */
  DONE: 1 << 0,
} as const;

/** Structured reply chunk types (NBD_REPLY_TYPE_*). Error types have bit 15 set. */
export const ReplyType = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  /** 2^15 + 1 */
  ERROR: 0x8001,
  /** 2^15 + 2 */
  ERROR_OFFSET: 0x8002,
} as const;

/** Error values carried in replies (NBD_E*). These are the only values the spec allows. */
export const NbdErrno = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

/** Flags of the `base:allocation` metadata context. */
export const AllocationState = {
  /** bit 0: NBD_STATE_HOLE, nothing stores the range. */
  HOLE: 1 << 0,
  /** bit 1: NBD_STATE_ZERO, the range reads as zeros. */
  ZERO: 1 << 1,
} as const;

/** Sizes of fixed-length messages, in bytes. */
export const Size = {
  /** NBDMAGIC + IHAVEOPT + 16-bit handshake flags. */
  GREETING: 18,
  CLIENT_FLAGS: 4,
  /** IHAVEOPT + option + length. */
  OPTION_HEADER: 16,
  /** magic + option + reply type + length. */
  OPTION_REPLY_HEADER: 20,
  /** size + flags + 124 zero bytes, the answer to NBD_OPT_EXPORT_NAME. */
  EXPORT_NAME_REPLY: 134,
  EXPORT_NAME_REPLY_NO_ZEROES: 10,
  /** magic + flags + type + handle + offset + length. */
  REQUEST: 28,
  /** magic + error + handle. */
  SIMPLE_REPLY: 16,
  /** magic + flags + type + handle + length. */
  STRUCTURED_HEADER: 20,
} as const;

/** Limits the spec sets on strings, and the ones cowdisk chooses. */
export const Limit = {
  /** A string (export name, query, message) MUST be no longer than 4096 bytes. */
  STRING: 4096,
  /** The block sizes cowdisk advertises: at most 32 MiB per READ or WRITE (2^25). */
  MAX_BLOCK: 32 * 1024 * 1024,
  /** DF reads up to this length MUST be honoured unfragmented; cowdisk honours any legal length. */
  DF_REQUIRED: 65536,
} as const;

/** Names for logs and error messages. */
export function commandName(cmd: number): string {
  for (const [name, value] of Object.entries(Cmd)) if (value === cmd) return `NBD_CMD_${name}`;
  return `command ${cmd}`;
}

export function optionName(opt: number): string {
  for (const [name, value] of Object.entries(Opt)) if (value === opt) return `NBD_OPT_${name}`;
  return `option ${opt}`;
}
