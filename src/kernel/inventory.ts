/**
 * Which image is on which device: sysfs (what the kernel runs) joined with the attach records
 * (what cowdisk serves there). Needs neither root nor the native addon, so `cowdisk devices`
 * works for anyone, everywhere.
 *
 * States:
 *   attached   a live cowdisk process serves the device
 *   orphaned   a record whose process died: the device answers nothing, the image is dirty;
 *              `cowdisk detach` cleans it up
 *   foreign    the device runs, but not for cowdisk (nbd-client, qemu-nbd -c, ...)
 *   free       nothing attached
 */
import { listDevices, devicePath } from './devices.js';
import { isAlive, listRecords, type AttachRecord } from './records.js';

export type DeviceState = 'attached' | 'orphaned' | 'foreign' | 'free';

export interface DeviceEntry {
  device: string;
  index: number;
  state: DeviceState;
  sizeBytes: number;
  readOnly: boolean;
  /** The image cowdisk serves there, or the kernel's backend identifier for a foreign device. */
  image: string | undefined;
  /** The serving process (cowdisk's) or the pid sysfs reports (foreign). */
  pid: number | undefined;
  attachedAt: string | undefined;
}

export interface Inventory {
  /** The driver is loaded (sysfs shows nbd devices). */
  driverLoaded: boolean;
  devices: DeviceEntry[];
}

export async function inventory(): Promise<Inventory> {
  const [devices, records] = await Promise.all([listDevices(), listRecords()]);
  const byIndex = new Map(records.map((r) => [r.index, r]));
  const entries: DeviceEntry[] = devices.map((d) => {
    const record = byIndex.get(d.index);
    byIndex.delete(d.index);
    if (record) return fromRecord(record, d.sizeBytes);
    return {
      device: d.path,
      index: d.index,
      state: d.running ? 'foreign' : 'free',
      sizeBytes: d.sizeBytes,
      readOnly: d.readOnly,
      image: d.backend,
      pid: d.pid,
      attachedAt: undefined,
    };
  });
  // Records for devices sysfs no longer has (the driver was unloaded under them).
  for (const record of byIndex.values()) entries.push(fromRecord(record, 0));
  entries.sort((a, b) => a.index - b.index);
  return { driverLoaded: devices.length > 0, devices: entries };
}

function fromRecord(record: AttachRecord, sizeBytes: number): DeviceEntry {
  return {
    device: devicePath(record.index),
    index: record.index,
    state: isAlive(record) ? 'attached' : 'orphaned',
    sizeBytes,
    readOnly: record.readOnly,
    image: record.image,
    pid: record.pid,
    attachedAt: record.attachedAt,
  };
}
