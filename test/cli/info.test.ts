import { renameSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { startServe } from '../helpers/nbd-cli.js';
import { run } from '../helpers/nbd-tools.js';
import { KiB, cowdisk, flipByte, json, ok, scratchDir, writeRaw } from './fixtures.js';

const { at } = scratchDir();
let snapDigest: string;

beforeAll(async () => {
  writeRaw(at('base.raw'), 'rrttzzzz');
  snapDigest = (await json(['import', at('base.raw'), at('base.snap')])).identity;
  await ok(['clone', at('base.snap'), at('vm.cow')]);
});

describe('cowdisk info', () => {
  it('describes an overlay for people: kind, format version, sizes, blocks, dirty flag, parent', async () => {
    const { stdout, stderr } = await ok(['info', at('vm.cow')]);
    expect(stderr).toBe('');
    const fields = Object.fromEntries(stdout.trimEnd().split('\n').map((line) => line.split(/ {2,}/)));
    expect(fields).toMatchObject({
      image: at('vm.cow'),
      kind: 'overlay',
      format: 'version 1',
      identity: expect.stringMatching(/^uuid:[0-9a-f]{32}$/),
      'virtual size': '512 KiB (524288 bytes)',
      'block size': '64 KiB, 16 sub-blocks of 4 KiB',
      blocks: '8: 0 present, 0 zero, 8 from below',
      dirty: 'no',
      parent: 'base.snap (snapshot)',
    });
  });

  it('--json has the documented fields', async () => {
    const info = await json(['info', at('base.snap')]);
    expect(Object.keys(info).sort()).toEqual(
      ['allocation', 'blockSize', 'blocks', 'created', 'depth', 'dirty', 'identity', 'kind', 'parent', 'path', 'subBlocks', 'version', 'virtualSize'].sort(),
    );
    expect(info).toMatchObject({ kind: 'snapshot', version: 2, identity: snapDigest, virtualSize: 512 * KiB, blocks: 8, subBlocks: null, dirty: null, parent: null, depth: 1 });
    expect(Object.keys(info.allocation).sort()).toEqual(['absentBlocks', 'bytesOnDisk', 'dataBytes', 'presentBlocks', 'zeroBlocks']);
    expect(info.allocation).toMatchObject({ presentBlocks: 4, zeroBlocks: 4, absentBlocks: 0 });
    expect(new Date(info.created).getTime()).toBeGreaterThan(Date.now() - 600_000);
  });

  it('--chain lists every layer with its identity and size on disk', async () => {
    const { chain } = await json(['info', '--chain', at('vm.cow')]);
    expect(chain).toEqual([
      { index: 0, kind: 'overlay', version: 1, path: at('vm.cow'), identity: expect.stringMatching(/^uuid:/), fileSize: expect.any(Number), bytesOnDisk: expect.any(Number) },
      { index: 1, kind: 'snapshot', version: 2, path: at('base.snap'), identity: snapDigest, fileSize: expect.any(Number), bytesOnDisk: expect.any(Number) },
    ]);
    const table = (await ok(['info', '--chain', at('vm.cow')])).stdout;
    expect(table).toMatch(new RegExp(`\\n1 +snapshot +v2 +\\S+ \\S+ +${snapDigest} +${at('base.snap')}\\n`));
  });

  it('describes a raw image by its bytes on disk', async () => {
    const info = await json(['info', at('base.raw')]);
    expect(info).toMatchObject({ kind: 'raw', version: null, virtualSize: 512 * KiB, identity: expect.stringMatching(/^raw:size=524288,/) });
    expect(info.allocation).toMatchObject({ presentBlocks: null, bytesOnDisk: expect.any(Number) });
  });

  it('works while the image is served, and shows what a client wrote and the dirty flag', async () => {
    await ok(['clone', at('base.snap'), at('served.cow')]);
    const server = await startServe(['--socket', at('served.sock'), at('served.cow')]);
    try {
      await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 64k 64k', `nbd+unix:///?socket=${at('served.sock')}`]);
      const info = await json(['info', at('served.cow')]);
      expect(info.dirty).toBe(true);
      expect(info.allocation).toMatchObject({ presentBlocks: 1, dataBytes: 64 * KiB });
    } finally {
      expect(await server.stop()).toBe(0);
    }
    expect((await json(['info', at('served.cow')])).dirty).toBe(false);
  });

  it('fails with COWDISK_E_PARENT_MISSING naming the parent when it moved (exit code 1)', async () => {
    await ok(['clone', at('base.raw'), at('moved.cow')]);
    renameSync(at('base.raw'), at('elsewhere.raw'));
    try {
      const result = await cowdisk(['info', at('moved.cow')]);
      expect(result.code).toBe(1);
      expect(result.stderr).toContain(`its parent ${at('base.raw')}`);
      expect(result.stderr).toContain(ErrorCode.PARENT_MISSING);
    } finally {
      renameSync(at('elsewhere.raw'), at('base.raw'));
    }
  });

  it('exits 3 on a file whose header is damaged', async () => {
    writeRaw(at('hurt.raw'), 'r');
    await ok(['import', at('hurt.raw'), at('hurt.snap')]);
    flipByte(at('hurt.snap'), 20);
    const result = await cowdisk(['info', at('hurt.snap')]);
    expect(result.code).toBe(3);
    expect(result.stderr).toContain(ErrorCode.CORRUPT);
  });

  it('an overlay whose headers are both unreadable is damage (exit 3, naming --format raw), not a raw disk; --format raw says raw', async () => {
    await ok(['clone', at('base.snap'), at('wiped.cow')]);
    // A written map page, then both header slots spoiled: the first's magic gone, the second's too.
    const served = await startServe(['--socket', at('wiped.sock'), at('wiped.cow')]);
    await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 64k', served.uris[0]]);
    expect(await served.stop()).toBe(0);
    for (let i = 0; i < 8; i++) flipByte(at('wiped.cow'), i);
    flipByte(at('wiped.cow'), 4096);
    const result = await cowdisk(['info', at('wiped.cow')]);
    expect(result.code).toBe(3);
    expect(result.stderr).toContain(ErrorCode.CORRUPT);
    expect(result.stderr).toContain('--format raw');
    expect((await cowdisk(['map', at('wiped.cow')])).code).toBe(3);
    const raw = await json(['info', '--format', 'raw', at('wiped.cow')]);
    expect(raw.kind).toBe('raw');
  });

  it('names a file that does not exist (exit code 1)', async () => {
    const result = await cowdisk(['info', at('ghost.cow')]);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`cowdisk: ${at('ghost.cow')}: no such file (while opening for reading). [${ErrorCode.NOT_FOUND}]\n`);
  });

  it('--help shows an example', async () => {
    expect((await ok(['info', '--help'])).stdout).toContain('Example:\n  $ cowdisk info --chain vm1.cow');
  });
});
