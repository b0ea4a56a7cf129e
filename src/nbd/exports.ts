/**
 * An export is a name, a BlockDevice and a policy (read-only or not). This module says what the
 * server advertises for one: its transmission flags and its block size constraints. `attach` uses
 * the same two functions to tell the kernel exactly what a handshake would have told a client.
 *
 * What is advertised, and why:
 * - FLUSH and FUA always (on a read-only export they are accepted and do nothing), so a client
 *   never has to guess whether a write is durable.
 * - TRIM, WRITE_ZEROES and FAST_ZERO on writable exports: the overlay turns both into a per-block
 *   state change, which is why FAST_ZERO can be honest; a device that cannot zero quickly says so
 *   through `capabilities.fastZero` and FAST_ZERO requests are then refused with ENOTSUP at once.
 * - DF only when structured replies were negotiated (the spec requires it clear otherwise).
 * - CAN_MULTI_CONN when the device says so: every connection to an export shares one BlockDevice,
 *   so a flush on one connection covers writes answered on another.
 * - CACHE always (it reads the range through, warming the layers below).
 *
 * Block sizes: minimum 512 (1 for a device whose size is not a multiple of 512, or the tail would
 * be unreachable). The minimum is enforced only on connections that asked for NBD_INFO_BLOCK_SIZE
 * in NBD_OPT_GO, because only those promised to obey it; every other client gets byte granularity,
 * which the engine supports. Preferred is the chain's block size (the unit of copy-on-write: a
 * smaller write costs a read of the parent). Maximum is 32 MiB for READ and WRITE, the size the
 * spec says every client can rely on.
 */
import type { BlockDevice } from '../image/device.js';
import { Limit, TransmissionFlag as F } from './constants.js';

export interface ExportConfig {
  /** The export name clients ask for; "" is the default export. */
  name: string;
  device: BlockDevice;
  /** Refuse writes even when the device accepts them. */
  readOnly?: boolean;
  /** Shown to clients by NBD_OPT_LIST and NBD_INFO_DESCRIPTION. */
  description?: string;
}

export interface BlockSizes {
  minimum: number;
  preferred: number;
  maximum: number;
}

export interface FlagOptions {
  /** Structured replies were negotiated (enables DF). Default false, as for the kernel client. */
  structuredReplies?: boolean;
}

/** Whether writes to this export are refused. */
export function isReadOnly(exp: ExportConfig): boolean {
  return exp.readOnly === true || !exp.device.capabilities.writable;
}

/** The 16-bit transmission flags the server sends for this export. */
export function transmissionFlags(exp: ExportConfig, options: FlagOptions = {}): number {
  const caps = exp.device.capabilities;
  let flags = F.HAS_FLAGS | F.SEND_FLUSH | F.SEND_FUA | F.SEND_CACHE;
  if (isReadOnly(exp)) flags |= F.READ_ONLY;
  else flags |= F.SEND_TRIM | F.SEND_WRITE_ZEROES | F.SEND_FAST_ZERO;
  if (options.structuredReplies) flags |= F.SEND_DF;
  if (caps.multiConn) flags |= F.CAN_MULTI_CONN;
  return flags;
}

/** The block size constraints advertised in NBD_INFO_BLOCK_SIZE. */
export function blockSizes(exp: ExportConfig): BlockSizes {
  const device = exp.device;
  const minimum = device.size % 512 === 0 ? 512 : 1;
  let preferred = 512;
  while (preferred < device.blockSize && preferred < Limit.MAX_BLOCK) preferred *= 2;
  return { minimum, preferred, maximum: Limit.MAX_BLOCK };
}
