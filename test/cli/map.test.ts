import { beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { openImage } from '../../src/index.js';
import { run } from '../helpers/nbd-tools.js';
import { REPO } from '../helpers/cli.js';
import { KiB, cowdisk, json, ok, scratchDir, writeRaw } from './fixtures.js';

const { at } = scratchDir();
const B = 64 * KiB;

beforeAll(async () => {
  writeRaw(at('base.raw'), 'rrzzttrr');
  await ok(['import', at('base.raw'), at('base.snap')]);
  await ok(['clone', at('base.snap'), at('vm.cow')]);
  // The overlay takes block 1 over with data and hides block 6 with a zero whiteout.
  const vm = (await openImage(at('vm.cow'))).device;
  await vm.write(Buffer.alloc(B, 7), 1 * B);
  await vm.zero(6 * B, B);
  await vm.close();
});

const expected = () => [
  { offset: 0, length: B, kind: 'data', layer: 1, path: at('base.snap') },
  { offset: B, length: B, kind: 'data', layer: 0, path: at('vm.cow') },
  { offset: 2 * B, length: 2 * B, kind: 'zero', layer: 1, path: at('base.snap') },
  { offset: 4 * B, length: 2 * B, kind: 'data', layer: 1, path: at('base.snap') },
  { offset: 6 * B, length: B, kind: 'zero', layer: 0, path: at('vm.cow') },
  { offset: 7 * B, length: B, kind: 'data', layer: 1, path: at('base.snap') },
];

describe('cowdisk map', () => {
  it('--json gives every extent with its kind, serving layer and file, covering the disk exactly', async () => {
    expect(await json(['map', at('vm.cow')])).toEqual(expected());
  });

  it('prints a table like qemu-img map, one extent a line, offsets in hexadecimal', async () => {
    const { stdout, stderr } = await ok(['map', at('vm.cow')]);
    expect(stderr).toBe('');
    const [heading, ...rows] = stdout.trimEnd().split('\n');
    expect(heading.split(/ +/)).toEqual(['OFFSET', 'LENGTH', 'KIND', 'LAYER', 'FILE']);
    expect(rows.map((r) => r.split(/ +/))).toEqual(expected().map((e) => [`0x${e.offset.toString(16)}`, `0x${e.length.toString(16)}`, e.kind, String(e.layer), e.path]));
  });

  it('shows a blank overlay as one hole no layer serves', async () => {
    await ok(['create', at('blank.cow'), '--size', '3M']);
    expect(await json(['map', at('blank.cow')])).toEqual([{ offset: 0, length: 3 * 1024 * KiB, kind: 'hole', layer: -1, path: null }]);
  });

  it('stops quietly when its reader goes away early (| head), exit code 0', async () => {
    writeRaw(at('striped.raw'), 'rz'.repeat(2048), 4 * KiB);
    await ok(['import', '--block-size', '4K', at('striped.raw'), at('striped.snap')]);
    // 4096 extents make far more output than a pipe holds, so the writer meets the closed pipe.
    const script = `"${process.execPath}" "${REPO}bin/cowdisk" map "${at('striped.snap')}" | head -n 2; exit \${PIPESTATUS[0]}`;
    const result = await run('/bin/bash', ['-c', script], { allowFailure: true });
    expect(result).toEqual({ code: 0, stdout: expect.stringMatching(/^OFFSET .*\n0x0 .*\n$/), stderr: '' });
  });

  it('names a file that does not exist (exit code 1)', async () => {
    const result = await cowdisk(['map', at('ghost.cow'), '--json']);
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr).toContain(ErrorCode.NOT_FOUND);
  });

  it('--help shows an example', async () => {
    expect((await ok(['map', '--help'])).stdout).toContain('Example:\n  $ cowdisk map vm1.cow');
  });
});
