/**
 * describeImage: what `info` tells, counted from the formats' own records: an overlay's state map
 * (at sub-block granularity), a snapshot's header and directory, a raw file's bytes on disk.
 */
import { describe, expect, test } from 'vitest';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { cloneImage, createImage } from '../../src/ops/create.js';
import { importRaw } from '../../src/ops/import.js';
import { describeImage } from '../../src/ops/info.js';
import { openImage } from '../../src/image/open.js';
import { putFile } from '../helpers/engine-chain.js';

const BS = 16 * 1024;

/** A raw file of blocks: 'd' data, 'z' zeros. */
async function raw(fs: MemoryFileSystem, file: string, blocks: string): Promise<void> {
  const content = Buffer.concat([...blocks].map((b, i) => Buffer.alloc(BS, b === 'd' ? i + 1 : 0)));
  await putFile(fs, file, content);
}

describe('describeImage', () => {
  test('a snapshot: stored and zero blocks from its header and directory, identity its digest', async () => {
    const fs = new MemoryFileSystem();
    await raw(fs, '/i/base.raw', 'dzzdzd');
    const made = await importRaw('/i/base.raw', '/i/base.snap', { blockSize: BS, fs });
    const d = await describeImage('/i/base.snap', { fs });
    expect(d).toMatchObject({ kind: 'snapshot', virtualSize: 6 * BS, blockSize: BS, blocks: 6, depth: 1, subBlocks: null, dirty: null, parent: null });
    expect(d.identity).toBe(made.digest);
    expect(d.allocation).toMatchObject({ presentBlocks: 3, zeroBlocks: 3, absentBlocks: 0, dataBytes: made.dataBytes });
  });

  test('an overlay: blocks by state, data at sub-block granularity, the dirty mark while open for writing', async () => {
    const fs = new MemoryFileSystem();
    await raw(fs, '/i/base.raw', 'dddddddd');
    await cloneImage('/i/base.raw', '/i/vm.cow', { blockSize: BS, subBlocks: 4, fs });
    const vm = (await openImage('/i/vm.cow', { fs })).device;
    await vm.write(Buffer.alloc(4096, 9), 2 * BS + 4096); // one sub-block of block 2
    await vm.write(Buffer.alloc(BS, 9), 5 * BS); // all of block 5
    await vm.zero(7 * BS, BS);
    await vm.flush();
    const open = await describeImage('/i/vm.cow', { fs });
    expect(open).toMatchObject({ kind: 'overlay', subBlocks: 4, dirty: true, depth: 2, parent: { kind: 'raw', recordedPath: 'base.raw', path: '/i/base.raw' } });
    expect(open.allocation).toMatchObject({ presentBlocks: 2, zeroBlocks: 1, absentBlocks: 5, dataBytes: 4096 + BS });
    await vm.close();
    expect((await describeImage('/i/vm.cow', { fs })).dirty).toBe(false);
  });

  test('a raw file: no block states, its bytes on disk, identity its fingerprint', async () => {
    const fs = new MemoryFileSystem();
    await raw(fs, '/i/disk.raw', 'dz');
    const d = await describeImage('/i/disk.raw', { fs, rawBlockSize: BS });
    expect(d).toMatchObject({ kind: 'raw', blockSize: BS, blocks: 2, created: null, identity: expect.stringMatching(/^raw:size=32768,ino=\d+,mtime=\d+$/) });
    expect(d.allocation).toEqual({ presentBlocks: null, zeroBlocks: null, absentBlocks: null, dataBytes: null, bytesOnDisk: (await fs.stat('/i/disk.raw')).allocated });
  });

  test('with chain: every layer top first, with identity and size', async () => {
    const fs = new MemoryFileSystem();
    await raw(fs, '/i/base.raw', 'dd');
    await importRaw('/i/base.raw', '/i/base.snap', { blockSize: BS, fs });
    await cloneImage('/i/base.snap', '/i/vm.cow', { fs });
    const { chain } = await describeImage('/i/vm.cow', { fs, chain: true });
    expect(chain?.map((l) => [l.index, l.kind, l.path, l.identity.split(':')[0]])).toEqual([
      [0, 'overlay', '/i/vm.cow', 'uuid'],
      [1, 'snapshot', '/i/base.snap', 'sha256'],
    ]);
    expect(chain?.[1].fileSize).toBe((await fs.stat('/i/base.snap')).size);
  });

  test('without chain: no chain field', async () => {
    const fs = new MemoryFileSystem();
    await createImage('/i/blank.cow', { size: BS, fs });
    expect(await describeImage('/i/blank.cow', { fs })).not.toHaveProperty('chain');
  });
});
