/**
 * The lifecycle verbs as a user runs them: the built `cowdisk` spawned (`npm test` builds first),
 * its output and exit status, and the images it leaves behind.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { realFileSystem } from '../../src/io/real-file.js';
import { openImage } from '../../src/image/open.js';
import { cowdisk, KiB, MiB, scratchDir, writeRaw, mixedPattern } from '../cli/fixtures.js';
import { serveImages } from '../helpers/nbd-images.js';
import { run } from '../helpers/nbd-tools.js';
import { chainPaths, expectChecks } from './helpers.js';
import { withMounted } from './kernel-mount.js';

const { at } = scratchDir();

/** base.snap from a raw file of mixed blocks, and a clone NAME.cow with a few writes. */
async function clone(name: string): Promise<string> {
  if (!(await realFileSystem.exists(at('base.snap')))) {
    writeRaw(at('base.raw'), mixedPattern(32));
    expect((await cowdisk(['import', at('base.raw'), at('base.snap')])).code).toBe(0);
  }
  const file = at(`${name}.cow`);
  expect((await cowdisk(['clone', at('base.snap'), file])).code).toBe(0);
  const image = (await openImage(file)).device;
  await image.zero(64 * KiB, 64 * KiB); // block 1 held random data
  await image.write(Buffer.alloc(8 * KiB, 0x5a), 3 * 64 * KiB + 4 * KiB); // block 3 held zeros
  await image.close();
  return file;
}

/** The disk an image presents, through `cowdisk export`. */
async function disk(file: string, name: string): Promise<Buffer> {
  expect((await cowdisk(['export', file, at(name)])).code).toBe(0);
  return readFileSync(at(name));
}

