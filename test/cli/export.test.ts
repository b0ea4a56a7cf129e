import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { openImage } from '../../src/index.js';
import { KiB, bytesOnDisk, cowdisk, ok, scratchDir, writeRaw } from './fixtures.js';

const { at } = scratchDir();
const B = 64 * KiB;
let raw: Buffer;

beforeAll(async () => {
  raw = writeRaw(at('base.raw'), 'rzzzzzzzrtzzzzzz');
  await ok(['import', at('base.raw'), at('base.snap')]);
});

describe('cowdisk export', () => {
  it('flattens a chain into a raw file that reads as the chain does', async () => {
    await ok(['clone', at('base.snap'), at('vm.cow')]);
    const vm = (await openImage(at('vm.cow'))).device;
    const patch = Buffer.alloc(10_000, 0x5a);
    await vm.write(patch, B + 123);
    await vm.zero(8 * B, B);
    await vm.close();
    const expected = Buffer.from(raw);
    patch.copy(expected, B + 123);
    expected.fill(0, 8 * B, 9 * B);

    const result = await ok(['export', at('vm.cow'), at('vm.raw')]);
    expect(result.stdout).toMatch(new RegExp(`^Exported ${at('vm.cow')} to ${at('vm.raw')}: 1 MiB \\(\\d+(\\.\\d+)? KiB on disk\\)\\.\\n$`));
    expect(result.stderr).toBe('');
    expect(readFileSync(at('vm.raw')).equals(expected)).toBe(true);
  });

  it('leaves zero ranges as holes in the raw file', async () => {
    await ok(['export', at('base.snap'), at('sparse.raw')]);
    expect(statSync(at('sparse.raw')).size).toBe(raw.length);
    // Three blocks hold data; the thirteen zero blocks take no space.
    expect(bytesOnDisk(at('sparse.raw'))).toBeLessThanOrEqual(3 * B + 4 * KiB);
  });

  it('refuses to overwrite an existing file (exit code 1) and leaves it alone', async () => {
    writeFileSync(at('taken.raw'), 'keep me');
    const result = await cowdisk(['export', at('base.snap'), at('taken.raw')]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(ErrorCode.EXISTS);
    expect(readFileSync(at('taken.raw'), 'utf8')).toBe('keep me');
  });

  it('names an image that does not exist (exit code 1)', async () => {
    const result = await cowdisk(['export', at('ghost.cow'), at('ghost.raw')]);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`cowdisk: ${at('ghost.cow')}: no such file (while opening for reading). [${ErrorCode.NOT_FOUND}]\n`);
  });

  it('--help shows an example', async () => {
    expect((await ok(['export', '--help'])).stdout).toContain('Example:\n  $ cowdisk export vm1.cow vm1.raw');
  });
});
