/**
 * `cowdisk info IMAGE [--chain] [--json]`: what an image is and holds (src/ops/info.ts).
 * Opens the image read-only, so it works on an image that is being served.
 */
import type { Command } from 'commander';
import { describeImage, type ImageDescription } from '../index.js';
import { formatOption, type FormatCliValue } from './format-option.js';
import { formatTable, printJson, printLines } from './output.js';
import { formatSize } from './size.js';

interface InfoCliOptions {
  chain?: boolean;
  json?: boolean;
  format?: FormatCliValue;
}

export function register(program: Command): void {
  program
    .command('info')
    .description('Describe an image: kind, format version, sizes, block size, allocation, dirty flag, parent chain.')
    .argument('<image>', 'an overlay, a snapshot or a raw image; opened read-only')
    .option('--chain', 'also list every layer below: kind, identity, size on disk, path')
    .option('--json', 'print JSON for scripts')
    .addOption(formatOption())
    .addHelpText(
      'after',
      `
Opening checks the whole chain: a parent that is missing or was changed after the clone was made
fails here (COWDISK_E_PARENT_MISSING / COWDISK_E_PARENT_CHANGED) as it would when serving.

Example:
  $ cowdisk info --chain vm1.cow
  image         /vms/vm1.cow
  kind          overlay
  format        version 1
  identity      uuid:0f4c7d2e9a1b4c3d8e7f6a5b4c3d2e1f
  virtual size  20 GiB (21474836480 bytes)
  block size    64 KiB, 16 sub-blocks of 4 KiB
  blocks        327680: 112 present, 3 zero, 327565 from below
  data          6.9 MiB stored, 7.1 MiB on disk
  dirty         no
  created       2025-01-01T12:00:00.000Z
  parent        base.snap (snapshot)

  LAYER  KIND      FORMAT  ON DISK    IDENTITY          PATH
  0      overlay   v1      7.1 MiB    uuid:0f4c7d2e...  /vms/vm1.cow
  1      snapshot  v2      1.21 GiB   sha256:5f0c...    /vms/base.snap`,
    )
    .action(async (image: string, options: InfoCliOptions) => {
      const description = await describeImage(image, { chain: options.chain, format: options.format });
      if (options.json) printJson(description);
      else printLines(render(description));
    });
}

function render(d: ImageDescription): string[] {
  const a = d.allocation;
  const rows: Array<[string, string]> = [
    ['image', d.path],
    ['kind', d.kind],
    ...(d.version === null ? [] : [['format', `version ${d.version}`] as [string, string]]),
    ['identity', d.identity],
    ['virtual size', `${formatSize(d.virtualSize)} (${d.virtualSize} bytes)`],
    ['block size', d.subBlocks === null ? formatSize(d.blockSize) : `${formatSize(d.blockSize)}, ${d.subBlocks} sub-blocks of ${formatSize(d.blockSize / d.subBlocks)}`],
  ];
  if (a.presentBlocks !== null) {
    const below = d.depth > 1 ? 'from below' : 'unallocated';
    rows.push(['blocks', `${d.blocks}: ${a.presentBlocks} present, ${a.zeroBlocks} zero, ${a.absentBlocks} ${below}`]);
    rows.push(['data', `${formatSize(a.dataBytes ?? 0)} stored, ${formatSize(a.bytesOnDisk)} on disk`]);
  } else {
    rows.push(['blocks', String(d.blocks)]);
    rows.push(['data', `${formatSize(a.bytesOnDisk)} on disk`]);
  }
  if (d.dirty !== null) rows.push(['dirty', d.dirty ? 'yes: open for writing, or not closed cleanly (`cowdisk check --repair` if nothing serves it)' : 'no']);
  if (d.created !== null) rows.push(['created', d.created]);
  if (d.parent) rows.push(['parent', `${d.parent.recordedPath} (${d.parent.kind})`]);
  const lines = formatTable(rows).map((line) => line.trimEnd());
  if (d.chain) {
    lines.push(
      '',
      ...formatTable([
        ['LAYER', 'KIND', 'FORMAT', 'ON DISK', 'IDENTITY', 'PATH'],
        ...d.chain.map((l) => [String(l.index), l.kind, l.version === null ? '-' : `v${l.version}`, formatSize(l.bytesOnDisk), l.identity, l.path]),
      ]),
    );
    for (const l of d.chain) {
      const r = l.remote;
      if (r) lines.push(`layer ${l.index} is fetched from ${r.source} as it is read: ${r.cachedPieces === r.pieces ? 'whole in the layer cache' : `${r.cachedPieces} of ${r.pieces} pieces in the layer cache`}.`);
    }
  }
  return lines;
}
