import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { KiB, bytesOnDisk, cowdisk, json, ok, scratchDir } from './fixtures.js';

const { at } = scratchDir();

describe('cowdisk create', () => {
  it('makes an empty overlay of the given size that takes a few kilobytes', async () => {
    const result = await ok(['create', at('blank.cow'), '--size', '10G']);
    expect(result.stdout).toContain('10 GiB overlay in 64 KiB blocks');
    expect(result.stderr).toBe('');
    const info = await json(['info', at('blank.cow')]);
    expect(info).toMatchObject({ kind: 'overlay', virtualSize: 10 * 1024 ** 3, blockSize: 64 * KiB, depth: 1, parent: null, dirty: false });
    expect(info.allocation).toMatchObject({ presentBlocks: 0, zeroBlocks: 0 });
    expect(bytesOnDisk(at('blank.cow'))).toBeLessThan(64 * KiB);
  });

  it('honours --block-size and --sub-blocks', async () => {
    await ok(['create', at('geometry.cow'), '--size', '1.5M', '--block-size', '256K', '--sub-blocks', '4']);
    const info = await json(['info', at('geometry.cow')]);
    expect(info).toMatchObject({ virtualSize: 1.5 * 1024 * KiB, blockSize: 256 * KiB, subBlocks: 4, blocks: 6 });
  });

  it.each([
    ['--size', '10Q'],
    ['--size', '1.3K'],
    ['--size', '0'],
    ['--block-size', '3K'],
    ['--block-size', '4M'],
    ['--sub-blocks', '3'],
    ['--sub-blocks', 'many'],
  ])('refuses %s %s with exit code 2 and COWDISK_E_INVALID_ARGUMENT, creating nothing', async (option, value) => {
    const args = ['create', at('bad.cow'), '--size', '1G', option, value];
    const result = await cowdisk(args);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(new RegExp(`^cowdisk: .*\\[${ErrorCode.INVALID_ARGUMENT}\\]\\n$`));
    expect(existsSync(at('bad.cow'))).toBe(false);
  });

  it('needs --size (a usage error, exit code 2)', async () => {
    const result = await cowdisk(['create', at('nosize.cow')]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("required option '--size <size>'");
  });

  it('refuses to overwrite an existing file (exit code 1, COWDISK_E_EXISTS) and leaves it alone', async () => {
    await ok(['create', at('taken.cow'), '--size', '1M']);
    const before = readFileSync(at('taken.cow'));
    const result = await cowdisk(['create', at('taken.cow'), '--size', '2M']);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`${at('taken.cow')} already exists`);
    expect(result.stderr).toContain(ErrorCode.EXISTS);
    expect(readFileSync(at('taken.cow')).equals(before)).toBe(true);
  });

  it('says clearly when the directory does not exist (exit code 1)', async () => {
    const result = await cowdisk(['create', at('no/such/dir/x.cow'), '--size', '1M']);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^cowdisk: .*no\/such\/dir.*\[COWDISK_E_NOT_FOUND\]\n$/);
  });

  it('--help shows an example', async () => {
    const result = await ok(['create', '--help']);
    expect(result.stdout).toContain('Example:\n  $ cowdisk create scratch.cow --size 10G');
  });
});
