/**
 * `cowdisk pull REF OUT`: a chain from a registry as local sealed layers (src/ops/pull.ts), with
 * a progress bar, then where each layer went.
 */
import type { Command } from 'commander';
import { pullImage, type PullResult } from '../index.js';
import { count, formatTable, printJson, printLines } from './output.js';
import { withProgress } from './progress.js';
import { addRegistryOptions, registryAccess, type RegistryCliOptions } from './registry-options.js';
import { formatSize } from './size.js';

interface PullCliOptions extends RegistryCliOptions {
  json?: boolean;
}

export function register(program: Command): void {
  const command = program
    .command('pull')
    .description('Download a chain from an OCI registry as local sealed layers, verified block by block.')
    .argument('<ref>', 'what: [oci://]HOST[:PORT]/REPO[:TAG|@sha256:DIGEST] (default tag latest)')
    .argument('<out>', 'the top layer to write; the layers below go beside it, named as the chain names them');
  addRegistryOptions(command, true)
    .option('--json', 'print {out, reference, manifestDigest, layers: [{path, digest, how}], fetched}')
    .addHelpText(
      'after',
      `
Every table page and block is checked against its digest as it arrives, and each whole layer
against its blob's digest. The bytes go through the layer cache: an interrupted pull resumes
where it stopped (run it again), and a layer the cache holds whole (a filled clone, an earlier
pull) is linked or copied, not fetched. A layer already in place (the same digest) is kept.

Examples:
  $ cowdisk pull registry.example.com/disks/app:v1 vms/app.snap
  Pulled registry.example.com/disks/app:v1 into vms/app.snap: 2 layers, 412.8 MiB fetched.
    /home/me/vms/app.snap   sha256:9d2e...  fetched
    /home/me/vms/base.snap  sha256:5f0c...  fetched`,
    )
    .action(async (ref: string, out: string, options: PullCliOptions) => {
      const access = await registryAccess(options);
      const pulled = await withProgress(`pulling ${ref}`, (onProgress) => pullImage(ref, out, { ...access, cache: options.cache, onProgress }));
      if (options.json) printJson(pulled);
      else printLines(summary(out, pulled));
    });
}

function summary(out: string, pulled: PullResult): string[] {
  const rows = pulled.layers.map((l) => [`  ${l.path}`, l.digest, l.how]);
  return [`Pulled ${pulled.reference} into ${out}: ${count(pulled.layers.length, 'layer')}, ${formatSize(pulled.fetched)} fetched.`, ...formatTable(rows)];
}
