/**
 * `diff --files` on a real ext4 file system whose files the kernel created, changed and deleted
 * (through nbdfuse + losetup + mount on the served overlay).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { realFileSystem } from '../../src/io/real-file.js';
import { cloneImage, createImage } from '../../src/ops/create.js';
import { importRaw } from '../../src/ops/import.js';
import { openImage } from '../../src/image/open.js';
import { diffRanges, openDiff } from '../../src/ops/diff.js';
import { type FileChange, diffFiles } from '../../src/fsdiff/files.js';
import { snapshotOverlay } from '../../src/ops/snapshot.js';
import { MiB, tempDir } from '../helpers/nbd-images.js';
import { run } from '../helpers/nbd-tools.js';
import { expectChecks } from '../ops/helpers.js';
import { withMounted } from '../ops/kernel-mount.js';

async function filesChanged(image: string, against?: string): Promise<FileChange[]> {
  const sides = await openDiff(image, { against });
  try {
    return await diffFiles(sides, (await diffRanges(sides)).ranges);
  } finally {
    await sides.close();
  }
}

const lines = (changes: FileChange[]) => changes.map((c) => `${c.kind} ${c.path}`);

describe('diff --files on ext4', () => {
  let dir: string;
  beforeAll(async () => {
    dir = tempDir();
    // The base: an ext4 file system with known files, made on a plain file by the kernel.
    const raw = path.join(dir, 'base.raw');
    await run('truncate', ['-s', `${64 * MiB}`, raw]);
    await run('mkfs.ext4', ['-q', '-F', '-b', '4096', '-E', 'lazy_itable_init=0,lazy_journal_init=0', raw]);
    const mnt = path.join(dir, 'mnt');
    fs.mkdirSync(mnt);
    await run('mount', ['-o', 'loop,noatime', raw, mnt]);
    try {
      fs.writeFileSync(path.join(mnt, 'keep.txt'), 'unchanged\n');
      fs.writeFileSync(path.join(mnt, 'read-only.txt'), 'only read\n');
      fs.writeFileSync(path.join(mnt, 'change.txt'), 'version 1\n');
      fs.writeFileSync(path.join(mnt, 'delete.txt'), 'doomed\n');
      fs.writeFileSync(path.join(mnt, 'rename-me'), 'moving\n');
      fs.mkdirSync(path.join(mnt, 'etc', 'app'), { recursive: true });
      fs.writeFileSync(path.join(mnt, 'etc', 'app', 'config'), 'a=1\n');
      fs.writeFileSync(path.join(mnt, 'big.bin'), Buffer.alloc(4 * MiB, 7));
    } finally {
      await run('umount', [mnt]);
    }
    await importRaw(raw, path.join(dir, 'base.snap'));
    await cloneImage(path.join(dir, 'base.snap'), path.join(dir, 'vm.cow'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('lists what the kernel added, changed and deleted, as docker diff does', async () => {
    const vm = path.join(dir, 'vm.cow');
    await withMounted(
      vm,
      `echo fresh > new.txt
       mkdir etc/app/conf.d
       echo b=2 > etc/app/conf.d/extra
       echo 'version 2' >> change.txt
       rm delete.txt
       mv rename-me renamed
       cat read-only.txt > /dev/null
       dd if=/dev/zero of=big.bin bs=8192 count=1 seek=256 conv=notrunc status=none`,
    );

    expect(lines(await filesChanged(vm))).toEqual([
      'C /big.bin',
      'C /change.txt',
      'D /delete.txt',
      'C /etc/app',
      'A /etc/app/conf.d',
      'A /etc/app/conf.d/extra',
      'A /new.txt',
      'D /rename-me',
      'A /renamed',
    ]);
    await expectChecks(realFileSystem, vm);
  });

  it('after a snapshot, the new layer diffs against the base the same way, and the overlay shows nothing', async () => {
    const vm = path.join(dir, 'vm.cow');
    const { layer } = await snapshotOverlay(vm);
    expect(await filesChanged(vm)).toEqual([]);
    expect(lines(await filesChanged(layer))).toContain('A /new.txt');
    expect(lines(await filesChanged(vm, path.join(dir, 'base.snap')))).toEqual(lines(await filesChanged(layer)));
    await expectChecks(realFileSystem, vm);
  });

  it('names a file whose blocks were written below the file system (its inode unchanged) through icheck', async () => {
    const clone = path.join(dir, 'raw-write.cow');
    await cloneImage(path.join(dir, 'base.snap'), clone);
    const blocks = (await run('debugfs', ['-R', 'blocks /etc/app/config', path.join(dir, 'base.raw')])).stdout.trim().split(/\s+/).map(Number);
    expect(blocks.length).toBe(1);
    const image = (await openImage(clone)).device;
    await image.write(Buffer.from('a=2\n'), blocks[0] * 4096);
    await image.close();
    expect(lines(await filesChanged(clone))).toEqual(['C /etc/app/config']);
    await expectChecks(realFileSystem, clone);
  });

  it('on a file system made in an overlay with no parent, every file is added', async () => {
    const empty = path.join(dir, 'empty.cow');
    await createImage(empty, { size: 32 * MiB });
    await withMounted(empty, 'mkdir d && echo x > d/f', { mkfs: true });
    expect(lines(await filesChanged(empty))).toEqual(['A /d', 'A /d/f', 'A /lost+found']);
    await expectChecks(realFileSystem, empty);
  });

  it('says so when the disk holds no ext4 file system', async () => {
    const blank = path.join(dir, 'blank.cow');
    await createImage(blank, { size: 4 * MiB });
    await expect(filesChanged(blank)).rejects.toMatchObject({ code: ErrorCode.UNSUPPORTED });
  });
});
