/**
 * `cowdisk clone PARENT OVERLAY`: a thin, writable clone of a sealed snapshot or a raw base.
 * The clone records where its parent is and what it is (its digest, or a raw file's size and
 * fingerprint), and costs a header and a sparse file however large the parent is.
 *
 * PARENT may also be a registry reference (`HOST[:PORT]/REPO[:TAG]`): the clone is then lazy,
 * its layers kept in the layer cache and fetched block by block when read (src/ops/clone-remote.ts).
 * A file that exists is always a file; otherwise `oci://`, or a first component that can only be
 * a host (a `.`, a `:`, `localhost`), makes it a reference.
 */
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { CowdiskError, ErrorCode, cloneFromRegistry, cloneImage, defaultCacheDir, looksLikeReference } from '../index.js';
import { formatOption, type FormatCliValue } from './format-option.js';
import { printLines } from './output.js';
import { addRegistryOptions, registryAccess, type RegistryCliOptions } from './registry-options.js';
import { countOption, formatSize, sizeOption } from './size.js';

interface CloneCliOptions extends RegistryCliOptions {
  blockSize?: number;
  subBlocks?: number;
  format?: FormatCliValue;
}

export function register(program: Command): void {
  const command = program
    .command('clone')
    .description('Make a thin writable overlay on top of a snapshot layer, a raw image, or a chain in an OCI registry (lazily).')
    .argument('<parent>', 'a sealed snapshot (from `cowdisk import`), a raw image file, or a registry reference [oci://]HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]; it is never written')
    .argument('<overlay>', 'the overlay file to create; it must not exist')
    .option('--block-size <size>', 'block size for a raw parent: a power of two from 4K to 2M (default 64K); a snapshot fixes its own', sizeOption('--block-size'))
    .option('--sub-blocks <n>', 'copy-on-write units per block, a power of two; 1 copies whole blocks (default: 4K units)', countOption('--sub-blocks', 1))
    .addOption(formatOption('PARENT'));
  addRegistryOptions(command, true).addHelpText(
    'after',
    `
The overlay refers to its parent by a path relative to itself and by the parent's identity: if
the parent is changed afterwards, opening the clone fails instead of showing wrong data. A
writable overlay cannot be a parent; seal it first with \`cowdisk snapshot\`.

From a registry, only the manifest and each layer's header and directory are fetched; the layers
go to the layer cache (--cache), shared by every clone on the machine, and each block is fetched
(and checked against its SHA-256) the first time anything reads it: serve, export, map, diff,
snapshot... Later fetches log in with the Docker config (\`docker login\`).

Examples:
  $ cowdisk clone base.snap vm1.cow
  Cloned base.snap into vm1.cow: 20 GiB in 64 KiB blocks.
  $ cowdisk clone --block-size 256K debian.raw vm2.cow
  $ cowdisk clone registry.example.com/disks/base:v1 vm3.cow
  Cloned registry.example.com/disks/base:v1 into vm3.cow: 20 GiB in 64 KiB blocks, lazily (2 layers, 18.2 KiB fetched; cache /home/me/.cache/cowdisk).`,
  );
  command.action(async (parent: string, overlay: string, options: CloneCliOptions) => {
    if (!fs.existsSync(parent) && looksLikeReference(parent)) {
      if (options.format !== undefined) throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, '--format raw is for a parent file, not a registry reference.');
      const access = await registryAccess(options);
      const cache = options.cache ?? defaultCacheDir();
      const made = await cloneFromRegistry(parent, overlay, { ...access, cache, subBlocks: options.subBlocks, blockSize: options.blockSize });
      printLines([
        `Cloned ${made.reference} into ${overlay}: ${formatSize(made.size)} in ${formatSize(made.blockSize)} blocks, lazily (${made.layers.length} ${made.layers.length === 1 ? 'layer' : 'layers'}, ${formatSize(made.fetched)} fetched; cache ${cache}).`,
      ]);
      return;
    }
    const registryOnly = ['cache', 'caFile', 'plainHttp', 'username', 'passwordStdin'] as const;
    const given = registryOnly.find((o) => options[o] !== undefined);
    if (given) throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `--${given.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} is for a registry reference; ${parent} is a file (or does not look like HOST/REPO).`);
    const made = await cloneImage(parent, overlay, { blockSize: options.blockSize, subBlocks: options.subBlocks, format: options.format });
    printLines([`Cloned ${parent} into ${overlay}: ${formatSize(made.size)} in ${formatSize(made.blockSize)} blocks.`]);
  });
}
