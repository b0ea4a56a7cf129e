/**
 * `cowdisk import RAW SNAPSHOT`: a raw disk image becomes a sealed snapshot layer, the read-only
 * base that clones are made on. The work is src/ops/import.ts; this prints a progress bar and
 * then what the new layer holds.
 */
import type { Command } from 'commander';
import { describeImage, importRaw, type ImportResult } from '../index.js';
import { count, printJson, printLines } from './output.js';
import { withProgress } from './progress.js';
import { formatSize, sizeOption } from './size.js';

interface ImportCliOptions {
  blockSize?: number;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command('import')
    .description('Turn a raw disk image into a sealed, compressed, checksummed snapshot layer.')
    .argument('<raw>', 'the raw image to read (any file; it is not modified)')
    .argument('<snapshot>', 'the snapshot layer to write; it must not exist')
    .option('--block-size <size>', 'block size: a power of two from 4K to 2M (default 64K); every clone of the layer uses it', sizeOption('--block-size'))
    .option('--json', 'print the new layer as `cowdisk info --json` does')
    .addHelpText(
      'after',
      `
Blocks of zeros are recorded as such and take no space; other blocks are stored in 4 KiB frames,
lz4-compressed where that saves space, each block with its SHA-256. The layer digest is the
layer's identity.

Example:
  $ cowdisk import debian.raw debian.snap
  Imported debian.raw into debian.snap: 2 GiB in 64 KiB blocks.
    stored   9470 blocks, 388.4 MiB after compression
    zeros    23298 blocks
    digest   sha256:5f0c...`,
    )
    .action(async (raw: string, snapshot: string, options: ImportCliOptions) => {
      const made = await withProgress(`importing ${raw}`, (onProgress) => importRaw(raw, snapshot, { blockSize: options.blockSize, onProgress }));
      // --json promises `info --json`'s shape: the new layer described as info describes any image.
      if (options.json) printJson(await describeImage(snapshot));
      else printLines(summary(raw, snapshot, made));
    });
}

function summary(raw: string, snapshot: string, made: ImportResult): string[] {
  return [
    `Imported ${raw} into ${snapshot}: ${formatSize(made.size)} in ${formatSize(made.blockSize)} blocks.`,
    `  stored   ${count(made.storedBlocks, 'block')}, ${formatSize(made.dataBytes)} after compression`,
    `  zeros    ${count(made.zeroBlocks, 'block')}`,
    `  digest   ${made.digest}`,
  ];
}
