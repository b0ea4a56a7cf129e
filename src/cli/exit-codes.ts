import { CowdiskError, ErrorCode } from '../index.js';
/**
 * Exit codes, documented in docs/CLI.md. Scripts branch on these, so they never change meaning.
 */

export const ExitCode = {
  /** Success. */
  OK: 0,
  /** An operation failed (I/O, a missing or changed parent, a locked image, ...). */
  FAILURE: 1,
  /** The command line is wrong (unknown option, missing argument, a size that does not parse). */
  USAGE: 2,
  /** `check` found damage (or a file is corrupt, truncated or not a cowdisk image). */
  CORRUPT: 3,
  /** A bug in cowdisk: please report it with the message. */
  INTERNAL: 70,

  forError(err: CowdiskError): number {
    switch (err.code) {
      case ErrorCode.INVALID_ARGUMENT:
        return ExitCode.USAGE;
      case ErrorCode.CORRUPT:
      case ErrorCode.TRUNCATED:
      case ErrorCode.BAD_MAGIC:
      case ErrorCode.BAD_VERSION:
        return ExitCode.CORRUPT;
      default:
        return ExitCode.FAILURE;
    }
  },
} as const;
