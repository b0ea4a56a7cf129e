/**
 * `cowdisk gc OVERLAY`: give back the space an overlay holds for nothing: stored zeros and data
 * its map does not reference (src/ops/gc.ts).
 */
import type { Command } from 'commander';
import { gcImage } from '../index.js';
import { printJson, printLines } from './output.js';
import { withProgress } from './progress.js';
import { formatSize } from './size.js';

export function register(program: Command): void {
  program
    .command('gc')
    .description('Reclaim space in an overlay: stored zeros become zero blocks, unreferenced data is punched out.')
    .argument('<overlay>', 'a writable overlay (not while it is served or attached)')
    .option('--json', 'print JSON: {image, before, after, zerosReleased, supported}')
    .addHelpText(
      'after',
      `
The disk the overlay presents does not change. Unreferenced data is what a crash leaves behind
(written, never recorded in the map) or a trim whose hole could not be punched; \`cowdisk check
--repair\` reclaims it too. Sealed layers are never modified and have nothing to collect.

Example:
  $ cowdisk gc vm1.cow
  vm1.cow: 8.2 MiB reclaimed (40.5 MiB -> 32.3 MiB on disk); 6 MiB of stored zeros became zero blocks.`,
    )
    .action(async (overlay: string, options: { json?: boolean }) => {
      const result = await withProgress(`collecting ${overlay}`, (onProgress) => gcImage(overlay, { onProgress }));
      if (options.json) {
        printJson(result);
        return;
      }
      const reclaimed = Math.max(0, result.before - result.after);
      const lines = [
        `${overlay}: ${formatSize(reclaimed)} reclaimed (${formatSize(result.before)} -> ${formatSize(result.after)} on disk); ${formatSize(result.zerosReleased)} of stored zeros became zero blocks.`,
      ];
      if (!result.supported) lines.push('This file system (or a build without the native addon) cannot punch holes: space under unreferenced data was not given back.');
      printLines(lines);
    });
}
