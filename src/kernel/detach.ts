/**
 * Detaching a device from another process: the library behind `cowdisk detach DEVICE`.
 *
 * The serving process (`cowdisk attach`) owns the image; this side only talks to the kernel. It
 * flushes the device (refusing while it is mounted), asks the driver to disconnect, and the
 * serving process, seeing its connections end, closes the image and removes its attach record.
 * Waiting for that record to go, not just for the process, is what tells "closed cleanly" from
 * "the server exited without finishing": only a clean close removes it.
 *
 * A record whose process died (killed, crashed) is an orphan: the kernel still has the device
 * configured but nothing answers. Detaching it disconnects the device without the doomed flush,
 * removes the record and says the image needs `cowdisk check`.
 */
import { CowdiskError, ErrorCode } from '../errors.js';
import { devicePath, readDevice } from './devices.js';
import { disconnectKernel, flushDevice, kernelInterface, requireNative, requireRoot } from './driver.js';
import { isAlive, readRecord, removeRecord, type AttachRecord } from './records.js';

export interface DetachOptions {
  /** Disconnect even when mounted or not attached by cowdisk (unwritten data is lost). */
  force?: boolean;
  /** How long to wait for the serving process to close the image. */
  timeoutMs?: number;
}

export interface DetachResult {
  device: string;
  /** The attach record, when cowdisk had attached the device. */
  record: AttachRecord | undefined;
  /** The server had died before the detach: the image was not closed cleanly. */
  orphaned: boolean;
}

export async function detach(index: number, options: DetachOptions = {}): Promise<DetachResult> {
  const binding = requireNative();
  requireRoot('detaching an nbd device');
  await kernelInterface(binding);
  const device = devicePath(index);
  const force = options.force ?? false;
  const [info, record] = await Promise.all([readDevice(index), readRecord(index)]);
  const alive = record !== undefined && isAlive(record);

  if (!info?.running && !alive) {
    if (record) {
      await removeRecord(index);
      return { device, record, orphaned: true };
    }
    throw new CowdiskError(ErrorCode.NOT_ATTACHED, `${device} has nothing attached (\`cowdisk devices\` lists what is).`, { path: device });
  }
  if (!record && !force) {
    throw new CowdiskError(
      ErrorCode.NOT_ATTACHED,
      `${device} is connected, but not by cowdisk${info?.pid ? ` (pid ${info.pid})` : ''}; disconnect it with the tool that attached it ` +
        `(\`nbd-client -d ${device}\`), or \`cowdisk detach --force ${device}\`.`,
      { path: device },
    );
  }
  if (info?.running) {
    // An orphan's flush could only fail: nothing serves the device any more.
    if (alive || !record) await flushDevice(index, force);
    await disconnectKernel(binding, index);
  }
  if (!record) return { device, record, orphaned: false };
  if (!alive) {
    await removeRecord(index);
    return { device, record, orphaned: true };
  }
  await waitForClose(record, options.timeoutMs ?? 60_000);
  return { device, record, orphaned: false };
}

/** Waits until the serving process has removed its record (closed the image cleanly). */
async function waitForClose(record: AttachRecord, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!(await readRecord(record.index))) return;
    if (!isAlive(record)) {
      await removeRecord(record.index);
      throw new CowdiskError(
        ErrorCode.IO,
        `the cowdisk process serving ${record.image} (pid ${record.pid}) exited without closing it cleanly; ` +
          `its output says why. Check the image with \`cowdisk check ${record.image}\`.`,
        { path: record.image },
      );
    }
    if (Date.now() > deadline) {
      throw new CowdiskError(
        ErrorCode.IO,
        `${record.device} is disconnected, but the cowdisk process serving ${record.image} (pid ${record.pid}) has not closed it ` +
          `after ${Math.round(timeoutMs / 1000)} s; it may still be flushing. \`cowdisk devices\` shows when it is done.`,
        { path: record.image },
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
