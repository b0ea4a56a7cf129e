/**
 * `cowdisk check IMAGE [--repair] [--json]`: verify an image and its whole chain (headers, state
 * maps, every stored block against its SHA-256, every layer digest), naming each bad block; with
 * --repair, restore the overlay's invariants (src/ops/check.ts).
 *
 * Exit status: 0 when no error was found (warnings, such as "not closed cleanly", allowed), 3 when
 * any was, repaired or not, so a script never mistakes a repaired image for an intact one.
 */
import * as path from 'node:path';
import type { Command } from 'commander';
import { checkImage, type CheckResult, type Problem } from '../index.js';
import { formatOption, type FormatCliValue } from './format-option.js';
import { ExitCode } from './exit-codes.js';
import { count, printJson, printLines } from './output.js';
import { withProgress } from './progress.js';
import { formatSize } from './size.js';

interface CheckCliOptions {
  repair?: boolean;
  json?: boolean;
  format?: FormatCliValue;
}

export function register(program: Command): void {
  program
    .command('check')
    .description('Verify an image and every layer below it; name each damaged block. --repair fixes the overlay.')
    .argument('<image>', 'an overlay, a snapshot or a raw image')
    .option('--repair', 'repair the overlay (not while it is served): rewrite damaged copies, reclaim unrecorded space, clear the dirty mark')
    .option('--json', 'print the report as JSON: {image, ok, problems: [{severity, code, message, path, block?}], repaired, stats}')
    .addOption(formatOption())
    .addHelpText(
      'after',
      `
Exit status: 0 when no error was found (warnings allowed), 3 when any was, even if --repair
repaired it (run check again to confirm), 1 when the image cannot be read at all.
Sealed snapshots and raw bases are never modified: restore a damaged one from a copy.
A lazily cloned layer is verified whole: what its cache lacks is fetched first, and said.

Examples:
  $ cowdisk check base.snap
  error: /vms/base.snap: block 1234 (disk bytes 80871424..80936959) does not match its SHA-256 digest [COWDISK_E_CORRUPT]
  /vms/base.snap: 1 error, 0 warnings.
  $ cowdisk check --repair vm1.cow`,
    )
    .action(async (image: string, options: CheckCliOptions) => {
      const report = await withProgress(`checking ${image}`, (onProgress) => checkImage(image, { repair: options.repair, format: options.format, onProgress }), { unit: 'count' });
      const abs = path.resolve(image);
      if (options.json) printJson({ image: abs, ...report });
      else printLines(render(abs, report));
      if (!report.ok) process.exitCode = ExitCode.CORRUPT;
    });
}

function render(image: string, report: CheckResult): string[] {
  const lines = report.problems.map(describe);
  lines.push(...report.repaired.map((r) => `repaired: ${r}`));
  const errors = report.problems.filter((p) => p.severity === 'error').length;
  const warnings = report.problems.length - errors;
  const { layers, blocksVerified, bytesVerified, bytesFetched } = report.stats;
  if (bytesFetched > 0) lines.push(`fetched ${formatSize(bytesFetched)} from the registry to verify lazily cloned layers.`);
  if (report.problems.length === 0) {
    lines.push(`${image}: no problems found (${count(layers, 'layer')}, ${count(blocksVerified, 'stored block')} verified, ${formatSize(bytesVerified)}).`);
  } else {
    lines.push(`${image}: ${count(errors, 'error')}, ${count(warnings, 'warning')}.`);
  }
  return lines;
}

/** One line per problem: severity, file, block, what is wrong, and the code to match on. */
function describe(p: Problem): string {
  // Errors raised by the format readers name the file already; say it once.
  const message = p.message.startsWith(`${p.path}: `) ? p.message.slice(p.path.length + 2) : p.message;
  // Say the block once too: only when the message does not start by naming it.
  const named = p.block === undefined || message.startsWith(`block ${p.block} `);
  const block = named ? '' : ` block ${p.block}:`;
  return `${p.severity}: ${p.path}:${block} ${message} [${p.code}]`;
}
