/**
 * `cowdisk map IMAGE [--json]`: every extent of the disk with its kind and the layer serving it,
 * as `qemu-img map` does for qcow2. Extents are printed as they are found (src/ops/map.ts), so
 * a large disk streams rather than building its whole map first.
 */
import type { Command } from 'commander';
import { mapExtents, openImage, type MappedExtent } from '../index.js';
import { formatOption, type FormatCliValue } from './format-option.js';
import { StreamedOutput } from './output.js';

interface MapCliOptions {
  json?: boolean;
  format?: FormatCliValue;
}

export function register(program: Command): void {
  program
    .command('map')
    .description('List the extents of the disk: data, zero or hole, and which layer serves each.')
    .argument('<image>', 'an overlay, a snapshot or a raw image; opened read-only')
    .option('--json', 'print a JSON array of {offset, length, kind, layer, path}')
    .addOption(formatOption())
    .addHelpText(
      'after',
      `
kind: data (stored in that layer), zero (that layer says it reads as zeros, hiding what is
below), hole (no layer stores it: reads as zeros). layer: 0 is the image itself, 1 its parent, and
so on; -1 when no layer answers. Offsets and lengths are in bytes (hexadecimal in the table).

Example:
  $ cowdisk map vm1.cow
  OFFSET       LENGTH       KIND  LAYER  FILE
  0x0          0x100000     data  0      /vms/vm1.cow
  0x100000     0x3ff00000   data  1      /vms/base.snap
  0x40000000   0x40000000   zero  1      /vms/base.snap
  $ cowdisk map --json vm1.cow | jq '.[] | select(.layer == 0)'`,
    )
    .action(async (image: string, options: MapCliOptions) => {
      const opened = await openImage(image, { readOnly: true, format: options.format });
      const out = new StreamedOutput();
      try {
        if (options.json) await printJson(mapExtents(opened.device), out);
        else await printTable(mapExtents(opened.device), out);
      } finally {
        await opened.close();
      }
      out.finish();
    });
}

const COLUMN = 14;

async function printTable(extents: AsyncIterable<MappedExtent>, out: StreamedOutput): Promise<void> {
  await out.write(`${'OFFSET'.padEnd(COLUMN)} ${'LENGTH'.padEnd(COLUMN)} KIND  LAYER  FILE\n`);
  const hex = (n: number) => `0x${n.toString(16)}`.padEnd(COLUMN);
  for await (const e of extents) {
    if (out.ended) break;
    await out.write(`${hex(e.offset)} ${hex(e.length)} ${e.kind.padEnd(4)}  ${String(e.layer).padEnd(5)}  ${e.path ?? '-'}\n`);
  }
}

/** A JSON array, one extent a line, written as the extents come. */
async function printJson(extents: AsyncIterable<MappedExtent>, out: StreamedOutput): Promise<void> {
  let first = true;
  await out.write('[');
  for await (const e of extents) {
    if (out.ended) break;
    await out.write(`${first ? '\n  ' : ',\n  '}${JSON.stringify(e)}`);
    first = false;
  }
  await out.write(first ? ']\n' : '\n]\n');
}
