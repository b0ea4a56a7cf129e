/**
 * `cowdisk export IMAGE OUT`: the disk as the whole chain reads it, flattened into one sparse raw
 * file (zero and unallocated ranges stay holes). The work is src/ops/export.ts.
 */
import type { Command } from 'commander';
import { exportRaw, openImage } from '../index.js';
import { formatOption, type FormatCliValue } from './format-option.js';
import { printLines } from './output.js';
import { withProgress } from './progress.js';
import { formatSize } from './size.js';

export function register(program: Command): void {
  program
    .command('export')
    .description('Write the disk an image presents (the whole chain, flattened) to a sparse raw file.')
    .argument('<image>', 'an overlay, a snapshot or a raw image; opened read-only')
    .argument('<out>', 'the raw file to write; it must not exist')
    .addOption(formatOption())
    .addHelpText(
      'after',
      `
The image is opened read-only, so it can be exported while it is served; writes that land
during the export may or may not be in the copy. Ranges that read as zeros become holes.

Example:
  $ cowdisk export vm1.cow vm1.raw
  Exported vm1.cow to vm1.raw: 20 GiB (3.1 GiB on disk).
  $ qemu-img compare vm1.raw 'nbd+unix:///?socket=vm1.sock'`,
    )
    .action(async (image: string, out: string, options: { format?: FormatCliValue }) => {
      const opened = await openImage(image, { readOnly: true, format: options.format });
      let written;
      try {
        written = await withProgress(`exporting ${image}`, (onProgress) => exportRaw(opened.device, out, { onProgress }));
      } finally {
        await opened.close();
      }
      printLines([`Exported ${image} to ${out}: ${formatSize(written.size)} (${formatSize(written.bytesOnDisk)} on disk).`]);
    });
}
