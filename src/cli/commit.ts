/**
 * `cowdisk commit OVERLAY [--into LAYER]`: merge an overlay into its parent (or down to LAYER), as
 * `qemu-img commit` does, except that sealed layers are never modified: a new layer replaces the
 * merged ones and they stay valid for every other clone (src/ops/commit.ts).
 */
import type { Command } from 'commander';
import { commitOverlay } from '../index.js';
import { count, printJson, printLines } from './output.js';
import { withProgress } from './progress.js';
import { formatSize } from './size.js';

interface CommitCliOptions {
  into?: string;
  output?: string;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command('commit')
    .description('Merge an overlay into its parent (or down to --into LAYER) as a new sealed layer; the overlay carries on, empty, on top.')
    .argument('<overlay>', 'a writable overlay with a parent (not while it is served or attached)')
    .option('--into <layer>', "the lowest layer to merge: a path, or a snapshot's digest (12 hex digits or more); default: the parent")
    .option('-o, --output <file>', 'the new layer (default: next to the overlay, OVERLAY-NAME.N.snap)')
    .option('--json', 'print JSON: {overlay, layer, digest, parent, blocks, dataBytes, merged}')
    .addHelpText(
      'after',
      `
Sealed layers are never modified in place, because other clones may stand on them: the merge
writes a new layer holding what the merged layers and the overlay read as, whose parent is the
parent of the lowest merged layer, and re-points the overlay at it. The merged layers are left
as they were. The chain does not grow (\`cowdisk snapshot\` adds a layer instead).

Example:
  $ cowdisk commit vm1.cow
  Committed vm1.cow into /vms/vm1.1.snap (sha256:9a1e...): 2048 blocks, 61 MiB stored, over /vms/debian.raw.
  Unchanged: /vms/base.snap. Other clones of it stay valid; vm1.cow no longer needs it.
  vm1.cow is now empty, on top of /vms/vm1.1.snap; the disk it presents is unchanged.`,
    )
    .action(async (overlay: string, options: CommitCliOptions) => {
      const result = await withProgress(`committing ${overlay}`, (onProgress) => commitOverlay(overlay, { into: options.into, output: options.output, onProgress }));
      if (options.json) {
        printJson(result);
        return;
      }
      const over = result.parent ? `over ${result.parent}` : 'with no parent: it stands alone';
      printLines([
        `Committed ${overlay} into ${result.layer} (${result.digest}): ${count(result.blocks, 'block')}, ${formatSize(result.dataBytes)} stored, ${over}.`,
        `Unchanged: ${result.merged.join(', ')}. Other clones of ${result.merged.length === 1 ? 'it' : 'them'} stay valid; ${overlay} no longer needs ${result.merged.length === 1 ? 'it' : 'them'}.`,
        `${overlay} is now empty, on top of ${result.layer}; the disk it presents is unchanged.`,
      ]);
    });
}
