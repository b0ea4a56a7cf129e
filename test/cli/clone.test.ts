import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { KiB, bytesOnDisk, cowdisk, json, ok, sameBytes, scratchDir, writeRaw } from './fixtures.js';

const { at } = scratchDir();

beforeAll(async () => {
  writeRaw(at('base.raw'), 'rtzzrh');
  await ok(['import', at('base.raw'), at('base.snap')]);
});

describe('cowdisk clone', () => {
  it('makes a thin overlay on a snapshot that reads as the snapshot', async () => {
    const result = await ok(['clone', at('base.snap'), at('vm.cow')]);
    expect(result.stdout).toBe(`Cloned ${at('base.snap')} into ${at('vm.cow')}: 384 KiB in 64 KiB blocks.\n`);
    const info = await json(['info', at('vm.cow')]);
    expect(info).toMatchObject({ kind: 'overlay', depth: 2, parent: { kind: 'snapshot', recordedPath: 'base.snap', path: at('base.snap') } });
    expect(info.allocation.presentBlocks).toBe(0);
    expect(bytesOnDisk(at('vm.cow'))).toBeLessThan(64 * KiB);
    await ok(['export', at('vm.cow'), at('vm.raw')]);
    expect(await sameBytes(at('vm.raw'), at('base.raw'))).toBe(true);
  });

  it('makes an overlay on a raw image in the block size asked for', async () => {
    await ok(['clone', '--block-size', '4K', at('base.raw'), at('raw-vm.cow')]);
    const info = await json(['info', at('raw-vm.cow'), '--chain']);
    expect(info).toMatchObject({ blockSize: 4 * KiB, parent: { kind: 'raw', recordedPath: 'base.raw' } });
    expect(info.chain.map((l: { kind: string }) => l.kind)).toEqual(['overlay', 'raw']);
  });

  it('refuses a block size other than the snapshot parent fixes (exit code 2)', async () => {
    const result = await cowdisk(['clone', '--block-size', '128K', at('base.snap'), at('wrong-bs.cow')]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('the block size is fixed by the chain');
    expect(existsSync(at('wrong-bs.cow'))).toBe(false);
  });

  it('refuses an overlay parent, naming the command that seals it (exit code 1)', async () => {
    await ok(['create', at('writable.cow'), '--size', '1M']);
    const result = await cowdisk(['clone', at('writable.cow'), at('child.cow')]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('`cowdisk snapshot');
    expect(result.stderr).toContain(ErrorCode.NOT_SEALED);
    expect(existsSync(at('child.cow'))).toBe(false);
  });

  it('names a parent that does not exist (exit code 1)', async () => {
    const result = await cowdisk(['clone', at('nowhere.snap'), at('orphan.cow')]);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`cowdisk: ${at('nowhere.snap')}: no such file (while opening for reading). [${ErrorCode.NOT_FOUND}]\n`);
  });

  it('refuses to overwrite an existing overlay', async () => {
    writeFileSync(at('precious'), 'keep me');
    const result = await cowdisk(['clone', at('base.snap'), at('precious')]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(ErrorCode.EXISTS);
    expect(readFileSync(at('precious'), 'utf8')).toBe('keep me');
  });

  it('--help shows an example', async () => {
    expect((await ok(['clone', '--help'])).stdout).toContain('Examples:\n  $ cowdisk clone base.snap vm1.cow');
  });
});
