/**
 * `cowdisk create IMAGE --size SIZE`: an empty writable overlay with no parent, a blank disk.
 * Whatever the size, the cost is a header and a sparse file (src/ops/create.ts).
 */
import type { Command } from 'commander';
import { createImage } from '../index.js';
import { printLines } from './output.js';
import { countOption, formatSize, sizeOption } from './size.js';

interface CreateCliOptions {
  size: number;
  blockSize?: number;
  subBlocks?: number;
}

export function register(program: Command): void {
  program
    .command('create')
    .description('Create an empty writable overlay (a blank disk) with no parent.')
    .argument('<image>', 'the overlay file to create; it must not exist')
    .requiredOption('--size <size>', 'virtual disk size: bytes, or with K, M, G, T, P (powers of 1024), e.g. 10G', sizeOption('--size'))
    .option('--block-size <size>', 'block size, the unit of allocation: a power of two from 4K to 2M (default 64K)', sizeOption('--block-size'))
    .option('--sub-blocks <n>', 'copy-on-write units per block, a power of two; 1 copies whole blocks (default: 4K units)', countOption('--sub-blocks', 1))
    .addHelpText(
      'after',
      `
The file is sparse: it takes a few kilobytes until something is written.

Example:
  $ cowdisk create scratch.cow --size 10G
  Created scratch.cow: an empty 10 GiB overlay in 64 KiB blocks.`,
    )
    .action(async (image: string, options: CreateCliOptions) => {
      const made = await createImage(image, { size: options.size, blockSize: options.blockSize, subBlocks: options.subBlocks });
      printLines([`Created ${image}: an empty ${formatSize(made.size)} overlay in ${formatSize(made.blockSize)} blocks.`]);
    });
}
