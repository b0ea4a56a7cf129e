/**
 * `cowdisk upgrade` from the command line, on copies of the committed v1 fixtures: what it says,
 * `--json`, the exit codes of its refusals, and `info` showing the version before and after.
 */
import { cpSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { cowdisk, json, ok, scratchDir } from './fixtures.js';

const { dir, at } = scratchDir();
cpSync(path.join(import.meta.dirname, '../fixtures/v1'), dir, { recursive: true });

describe('cowdisk upgrade', () => {
  it('rewrites a v1 layer as v2, saying so, with the digest unchanged; info shows the version', async () => {
    const before = await json(['info', at('mid.snap')]);
    expect(before.version).toBe(1);
    expect((await ok(['info', at('mid.snap')])).stdout).toMatch(/^format +version 1$/m);
    const { stdout } = await ok(['upgrade', at('mid.snap')]);
    expect(stdout).toMatch(new RegExp(`^Upgraded ${at('mid.snap')} from format version 1 to 2: .+; digest ${before.identity} unchanged\\.\\n$`));
    const after = await json(['info', at('mid.snap')]);
    expect(after).toMatchObject({ version: 2, identity: before.identity });
    expect((await ok(['info', at('mid.snap')])).stdout).toMatch(/^format +version 2$/m);
    // The overlay on it still opens: its record of the parent's digest holds.
    expect((await json(['info', '--chain', at('top.cow')])).chain.map((l: { version: number }) => l.version)).toEqual([1, 2, 1]);
  });

  it('--json says what was done; a layer already of version 2 is left, saying so', async () => {
    const result = await json(['upgrade', at('base.snap'), '--json']);
    expect(result).toMatchObject({ layer: at('base.snap'), from: 1, to: 2, upgraded: true, digest: expect.stringMatching(/^sha256:/) });
    expect(Object.keys(result).sort()).toEqual(['bytesAfter', 'bytesBefore', 'digest', 'from', 'layer', 'to', 'upgraded']);
    const again = await ok(['upgrade', at('base.snap')]);
    expect(again.stdout).toBe(`${at('base.snap')} is already format version 2; nothing was changed.\n`);
  });

  it('refuses an overlay (exit 1) and a raw file (exit 2), naming the code', async () => {
    const overlay = await cowdisk(['upgrade', at('top.cow')]);
    expect(overlay.code).toBe(1);
    expect(overlay.stderr).toContain(ErrorCode.NOT_SEALED);
    const raw = await cowdisk(['upgrade', at('README.md')]);
    expect(raw.code).toBe(2);
    expect(raw.stderr).toContain(ErrorCode.INVALID_ARGUMENT);
    expect(raw.stderr).toContain('cowdisk import');
  });
});
