/**
 * docs/CLI.md stays true to the command line: every command `cowdisk --help` lists has its own
 * section, and each section's option table names exactly the options that command's `--help` shows.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { REPO, cowdisk } from '../helpers/cli.js';

const doc = readFileSync(`${REPO}docs/CLI.md`, 'utf8');

/** The long options a --help text lists (without --help itself). */
function helpOptions(help: string): string[] {
  const options = [...help.matchAll(/^ {2}(?:-\w, )?(--[a-z][a-z-]*)/gm)].map((m) => m[1]);
  return [...new Set(options)].filter((o) => o !== '--help' && o !== '--version').sort();
}

/** The long options in the first column of a section's option table. */
function documentedOptions(section: string): string[] {
  const options = [...section.matchAll(/^\| `(?:-\w, )?(--[a-z][a-z-]*)/gm)].map((m) => m[1]);
  return [...new Set(options)].sort();
}

function section(command: string): string | undefined {
  const start = doc.indexOf(`\n## cowdisk ${command}\n`);
  if (start < 0) return undefined;
  const end = doc.indexOf('\n## ', start + 1);
  return doc.slice(start, end < 0 ? undefined : end);
}

describe('docs/CLI.md', async () => {
  const { stdout } = await cowdisk(['--help']);
  const commands = [...stdout.slice(stdout.indexOf('Commands:')).matchAll(/^ {2}([a-z]+) /gm)].map((m) => m[1]).filter((c) => c !== 'help');

  test('the command list is read from --help', () => {
    expect(commands).toContain('create');
    expect(commands.length).toBeGreaterThan(10);
  });

  for (const command of commands) {
    test(`documents \`cowdisk ${command}\` with exactly the options its --help shows`, async () => {
      const text = section(command);
      expect(text, `docs/CLI.md has no "## cowdisk ${command}" section`).toBeDefined();
      const help = await cowdisk([command, '--help']);
      expect(help.code).toBe(0);
      expect(documentedOptions(text!)).toEqual(helpOptions(help.stdout));
    });
  }
});
