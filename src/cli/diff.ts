/**
 * `cowdisk diff IMAGE [--against LAYER] [--files] [--json]`: what an image changed, as byte ranges
 * with their state, or (--files, ext4) as the paths `docker diff` would print
 * (src/ops/diff.ts, src/fsdiff/files.ts). Read-only: it runs while the image is served.
 */
import type { Command } from 'commander';
import { diffFiles, diffRanges, openDiff, type DiffResult } from '../index.js';
import { formatOption, type FormatCliValue } from './format-option.js';
import { count, formatTable, printJson, printLines } from './output.js';
import { withProgress } from './progress.js';
import { formatSize, sizeOption } from './size.js';

interface DiffCliOptions {
  against?: string;
  files?: boolean;
  blockSize?: number;
  json?: boolean;
  format?: FormatCliValue;
}

export function register(program: Command): void {
  program
    .command('diff')
    .description('Show what an image changed over its parent (or --against another image): byte ranges, or --files on ext4.')
    .argument('<image>', 'an overlay, a snapshot or a raw image; opened read-only, so it may be served meanwhile')
    .option('--against <layer>', 'compare with this image (a layer below, or any image of the same size) instead of the parent')
    .option('--files', 'name the files that changed in the ext2/3/4 file system on the disk: A added, C changed, D deleted')
    .option('--block-size <size>', 'block size when IMAGE is a bare raw file (default 64K)', sizeOption('--block-size'))
    .option('--json', 'print JSON: {image, against, size, ranges: [{offset, length, state}], writtenBytes, zeroedBytes, ..., files?}')
    .addOption(formatOption())
    .addHelpText(
      'after',
      `
A range is listed when its bytes read differently, in 4 KiB units: "written" where the image
stores data, "zeroed" where a layer marks it zero (a trim, a zeroed block). Bytes rewritten with
what the parent held are not a change. With no parent the image is compared with an empty disk.
A served overlay is seen as of its last flush.

--files reads the file system of both disks through nbdfuse (package libnbd-bin) and debugfs
(package e2fsprogs); a file only read is not listed.

Examples:
  $ cowdisk diff vm1.cow
  OFFSET  LENGTH  STATE
   65536   65536  zeroed
  200704    8192  written
  vm1.cow differs from /vms/base.snap in 2 ranges: 8 KiB written, 64 KiB zeroed.
  $ cowdisk diff --files vm1.cow
  C /etc
  A /etc/motd
  D /tmp/build.log`,
    )
    .action(async (image: string, options: DiffCliOptions) => {
      const sides = await openDiff(image, { against: options.against, rawBlockSize: options.blockSize, format: options.format });
      try {
        const result = await withProgress(`comparing ${image}`, (onProgress) => diffRanges(sides, onProgress));
        const files = options.files ? await diffFiles(sides, result.ranges) : undefined;
        if (options.json) printJson(files ? { ...result, files } : result);
        else if (files) printLines(files.map((f) => `${f.kind} ${f.path}`));
        else printLines(render(image, result));
      } finally {
        await sides.close();
      }
    });
}

function render(image: string, r: DiffResult): string[] {
  const against = r.against ?? 'an empty disk';
  if (r.ranges.length === 0) return [`${image} reads the same as ${against}.`];
  const rows = [['OFFSET', 'LENGTH', 'STATE'], ...r.ranges.map((x) => [String(x.offset), String(x.length), x.state])];
  return [
    ...formatTable(rows, [0, 1]),
    `${image} differs from ${against} in ${count(r.ranges.length, 'range')}: ${formatSize(r.writtenBytes)} written, ${formatSize(r.zeroedBytes)} zeroed.`,
  ];
}
