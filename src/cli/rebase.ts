/**
 * `cowdisk rebase OVERLAY NEWPARENT [--unsafe]`: put an overlay on another parent, keeping what it
 * reads (safe mode), or only rewriting the reference (src/ops/rebase.ts).
 */
import type { Command } from 'commander';
import { rebaseOverlay } from '../index.js';
import { printJson, printLines } from './output.js';
import { withProgress } from './progress.js';
import { formatSize } from './size.js';

interface RebaseCliOptions {
  unsafe?: boolean;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command('rebase')
    .description('Put an overlay on another sealed parent, keeping the disk it presents (or, with --unsafe, only re-pointing it).')
    .argument('<overlay>', 'a writable overlay (not while it is served or attached)')
    .argument('<new-parent>', 'a sealed snapshot or raw image of the same size (and, for a snapshot, block size)')
    .option('--unsafe', 'only rewrite the parent reference: for a parent that moved, or one you know reads the same')
    .option('--json', 'print JSON: {overlay, oldParent, newParent, copiedBytes, comparedBytes, comparedWholeDisk}')
    .addHelpText(
      'after',
      `
Safe mode copies into the overlay whatever reads differently under the new parent, wherever the
overlay leaves the block to its parent, then switches the reference: the disk is unchanged. Only
blocks held above the layers both chains share are compared; with nothing shared, the whole disk.

Examples:
  $ cowdisk rebase vm1.cow golden-v2.snap
  Rebased vm1.cow from /vms/golden-v1.snap onto /vms/golden-v2.snap: copied 3.1 MiB into it (compared 40 MiB).
  $ mv base.snap /archive/ && cowdisk rebase --unsafe vm1.cow /archive/base.snap`,
    )
    .action(async (overlay: string, newParent: string, options: RebaseCliOptions) => {
      const result = await withProgress(`rebasing ${overlay}`, (onProgress) => rebaseOverlay(overlay, newParent, { unsafe: options.unsafe, onProgress }));
      if (options.json) {
        printJson(result);
        return;
      }
      const from = result.oldParent ? `from ${result.oldParent} ` : '';
      if (options.unsafe) {
        printLines([`Re-pointed ${overlay} ${from}at ${result.newParent} without comparing contents (--unsafe).`]);
        return;
      }
      const whole = result.comparedWholeDisk ? '; the two chains share no layer, so the whole disk was compared' : '';
      printLines([`Rebased ${overlay} ${from}onto ${result.newParent}: copied ${formatSize(result.copiedBytes)} into it (compared ${formatSize(result.comparedBytes)}${whole}).`]);
    });
}
