/**
 * `cowdisk devices`: which image is on which /dev/nbdN (also `cowdisk attach --list`).
 * Reads sysfs and the attach records only, so it needs neither root nor the native addon.
 */
import type { Command } from 'commander';
import { inventory, type DeviceEntry } from '../kernel/inventory.js';

export interface DevicesOptions {
  all?: boolean;
  json?: boolean;
}

export async function printDevices(options: DevicesOptions): Promise<void> {
  const { driverLoaded, devices } = await inventory();
  const shown = options.all ? devices : devices.filter((d) => d.state !== 'free');
  if (options.json) {
    process.stdout.write(`${JSON.stringify({ driverLoaded, devices: shown }, null, 2)}\n`);
    return;
  }
  if (!driverLoaded) process.stdout.write('The nbd driver is not loaded (`modprobe nbd` loads it).\n');
  if (shown.length === 0) {
    if (driverLoaded) process.stdout.write('No nbd device is attached.\n');
    return;
  }
  const rows = [['DEVICE', 'STATE', 'MODE', 'SIZE', 'PID', 'SINCE', 'IMAGE'], ...shown.map(row)];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const r of rows) process.stdout.write(`${r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ')}\n`);
  if (shown.some((d) => d.state === 'orphaned')) {
    process.stdout.write('\norphaned: the serving process died; `cowdisk detach DEVICE` disconnects it, then `cowdisk check IMAGE`.\n');
  }
}

function row(d: DeviceEntry): string[] {
  return [
    d.device,
    d.state,
    d.state === 'free' ? '-' : d.readOnly ? 'ro' : 'rw',
    d.sizeBytes ? humanSize(d.sizeBytes) : '-',
    d.pid === undefined ? '-' : String(d.pid),
    d.attachedAt ? d.attachedAt.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-',
    d.image ?? '-',
  ];
}

function humanSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${Number.isInteger(value) ? value : value.toFixed(1)} ${units[unit]}`;
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
