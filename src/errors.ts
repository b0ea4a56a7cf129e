/**
 * Every error cowdisk raises on purpose is a CowdiskError with a stable `code` that callers and
 * tests match on (never the message, which is for people and may be reworded). The message says
 * what happened and what to do next. `path` names the file at fault when there is one.
 *
 * Codes are grouped by who has to act:
 *   the user's input or arguments .......... COWDISK_E_INVALID_ARGUMENT, _OUT_OF_RANGE, _READ_ONLY
 *   a file that is not what it should be ... COWDISK_E_BAD_MAGIC, _BAD_VERSION, _TRUNCATED, _CORRUPT
 *   the chain between files ................ COWDISK_E_PARENT_MISSING, _PARENT_CHANGED, _NOT_SEALED
 *   the environment ........................ COWDISK_E_IO, _LOCKED, _UNSUPPORTED, ...
 *   the kernel's nbd devices (attach) ...... COWDISK_E_NO_NBD_DRIVER, _DEVICE_BUSY, _NOT_ATTACHED, _NOT_ROOT, _NO_NATIVE
 *   a registry (push, pull, clone) ......... COWDISK_E_REGISTRY, _AUTH, _TLS, _NOT_COWDISK (and _NOT_FOUND, _CORRUPT)
 *   NBD over a network (serve) ............. COWDISK_E_TLS_CREDENTIALS, _INSECURE, and per refused client
 *                                            COWDISK_E_TLS_HANDSHAKE, _TLS_REQUIRED
 */

export const ErrorCode = {
  /** An argument is malformed (a size that does not parse, a block size that is not a power of two). */
  INVALID_ARGUMENT: 'COWDISK_E_INVALID_ARGUMENT',
  /** A request reaches past the end of the virtual disk. */
  OUT_OF_RANGE: 'COWDISK_E_OUT_OF_RANGE',
  /** A write-like request on an image or export opened read-only. */
  READ_ONLY: 'COWDISK_E_READ_ONLY',
  /** The file does not start with a cowdisk magic: it is not a cowdisk image of the expected kind. */
  BAD_MAGIC: 'COWDISK_E_BAD_MAGIC',
  /** The file is a cowdisk image of a format version this build cannot read. */
  BAD_VERSION: 'COWDISK_E_BAD_VERSION',
  /** The file is shorter than its own header says it must be. */
  TRUNCATED: 'COWDISK_E_TRUNCATED',
  /** A checksum, digest or structural invariant does not hold: the file is damaged. */
  CORRUPT: 'COWDISK_E_CORRUPT',
  /** The parent a child refers to cannot be found at the recorded path. */
  PARENT_MISSING: 'COWDISK_E_PARENT_MISSING',
  /** The parent exists but is not the file the child was made on (size, fingerprint or digest differ). */
  PARENT_CHANGED: 'COWDISK_E_PARENT_CHANGED',
  /** A writable overlay was used where a sealed, read-only layer is required. */
  NOT_SEALED: 'COWDISK_E_NOT_SEALED',
  /** The operating system refused an I/O operation. */
  IO: 'COWDISK_E_IO',
  /** Another process holds the image open for writing. */
  LOCKED: 'COWDISK_E_LOCKED',
  /** The operation is valid but not supported here (by this image, this build, or this kernel). */
  UNSUPPORTED: 'COWDISK_E_UNSUPPORTED',
  /** A file that would be created already exists. */
  EXISTS: 'COWDISK_E_EXISTS',
  /** A file that should exist does not. */
  NOT_FOUND: 'COWDISK_E_NOT_FOUND',
  /** The image was closed; no further requests are accepted. */
  CLOSED: 'COWDISK_E_CLOSED',
  /** The kernel has no nbd driver loaded: `modprobe nbd`, or nbdfuse + losetup without it. */
  NO_NBD_DRIVER: 'COWDISK_E_NO_NBD_DRIVER',
  /** The nbd device is connected to something else, mounted, or held open exclusively. */
  DEVICE_BUSY: 'COWDISK_E_DEVICE_BUSY',
  /** `detach` named a device that cowdisk has nothing attached to. */
  NOT_ATTACHED: 'COWDISK_E_NOT_ATTACHED',
  /** Connecting or disconnecting an nbd device needs root (CAP_SYS_ADMIN). */
  NOT_ROOT: 'COWDISK_E_NOT_ROOT',
  /** The native addon is not built or does not load; only `attach` / `detach` need it. */
  NO_NATIVE: 'COWDISK_E_NO_NATIVE',
  /** A registry cannot be reached, or answered in a way the distribution spec does not allow. */
  REGISTRY: 'COWDISK_E_REGISTRY',
  /** A registry refused the credentials (or wants some and none were found): log in and try again. */
  AUTH: 'COWDISK_E_AUTH',
  /** The TLS connection to a registry failed: an untrusted certificate, or a registry that speaks plain HTTP. */
  TLS: 'COWDISK_E_TLS',
  /** The registry holds something at that reference, but not a cowdisk chain (a container image, another artifact). */
  NOT_COWDISK: 'COWDISK_E_NOT_COWDISK',
  /** The TLS certificate directory or PSK file is missing, incomplete or unreadable as TLS credentials. */
  TLS_CREDENTIALS: 'COWDISK_E_TLS_CREDENTIALS',
  /** A listener on a non-loopback address without `--tls require` (plaintext to anyone who can reach it). */
  INSECURE: 'COWDISK_E_INSECURE',
  /** One client's TLS handshake failed (wrong key, untrusted or missing certificate, gone mid-handshake). */
  TLS_HANDSHAKE: 'COWDISK_E_TLS_HANDSHAKE',
  /** One client tried to negotiate without TLS on a server that requires it. */
  TLS_REQUIRED: 'COWDISK_E_TLS_REQUIRED',
} as const;

export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface CowdiskErrorOptions {
  path?: string;
  cause?: unknown;
  /** For CORRUPT errors: the block whose data or entry is bad, when one is known. */
  block?: number;
}

export class CowdiskError extends Error {
  readonly code: string;
  readonly path: string | undefined;
  readonly block: number | undefined;

  constructor(code: string, message: string, options: CowdiskErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CowdiskError';
    this.code = code;
    this.path = options.path;
    this.block = options.block;
  }
}

export function isCowdiskError(err: unknown, code?: string): err is CowdiskError {
  return err instanceof CowdiskError && (code === undefined || err.code === code);
}

/** Wraps an OS error (ENOENT, EIO, ...) from a file operation into a CowdiskError that names the file. */
export function ioError(err: unknown, path: string, doing: string): CowdiskError {
  if (err instanceof CowdiskError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'ENOENT') {
    return new CowdiskError(ErrorCode.NOT_FOUND, `${path}: no such file (while ${doing}).`, { path, cause: err });
  }
  if (e?.code === 'EEXIST') {
    return new CowdiskError(ErrorCode.EXISTS, `${path} already exists; choose another name or remove it first.`, {
      path,
      cause: err,
    });
  }
  const what = e?.code ? `${e.code}: ${e.message}` : String(err);
  return new CowdiskError(ErrorCode.IO, `${path}: ${doing} failed (${what}).`, { path, cause: err });
}