describe('cowdisk lifecycle commands', () => {
  it('snapshot seals the overlay into OVERLAY-NAME.1.snap, says the disk is unchanged, and the chain grows by one', async () => {
    const vm = await clone('snap');
    const before = await disk(vm, 'snap-before.raw');
    const r = await cowdisk(['snapshot', vm]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`into ${at('snap.1.snap')}`);
    expect(r.stdout).toContain('the disk it presents is unchanged');
    expect(await chainPaths(realFileSystem, vm)).toEqual([vm, at('snap.1.snap'), at('base.snap')]);
    expect((await disk(vm, 'snap-after.raw')).equals(before)).toBe(true);
    const json = JSON.parse((await cowdisk(['snapshot', '--json', vm])).stdout);
    expect(json).toMatchObject({ layer: at('snap.2.snap'), parent: at('snap.1.snap'), blocks: 0 });
    await expectChecks(realFileSystem, vm);
  });

  it('commit says the merged parent is unchanged and its other clones stay valid; --into takes a digest', async () => {
    const vm = await clone('commit');
    const before = await disk(vm, 'commit-before.raw');
    const r = await cowdisk(['commit', vm]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`Unchanged: ${at('base.snap')}. Other clones of it stay valid`);
    expect(r.stdout).toContain('with no parent: it stands alone');
    expect((await disk(vm, 'commit-after.raw')).equals(before)).toBe(true);
    const bad = await cowdisk(['commit', vm, '--into', 'sha256:0123456789ab']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('is not a layer beneath');
    await expectChecks(realFileSystem, vm);
  });

  it('rebase reports what it copied; --unsafe says it did not compare', async () => {
    const vm = await clone('rebase');
    const other = await clone('rebase-other');
    expect((await cowdisk(['snapshot', other, at('sibling.snap')])).code).toBe(0);
    const before = await disk(vm, 'rebase-before.raw');
    const r = await cowdisk(['rebase', vm, at('sibling.snap')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^Rebased .* onto .*sibling\.snap: copied .* into it \(compared .*\)\.\n$/);
    expect((await disk(vm, 'rebase-after.raw')).equals(before)).toBe(true);
    const unsafe = await cowdisk(['rebase', '--unsafe', vm, at('sibling.snap')]);
    expect(unsafe.stdout).toContain('without comparing contents (--unsafe)');
    await expectChecks(realFileSystem, vm);
  });

  it('flatten writes one parentless layer (or --overlay) that exports to the same bytes', async () => {
    const vm = await clone('flat');
    const before = await disk(vm, 'flat-before.raw');
    const r = await cowdisk(['flatten', vm, at('flat.snap')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('a sealed layer with no parent');
    expect(await chainPaths(realFileSystem, at('flat.snap'))).toEqual([at('flat.snap')]);
    expect((await disk(at('flat.snap'), 'flat-snap.raw')).equals(before)).toBe(true);
    const overlay = await cowdisk(['flatten', '--overlay', vm, at('standalone.cow')]);
    expect(overlay.stdout, overlay.stderr).toContain('a writable overlay with no parent');
    expect((await disk(at('standalone.cow'), 'flat-cow.raw')).equals(before)).toBe(true);
    expect((await cowdisk(['flatten', vm, at('flat.snap')])).code).toBe(1);
    for (const file of [at('flat.snap'), at('standalone.cow')]) await expectChecks(realFileSystem, file);
  });

  it('diff prints the changed ranges with their state, or JSON, and works while the image is served', async () => {
    const vm = await clone('diff');
    const server = await serveImages([{ name: 'vm', file: vm }]);
    try {
      const r = await cowdisk(['diff', vm]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.split('\n').slice(0, 3).map((l) => l.trim().split(/\s+/))).toEqual([
        ['OFFSET', 'LENGTH', 'STATE'],
        [String(64 * KiB), String(64 * KiB), 'zeroed'],
        [String(3 * 64 * KiB + 4 * KiB), String(8 * KiB), 'written'],
      ]);
      const json = JSON.parse((await cowdisk(['diff', '--json', vm])).stdout);
      expect(json).toMatchObject({ image: vm, against: at('base.snap'), writtenBytes: 8 * KiB, zeroedBytes: 64 * KiB });
      expect((await cowdisk(['diff', vm, '--against', vm])).stdout).toContain('reads the same as');
    } finally {
      await server.close();
    }
  });

  it('diff --files prints A / C / D lines for files the kernel wrote', async () => {
    await run('truncate', ['-s', `${64 * MiB}`, at('fs.raw')]);
    await run('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', at('fs.raw')]);
    expect((await cowdisk(['import', at('fs.raw'), at('fs.snap')])).code).toBe(0);
    expect((await cowdisk(['clone', at('fs.snap'), at('fs.cow')])).code).toBe(0);
    await withMounted(at('fs.cow'), 'mkdir app && echo hi > app/hello.txt && rm -r lost+found');
    const r = await cowdisk(['diff', '--files', at('fs.cow')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('A /app\nA /app/hello.txt\nD /lost+found\n');
    const json = JSON.parse((await cowdisk(['diff', '--files', '--json', at('fs.cow')])).stdout);
    expect(json.files).toEqual([
      { kind: 'A', path: '/app' },
      { kind: 'A', path: '/app/hello.txt' },
      { kind: 'D', path: '/lost+found' },
    ]);
    await expectChecks(realFileSystem, at('fs.cow'));
  });

  it('gc reports the space reclaimed; sealed layers and served overlays are refused with the reason', async () => {
    const vm = await clone('gc');
    const image = (await openImage(vm)).device;
    await image.write(Buffer.alloc(256 * KiB), 10 * 64 * KiB);
    await image.close();
    const r = await cowdisk(['gc', vm]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/reclaimed .* on disk\); 256 KiB of stored zeros became zero blocks\.\n$/);
    const sealed = await cowdisk(['gc', at('base.snap')]);
    expect(sealed.code).toBe(2);
    expect(sealed.stderr).toContain('never modifies');
    const server = await serveImages([{ name: 'vm', file: vm }]);
    try {
      for (const verb of [['gc', vm], ['snapshot', vm], ['commit', vm], ['rebase', vm, at('base.snap')], ['flatten', vm, at('gc-flat.snap')]]) {
        const locked = await cowdisk(verb);
        expect(locked.code, verb[0]).toBe(1);
        expect(locked.stderr, verb[0]).toContain('COWDISK_E_LOCKED');
      }
    } finally {
      await server.close();
    }
    await expectChecks(realFileSystem, vm);
  });
});
