/**
 * `cowdisk snapshot OVERLAY [SNAPSHOT]`: seal what an overlay holds into a new snapshot layer and
 * leave the overlay empty on top of it (src/ops/snapshot.ts): the `docker commit` of
 * a disk. The disk read through the overlay does not change.
 */
import * as path from 'node:path';
import type { Command } from 'commander';
import { snapshotOverlay } from '../index.js';
import { count, printJson, printLines } from './output.js';
import { withProgress } from './progress.js';
import { formatSize } from './size.js';

export function register(program: Command): void {
  program
    .command('snapshot')
    .description("Seal an overlay's contents into a new snapshot layer; the overlay carries on, empty, on top of it.")
    .argument('<overlay>', 'a writable overlay (not while it is served or attached)')
    .argument('[snapshot]', 'the layer to write (default: next to the overlay, OVERLAY-NAME.N.snap)')
    .option('--json', 'print JSON: {overlay, layer, digest, parent, blocks, dataBytes}')
    .addHelpText(
      'after',
      `
The chain grows by one layer: the new layer's parent is the overlay's old parent. Only the blocks
the overlay holds are read, so the cost is the data written since the last snapshot, not the
disk size. Other clones can be made from the new layer (\`cowdisk clone\`). A crash at any point
leaves the old chain or the new one, both reading the same disk.

Example:
  $ cowdisk snapshot vm1.cow
  Sealed 112 blocks of vm1.cow into /vms/vm1.1.snap (sha256:5f0c...; 3.4 MiB stored).
  vm1.cow is now empty, on top of /vms/vm1.1.snap; the disk it presents is unchanged.`,
    )
    .action(async (overlay: string, snapshot: string | undefined, options: { json?: boolean }) => {
      const result = await withProgress(`sealing ${overlay}`, (onProgress) => snapshotOverlay(overlay, snapshot, { onProgress }));
      if (options.json) {
        printJson(result);
        return;
      }
      printLines([
        `Sealed ${count(result.blocks, 'block')} of ${overlay} into ${result.layer} (${result.digest}; ${formatSize(result.dataBytes)} stored).`,
        `${overlay} is now empty, on top of ${result.layer}; the disk it presents is unchanged.`,
        ...(result.parent ? [] : [`${path.basename(result.layer)} has no parent: it stands alone.`]),
      ]);
    });
}
