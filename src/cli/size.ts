import { CowdiskError, ErrorCode } from '../index.js';
/**
 * Sizes and counts as people type and read them on the command line.
 *
 * Parsing: a number of bytes with an optional binary suffix, K, M, G, T or P (powers of 1024,
 * as qemu-img and truncate read them), in either case, optionally followed by "iB" or "B":
 * `10G`, `64K`, `1.5M`, `4096`, `2GiB`. A fraction is fine as long as the result is a whole number
 * of bytes (`1.5M` is, `1.3K` is not). Anything else, and anything beyond 2^53 bytes, is refused
 * with INVALID_ARGUMENT naming the option, which the CLI turns into exit code 2.
 *
 * Formatting: the largest unit that keeps the number at least 1, with at most two decimals, so
 * that a size printed by `info` can be pasted back into `--size` unchanged when it is exact.
 */

const UNITS = ['', 'K', 'M', 'G', 'T', 'P'] as const;
const SIZE = /^(\d+(?:\.\d+)?|\.\d+)\s*([kmgtp]?)(?:i?b)?$/i;

/** Parses a size such as `10G` into bytes; `what` names the option in the error (`--size`). */
export function parseSize(text: string, what: string): number {
  const match = SIZE.exec(text.trim());
  const refuse = (why: string) =>
    new CowdiskError(
      ErrorCode.INVALID_ARGUMENT,
      `${what} "${text}" ${why}: give a number of bytes, optionally with K, M, G, T or P (powers of 1024), e.g. 10G, 64K or 1.5M.`,
    );
  if (!match) throw refuse('is not a size');
  const power = UNITS.indexOf(match[2].toUpperCase() as (typeof UNITS)[number]);
  const bytes = Number(match[1]) * 1024 ** power;
  if (!Number.isInteger(bytes)) throw refuse('is not a whole number of bytes');
  if (!Number.isSafeInteger(bytes)) throw refuse('is too large');
  return bytes;
}

/** A commander option parser for a size option (errors leave through main.ts as exit code 2). */
export function sizeOption(what: string): (text: string) => number {
  return (text) => parseSize(text, what);
}

/** Parses a whole number of at least `minimum` (a count, not a size): `--sub-blocks 16`. */
export function parseCount(text: string, what: string, minimum: number): number {
  const n = /^\d+$/.test(text.trim()) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < minimum) {
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `${what} must be a whole number of at least ${minimum}, not "${text}".`);
  }
  return n;
}

export function countOption(what: string, minimum: number): (text: string) => number {
  return (text) => parseCount(text, what, minimum);
}

/** Formats bytes for people: `64 KiB`, `1.5 GiB`, `100 GiB`, `512 B`. */
export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  let power = 1;
  // Compare rounded values, so that 1048575 bytes reads "1 MiB" rather than "1024 KiB".
  while (power < UNITS.length - 1 && rounded(bytes / 1024 ** (power + 1)) >= 1) power++;
  return `${rounded(bytes / 1024 ** power)} ${UNITS[power]}iB`;
}

function rounded(value: number): number {
  return Number(value.toFixed(2));
}
