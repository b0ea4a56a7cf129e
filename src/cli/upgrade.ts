/**
 * `cowdisk upgrade LAYER [--json]`: a version 1 snapshot layer rewritten as version 2 in place,
 * atomically, keeping its layer digest (src/ops/upgrade.ts).
 */
import type { Command } from 'commander';
import { upgradeLayer } from '../index.js';
import { printJson, printLines } from './output.js';
import { withProgress } from './progress.js';
import { formatSize } from './size.js';

export function register(program: Command): void {
  program
    .command('upgrade')
    .description('Rewrite a format version 1 snapshot layer as version 2, in place and atomically, keeping its layer digest.')
    .argument('<layer>', 'a sealed snapshot layer; a layer already of version 2 is left as it is')
    .option('--json', 'print JSON: {layer, from, to, upgraded, digest, bytesBefore, bytesAfter}')
    .addHelpText(
      'after',
      `
Version 2 stores each block in 4 KiB frames, so a 4 KiB read decodes 4 KiB (version 1 decodes
the whole block). The layer digest depends on the content only, so it does not change: every
clone and child of the layer stays valid. The new file is written beside the old one and
renamed over it once complete; a layer whose blocks fail their digests is refused and left as it
was (\`cowdisk check\` names them). Only the layer's own file is read; its parent need not be there.

Example:
  $ cowdisk upgrade base.snap
  Upgraded base.snap from format version 1 to 2: 286.1 MiB, now 291.4 MiB; digest sha256:5f0c... unchanged.`,
    )
    .action(async (layer: string, options: { json?: boolean }) => {
      const result = await withProgress(`upgrading ${layer}`, (onProgress) => upgradeLayer(layer, { onProgress }));
      if (options.json) printJson(result);
      else if (!result.upgraded) printLines([`${layer} is already format version ${result.to}; nothing was changed.`]);
      else {
        printLines([
          `Upgraded ${layer} from format version ${result.from} to ${result.to}: ${formatSize(result.bytesBefore)}, now ${formatSize(result.bytesAfter)}; digest ${result.digest} unchanged.`,
        ]);
      }
    });
}
