/**
 * `cowdisk flatten IMAGE OUT [--overlay]`: the whole chain as one self-contained layer with no
 * parent: a sealed snapshot (default) or a writable overlay (src/ops/flatten.ts).
 */
import type { Command } from 'commander';
import { flattenImage } from '../index.js';
import { formatOption, type FormatCliValue } from './format-option.js';
import { count, printJson, printLines } from './output.js';
import { withProgress } from './progress.js';
import { sizeOption } from './size.js';

interface FlattenCliOptions {
  overlay?: boolean;
  blockSize?: number;
  json?: boolean;
  format?: FormatCliValue;
}

export function register(program: Command): void {
  program
    .command('flatten')
    .description('Write the whole chain as one self-contained layer with no parent: a sealed snapshot, or --overlay.')
    .argument('<image>', 'an overlay (not while it is served for writing), a snapshot or a raw image; it is only read')
    .argument('<out>', 'the file to create; it must not exist')
    .option('--overlay', 'write a writable overlay with no parent instead of a sealed snapshot layer')
    .option('--block-size <size>', 'block size when IMAGE is a bare raw file (default 64K)', sizeOption('--block-size'))
    .option('--json', 'print JSON: {image, out, kind, digest, depth, blocks}')
    .addOption(formatOption())
    .addHelpText(
      'after',
      `
A sealed layer is the usual result: it can be cloned and shared, and its digest names its
contents. --overlay gives a disk that lives on alone, detached from its chain. Either way only
blocks some layer holds are read, and blocks of zeros are left out.

Examples:
  $ cowdisk flatten vm1.cow golden.snap
  Flattened vm1.cow (3 layers) into golden.snap: a sealed layer with no parent, 5120 blocks, sha256:77ab...
  $ cowdisk flatten --overlay vm1.cow standalone.cow`,
    )
    .action(async (image: string, out: string, options: FlattenCliOptions) => {
      const result = await withProgress(`flattening ${image}`, (onProgress) => flattenImage(image, out, { overlay: options.overlay, rawBlockSize: options.blockSize, format: options.format, onProgress }));
      if (options.json) {
        printJson(result);
        return;
      }
      const what = result.kind === 'snapshot' ? `a sealed layer with no parent, ${count(result.blocks, 'block')}, ${result.digest}` : `a writable overlay with no parent, ${count(result.blocks, 'block')}`;
      printLines([`Flattened ${image} (${count(result.depth, 'layer')}) into ${out}: ${what}.`]);
    });
}
