/**
 * Attaching an image to /dev/nbdN, served by this process: the library behind `cowdisk attach`.
 *
 * The kernel's nbd driver speaks only the transmission phase of NBD: whoever connects it has
 * already done the handshake and passes the export's size and flags along with the socket. So no
 * listener and no handshake here: each connection is a socketpair, the kernel gets one end and
 * our NBD server serves transmission on the other (`serveTransmission`), with exactly the flags a
 * handshake would have advertised (`transmissionFlags`), so the kernel sends FLUSH, FUA and TRIM
 * only when the image honours them. The server owns the image from then on and closes it.
 *
 * Order matters for a clean failure: everything that can be checked before touching the kernel
 * is (the options, addon, root, driver, a busy device, the image already attached), then the
 * image is opened (the engine's lock refuses a second writer), and only then is the device
 * connected. Any failure after the image opened closes it again.
 *
 * Requests wait for the server as long as it takes unless a timeout is given: the kernel fails a
 * timed-out request with an I/O error, which is what users of qemu-nbd and rbd-nbd complain
 * about when a server stalls under load. That holds for one connection only: with several, the
 * driver (nbd_xmit_timeout) applies the block layer's default of 30 s anyway, shuts down a
 * connection whose request outlives it and moves the request to another, and fails requests once
 * none is left.
 *
 * The end: `close()` flushes the kernel's view (refused while mounted, unless forced), disconnects
 * it, waits for every connection to end, closes the image (flushed, dirty flag cleared) and only
 * then removes the attach record, so a record left behind means "not closed cleanly". The same
 * end follows when something else disconnects the device (`cowdisk detach` from another shell):
 * `ended` resolves and the caller calls `close()`.
 */
import { closeSync } from 'node:fs';
import * as net from 'node:net';
import { debuglog } from 'node:util';
import { CowdiskError, ErrorCode } from '../errors.js';
import { NbdServer, isReadOnly, transmissionFlags, type ExportConfig } from '../nbd/index.js';
import { devicePath, firstFreeDevice, readDevice } from './devices.js';
import {
  connectKernel,
  disconnectKernel,
  flushDevice,
  kernelError,
  kernelInterface,
  requireNative,
  requireRoot,
  type KernelInterface,
} from './driver.js';
import { isAlive, listRecords, processStartTime, readRecord, removeRecord, writeRecord, type AttachRecord } from './records.js';

export interface AttachOptions {
  /** Path of the image (for the record, the error messages and /sys/block/nbdN/backend). */
  image: string;
  /** Opens the image as the export the kernel will see; called after the pre-flight checks. */
  openExport: () => Promise<ExportConfig>;
  /** Device index; undefined takes the first free device. */
  device?: number;
  /** Connections (sockets) to the kernel; more than one needs an image that supports multi-conn. */
  connections?: number;
  /** Seconds before the kernel fails a request; undefined or 0: never. */
  timeout?: number;
  /** Logical sector size the kernel uses (512 or up to the page size). */
  sectorSize?: number;
  /** Force the ioctl interface even where netlink exists (tests both paths). */
  kernelInterface?: KernelInterface;
  /** The server's polling window after a reply, in microseconds (NbdServerOptions.pollMicros). */
  pollMicros?: number;
}

const READY_TIMEOUT_MS = 10_000;
/**
 * The longest request timeout the kernel keeps as given: nbd_set_cmd_timeout stores seconds * HZ
 * in a 32-bit count of jiffies, unchecked, and HZ is at most 1000; a longer one could wrap around
 * to a far shorter timeout (under a second, for some values).
 */
const MAX_TIMEOUT_S = Math.floor(0xffff_ffff / 1000);
const debug = debuglog('attach');

export class Attachment {
  /** Resolves when the kernel has let go of every connection, whoever disconnected it. */
  readonly ended: Promise<void>;
  private closing: Promise<void> | undefined;

  constructor(
    readonly record: AttachRecord,
    private readonly server: NbdServer,
    private readonly sockets: net.Socket[],
    served: Promise<void>[],
    released: Promise<unknown>,
  ) {
    this.ended = Promise.all([...served, released]).then(() => undefined);
  }

  get device(): string {
    return this.record.device;
  }

  /**
   * Detaches (unless the kernel already let go), then closes the image and removes the record.
   * DEVICE_BUSY while the device is mounted, unless `force`; the attachment then stays as it was.
   */
  async close(options: { force?: boolean } = {}): Promise<void> {
    if (!this.closing) {
      this.closing = this.shutdown(options.force ?? false);
      this.closing.catch(() => (this.closing = undefined));
    }
    return this.closing;
  }

  private async shutdown(force: boolean): Promise<void> {
    const binding = requireNative();
    const info = await readDevice(this.record.index);
    if (info?.running && !this.sockets.every((s) => s.destroyed)) {
      await flushDevice(this.record.index, force);
      await disconnectKernel(binding, this.record.index);
    }
    await this.ended;
    await this.server.close();
    await removeRecord(this.record.index);
  }
}

