import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { KiB, cowdisk, ok, scratchDir, writeRaw } from './fixtures.js';

const { dir, at } = scratchDir();

describe('cowdisk import', () => {
  it('stores data blocks, records zero blocks, and prints the layer digest', async () => {
    writeRaw(at('disk.raw'), 'rzztrzzh');
    const result = await ok(['import', at('disk.raw'), at('disk.snap')]);
    expect(result.stderr).toBe('');
    const [first, stored, zeros, digest] = result.stdout.trimEnd().split('\n');
    expect(first).toBe(`Imported ${at('disk.raw')} into ${at('disk.snap')}: 512 KiB in 64 KiB blocks.`);
    expect(stored).toMatch(/^ +stored +4 blocks, /);
    expect(zeros).toMatch(/^ +zeros +4 blocks$/);
    expect(digest).toMatch(/^ +digest +sha256:[0-9a-f]{64}$/);
    // Sealed layers are made read-only.
    expect(statSync(at('disk.snap')).mode & 0o222).toBe(0);
  });

  it('--json prints the layer as info --json does', async () => {
    writeRaw(at('json.raw'), 'rtzz');
    const layer = JSON.parse((await ok(['import', at('json.raw'), at('json.snap'), '--json'])).stdout);
    const info = JSON.parse((await ok(['info', at('json.snap'), '--json'])).stdout);
    expect(layer).toEqual(info);
    expect(layer).toMatchObject({ kind: 'snapshot', virtualSize: 256 * KiB, blockSize: 64 * KiB, identity: expect.stringMatching(/^sha256:[0-9a-f]{64}$/) });
    expect(layer.allocation).toMatchObject({ presentBlocks: 2, zeroBlocks: 2, absentBlocks: 0 });
  });

  it('gives the same content the same digest, whatever the file is called', async () => {
    writeRaw(at('twin.raw'), 'tztz');
    const a = JSON.parse((await ok(['import', at('twin.raw'), at('twin-a.snap'), '--json'])).stdout);
    const b = JSON.parse((await ok(['import', at('twin.raw'), at('twin-b.snap'), '--json'])).stdout);
    expect(a.identity).toBe(b.identity);
  });

  it('honours --block-size', async () => {
    writeRaw(at('small.raw'), 'rz', 4 * KiB);
    const layer = JSON.parse((await ok(['import', '--block-size', '4K', at('small.raw'), at('small.snap'), '--json'])).stdout);
    expect(layer).toMatchObject({ blockSize: 4 * KiB, blocks: 2 });
  });

  it.each(['5K', 'big', '8M'])('refuses --block-size %s with exit code 2, leaving no file behind', async (size) => {
    writeRaw(at('bs.raw'), 'r');
    const result = await cowdisk(['import', '--block-size', size, at('bs.raw'), at('bs.snap')]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(ErrorCode.INVALID_ARGUMENT);
    expect(readdirSync(dir).filter((f) => f.startsWith('bs.snap'))).toEqual([]);
  });

  it('names a raw file that does not exist (exit code 1, COWDISK_E_NOT_FOUND)', async () => {
    const result = await cowdisk(['import', at('missing.raw'), at('missing.snap')]);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`cowdisk: ${at('missing.raw')}: no such file (while opening for reading). [${ErrorCode.NOT_FOUND}]\n`);
    expect(existsSync(at('missing.snap'))).toBe(false);
  });

  it('refuses an empty raw file (exit code 2)', async () => {
    writeFileSync(at('empty.raw'), '');
    const result = await cowdisk(['import', at('empty.raw'), at('empty.snap')]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('is empty');
  });

  it('--help shows an example', async () => {
    expect((await ok(['import', '--help'])).stdout).toContain('Example:\n  $ cowdisk import debian.raw debian.snap');
  });
});
