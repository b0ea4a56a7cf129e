/**
 * `cowdisk devices`: which image is on which /dev/nbdN (also `cowdisk attach --list`).
 * Reads sysfs and the attach records only, so it needs neither root nor the native addon.
 */
import type { Command } from 'commander';
import { inventory, type DeviceEntry } from '../index.js';
import { formatTable, printJson, printLines } from './output.js';
import { formatSize } from './size.js';

export interface DevicesOptions {
  all?: boolean;
  json?: boolean;
}

export async function printDevices(options: DevicesOptions): Promise<void> {
  const { driverLoaded, devices } = await inventory();
  const shown = options.all ? devices : devices.filter((d) => d.state !== 'free');
  if (options.json) return printJson({ driverLoaded, devices: shown });
  const lines: string[] = [];
  if (!driverLoaded) lines.push('The nbd driver is not loaded (`modprobe nbd` loads it).');
  if (shown.length === 0) {
    if (driverLoaded) lines.push('No nbd device is attached.');
    return printLines(lines);
  }
  lines.push(...formatTable([['DEVICE', 'STATE', 'MODE', 'SIZE', 'PID', 'SINCE', 'IMAGE'], ...shown.map(row)]));
  if (shown.some((d) => d.state === 'orphaned')) {
    lines.push('', 'orphaned: the serving process died; `cowdisk detach DEVICE` disconnects it, then `cowdisk check IMAGE`.');
  }
  printLines(lines);
}

function row(d: DeviceEntry): string[] {
  return [
    d.device,
    d.state,
    d.state === 'free' ? '-' : d.readOnly ? 'ro' : 'rw',
    d.sizeBytes ? formatSize(d.sizeBytes) : '-',
    d.pid === undefined ? '-' : String(d.pid),
    d.attachedAt ? d.attachedAt.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-',
    d.image ?? '-',
  ];
}

export function register(program: Command): void {
  program
    .command('devices')
    .description('Show which image is attached to which /dev/nbdN (no root needed).')
    .option('-a, --all', 'also list free devices')
    .option('--json', 'print JSON for scripts')
    .addHelpText(
      'after',
      `
States: attached (a cowdisk process serves it), orphaned (that process died: detach it, then check
the image), foreign (connected by another tool, e.g. nbd-client), free.

Example:
  $ cowdisk devices
  DEVICE     STATE     MODE  SIZE   PID   SINCE                 IMAGE
  /dev/nbd0  attached  rw    2 GiB  4242  2025-01-01 12:00:00Z  /var/lib/vms/vm1.cow`,
    )
    .action(async (options: DevicesOptions) => {
      await printDevices(options);
    });
}