/** Attaches an image to an nbd device; resolves once the device is readable. */
export async function attach(options: AttachOptions): Promise<Attachment> {
  const connections = options.connections ?? 1;
  if (!Number.isInteger(connections) || connections < 1 || connections > 16) {
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `--connections must be 1 to 16, not ${connections}.`);
  }
  const timeout = options.timeout ?? 0;
  if (!Number.isInteger(timeout) || timeout < 0 || timeout > MAX_TIMEOUT_S) {
    throw new CowdiskError(
      ErrorCode.INVALID_ARGUMENT,
      `--timeout must be 0 (wait as long as it takes) to ${MAX_TIMEOUT_S} seconds (about 49 days), not ${timeout}.`,
    );
  }
  const binding = requireNative();
  requireRoot('attaching an image to an nbd device');
  const how = await kernelInterface(binding, options.kernelInterface);
  await refuseAttached(options.image);
  let index = options.device;
  if (index !== undefined) await refuseBusy(index);
  else if (how === 'ioctl') index = (await firstFreeDevice())?.index ?? noFreeDevice();

  const exp = await options.openExport();
  const server = new NbdServer({ exports: [exp], pollMicros: options.pollMicros });
  const pairs: Array<[number, number]> = [];
  const sockets: net.Socket[] = [];
  const served: Promise<void>[] = [];
  let connected: number | undefined;
  try {
    if (connections > 1 && !exp.device.capabilities.multiConn) {
      throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `${options.image} cannot be served over several connections; use --connections 1.`);
    }
    // This thread now serves a block device: its allocations must not wait for writeback to that
    // device, or memory pressure deadlocks the two (best effort: needs Linux 5.6 and CAP_SYS_RESOURCE).
    debug('PR_SET_IO_FLUSHER: %s', binding.setIoFlusher() ? 'set' : 'not available');
    // Each pair's own end goes into a socket at once, so a socketpair() that fails (EMFILE) leaves
    // nothing the catch below does not close.
    for (let i = 0; i < connections; i++) {
      const pair = binding.socketpair();
      pairs.push(pair);
      const socket = new net.Socket({ fd: pair[1], readable: true, writable: true });
      sockets.push(socket);
      served.push(server.serveTransmission(socket, exp.name, { structuredReplies: false }));
    }
    const connection = await connectKernel(binding, how, {
      index,
      sockets: pairs.map(([kernel]) => kernel),
      sizeBytes: exp.device.size,
      sectorSize: options.sectorSize ?? 512,
      flags: transmissionFlags(exp, { structuredReplies: false }),
      timeout: timeout || undefined,
      backend: options.image,
    });
    connected = connection.index;
    closeKernelEnds(pairs);
    await waitReady(connection.index, connection.released);
    const record: AttachRecord = {
      index: connection.index,
      device: devicePath(connection.index),
      image: options.image,
      pid: process.pid,
      startTime: processStartTime(process.pid) ?? '',
      readOnly: isReadOnly(exp),
      connections,
      kernelInterface: how,
      attachedAt: new Date().toISOString(),
    };
    await writeRecord(record);
    return new Attachment(record, server, sockets, served, connection.released);
  } catch (err) {
    // Connected but not usable (it never started, or the record could not be written): leave no
    // configured device behind.
    if (connected !== undefined) await disconnectKernel(binding, connected).catch(() => {});
    closeKernelEnds(pairs);
    for (const s of sockets) s.destroy();
    await server.close().catch(() => {});
    throw err;
  }
}

/** Closes our copies of the kernel's ends: the kernel holds its own reference once connected. */
function closeKernelEnds(pairs: Array<[number, number]>): void {
  for (const pair of pairs) {
    if (pair[0] >= 0) closeSync(pair[0]);
    pair[0] = -1;
  }
}

function noFreeDevice(): never {
  throw new CowdiskError(
    ErrorCode.DEVICE_BUSY,
    'every nbd device is in use; detach one (`cowdisk devices` lists them) or load the driver with more (`modprobe nbd nbds_max=32`).',
  );
}

/** DEVICE_BUSY when the device runs already (cowdisk's or anyone's). */
async function refuseBusy(index: number): Promise<void> {
  const info = await readDevice(index);
  if (!info?.running) return;
  const record = await readRecord(index);
  const who = record && isAlive(record) ? `: cowdisk (pid ${record.pid}) serves ${record.image} there` : info.pid ? ` (served by pid ${info.pid})` : '';
  throw new CowdiskError(
    ErrorCode.DEVICE_BUSY,
    `${devicePath(index)} is already in use${who}. Name a free device, or leave DEVICE out to take the first free one.`,
    { path: devicePath(index) },
  );
}

/** LOCKED when a live cowdisk process already serves this image on some device. */
async function refuseAttached(image: string): Promise<void> {
  const other = (await listRecords()).find((r) => r.image === image && isAlive(r));
  if (!other) return;
  throw new CowdiskError(
    ErrorCode.LOCKED,
    `${image} is already attached to ${other.device} (cowdisk pid ${other.pid}); one writer at a time. ` +
      `Detach it first (\`cowdisk detach ${other.device}\`), or clone it and attach the clone.`,
    { path: image },
  );
}

/**
 * Waits until sysfs shows the device running: at once for netlink; for the ioctls once NBD_DO_IT
 * has started it on its thread, or failed, which ends `released` early with its error.
 */
async function waitReady(index: number, released: Promise<NodeJS.ErrnoException | null>): Promise<void> {
  let stopped: NodeJS.ErrnoException | null | undefined;
  void released.then((err) => (stopped = err));
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!(await readDevice(index))?.running) {
    if (stopped !== undefined) throw kernelError(stopped ?? new Error('the device stopped at once'), devicePath(index), 'starting');
    if (Date.now() > deadline) {
      throw new CowdiskError(ErrorCode.IO, `${devicePath(index)} did not start within ${READY_TIMEOUT_MS / 1000} s of connecting.`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}
