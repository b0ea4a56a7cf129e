/**
 * The one place that decides which NBD error value a failure becomes. The spec allows only eight
 * values (NBD_EPERM ... NBD_ESHUTDOWN); everything cowdisk can throw is mapped here, so the rest of
 * the server never picks a number by itself.
 *
 * The rules that come from the spec rather than from taste:
 * - a write past the end is NBD_ENOSPC, any other out-of-range request NBD_EINVAL;
 * - NBD_ENOTSUP only answers a WRITE_ZEROES that carried FAST_ZERO ("would not be fast");
 * - NBD_EOVERFLOW only answers a READ that carried DF;
 * - the OS's EDQUOT and EFBIG are NBD_ENOSPC;
 * - NBD_ENOMEM is avoided: an unknown failure is NBD_EIO, which is what a disk would say.
 */
import { CowdiskError, ErrorCode } from '../errors.js';
import { Cmd, CmdFlag, NbdErrno } from './constants.js';

/** Maps an error thrown while serving command `cmd` (with command flags `flags`) to an NBD error value. */
export function nbdErrno(err: unknown, cmd: number, flags: number): number {
  if (err instanceof CowdiskError) {
    switch (err.code) {
      case ErrorCode.READ_ONLY:
        return NbdErrno.EPERM;
      case ErrorCode.OUT_OF_RANGE:
        return pastEndErrno(cmd);
      case ErrorCode.INVALID_ARGUMENT:
        return NbdErrno.EINVAL;
      case ErrorCode.UNSUPPORTED:
        return flags & CmdFlag.FAST_ZERO ? NbdErrno.ENOTSUP : NbdErrno.EINVAL;
      case ErrorCode.CLOSED:
        return NbdErrno.ESHUTDOWN;
      case ErrorCode.IO:
        return osErrno(err.cause, flags);
      default:
        // CORRUPT, TRUNCATED, PARENT_CHANGED, ...: the data cannot be served; to the client that is an I/O error.
        return NbdErrno.EIO;
    }
  }
  return osErrno(err, flags);
}

/** A request reaching past the end of the export: ENOSPC for WRITE and WRITE_ZEROES, EINVAL for the rest. */
export function pastEndErrno(cmd: number): number {
  return cmd === Cmd.WRITE || cmd === Cmd.WRITE_ZEROES ? NbdErrno.ENOSPC : NbdErrno.EINVAL;
}

function osErrno(err: unknown, flags: number): number {
  switch ((err as NodeJS.ErrnoException | undefined)?.code) {
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return NbdErrno.ENOSPC;
    case 'EPERM':
    case 'EACCES':
    case 'EROFS':
      return NbdErrno.EPERM;
    case 'EINVAL':
      return NbdErrno.EINVAL;
    case 'ENOMEM':
      return NbdErrno.ENOMEM;
    case 'EOVERFLOW':
      return flags & CmdFlag.DF ? NbdErrno.EOVERFLOW : NbdErrno.EINVAL;
    case 'ENOTSUP':
    case 'EOPNOTSUPP':
      return flags & CmdFlag.FAST_ZERO ? NbdErrno.ENOTSUP : NbdErrno.EINVAL;
    default:
      return NbdErrno.EIO;
  }
}

/** A short human description of an error for NBD_REPLY_TYPE_ERROR messages (at most 4096 bytes). */
export function errorMessage(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.length > 1024 ? `${text.slice(0, 1021)}...` : text;
}
