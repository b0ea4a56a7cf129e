/**
 * `cowdisk clone PARENT OVERLAY`: a thin, writable clone of a sealed snapshot or a raw base.
 * The clone records where its parent is and what it is (its digest, or a raw file's size and
 * fingerprint), and costs a header and a sparse file however large the parent is.
 */
import type { Command } from 'commander';
import { cloneImage } from '../index.js';
import { formatOption, type FormatCliValue } from './format-option.js';
import { printLines } from './output.js';
import { countOption, formatSize, sizeOption } from './size.js';

interface CloneCliOptions {
  blockSize?: number;
  subBlocks?: number;
  format?: FormatCliValue;
}

export function register(program: Command): void {
  program
    .command('clone')
    .description('Make a thin writable overlay on top of a snapshot layer or a raw image.')
    .argument('<parent>', 'a sealed snapshot (from `cowdisk import`) or a raw image file; it is never written')
    .argument('<overlay>', 'the overlay file to create; it must not exist')
    .option('--block-size <size>', 'block size for a raw parent: a power of two from 4K to 2M (default 64K); a snapshot fixes its own', sizeOption('--block-size'))
    .option('--sub-blocks <n>', 'copy-on-write units per block, a power of two; 1 copies whole blocks (default: 4K units)', countOption('--sub-blocks', 1))
    .addOption(formatOption('PARENT'))
    .addHelpText(
      'after',
      `
The overlay refers to its parent by a path relative to itself and by the parent's identity: if
the parent is changed afterwards, opening the clone fails instead of showing wrong data. A
writable overlay cannot be a parent; seal it first with \`cowdisk snapshot\`.

Examples:
  $ cowdisk clone base.snap vm1.cow
  Cloned base.snap into vm1.cow: 20 GiB in 64 KiB blocks.
  $ cowdisk clone --block-size 256K debian.raw vm2.cow`,
    )
    .action(async (parent: string, overlay: string, options: CloneCliOptions) => {
      const made = await cloneImage(parent, overlay, { blockSize: options.blockSize, subBlocks: options.subBlocks, format: options.format });
      printLines([`Cloned ${parent} into ${overlay}: ${formatSize(made.size)} in ${formatSize(made.blockSize)} blocks.`]);
    });
}
