/**
 * MemoryFileSystem, the power-cut simulator every crash test relies on: what it keeps and drops at
 * crash() must be exactly what a disk with a volatile write cache could keep, or the crash tests
 * prove nothing.
 */
import { describe, expect, test } from 'vitest';
import { CowdiskError, ErrorCode } from '../../src/errors.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { Random } from '../helpers/engine-chain.js';

const SECTOR = 512;

async function fileWith(fs: MemoryFileSystem, file: string, data: Buffer) {
  const handle = await fs.create(file);
  await handle.write(data, 0);
  await handle.sync();
  await fs.syncDir('/d');
  return handle;
}

describe('writes and crash', () => {
  test('a write is visible to reads at once, before any sync', async () => {
    const fs = new MemoryFileSystem();
    const f = await fs.create('/d/a');
    await f.write(Buffer.from('hello'), 3);
    const back = Buffer.alloc(8);
    expect(await f.read(back, 0)).toBe(8);
    expect(back).toEqual(Buffer.from('\0\0\0hello'));
  });

  test('crash keeps synced writes and drops every unsynced one', async () => {
    const fs = new MemoryFileSystem();
    const f = await fileWith(fs, '/d/a', Buffer.alloc(2048, 1));
    await f.write(Buffer.alloc(512, 2), 0);
    await f.sync();
    await f.write(Buffer.alloc(512, 3), 512);
    await f.write(Buffer.alloc(512, 4), 4096);
    fs.crash();
    const after = fs.get('/d/a');
    expect(after.length).toBe(2048);
    expect(after.subarray(0, 512).every((b) => b === 2)).toBe(true);
    expect(after.subarray(512).every((b) => b === 1)).toBe(true);
  });

  test('crash drops an unsynced truncate and an unsynced punch', async () => {
    const fs = new MemoryFileSystem();
    const f = await fileWith(fs, '/d/a', Buffer.alloc(8192, 7));
    await f.punchHole(0, 4096);
    await f.truncate(100);
    expect(fs.get('/d/a').length).toBe(100);
    fs.crash();
    expect(fs.get('/d/a')).toEqual(Buffer.alloc(8192, 7));
  });

  test("keep 'random' keeps an arbitrary subset of unsynced writes: each one whole or not at all", async () => {
    const outcomes = new Set<string>();
    for (let seed = 1; seed <= 40; seed++) {
      const fs = new MemoryFileSystem();
      const f = await fileWith(fs, '/d/a', Buffer.alloc(8 * SECTOR));
      for (let i = 0; i < 8; i++) await f.write(Buffer.alloc(SECTOR, i + 1), i * SECTOR);
      const rng = new Random(seed);
      fs.crash({ keep: 'random', random: () => rng.next() });
      const after = fs.get('/d/a');
      let outcome = '';
      for (let i = 0; i < 8; i++) {
        const sector = after.subarray(i * SECTOR, (i + 1) * SECTOR);
        const kept = sector.every((b) => b === i + 1);
        expect(kept || sector.every((b) => b === 0)).toBe(true);
        outcome += kept ? '1' : '0';
      }
      outcomes.add(outcome);
    }
    // A real subset: not always everything, not always nothing, and not always the same one.
    expect(outcomes.size).toBeGreaterThan(10);
  });

  test('with tear, a surviving write may keep only a prefix of its sectors, never a middle piece', async () => {
    const prefixes = new Set<number>();
    for (let seed = 1; seed <= 200; seed++) {
      const fs = new MemoryFileSystem();
      const f = await fileWith(fs, '/d/a', Buffer.alloc(8 * SECTOR));
      await f.write(Buffer.alloc(8 * SECTOR, 9), 0);
      const rng = new Random(seed);
      fs.crash({ keep: 'random', tear: true, random: () => rng.next() });
      const after = fs.get('/d/a');
      let kept = 0;
      while (kept < 8 && after[kept * SECTOR] === 9) kept++;
      expect(after.subarray(0, kept * SECTOR).every((b) => b === 9)).toBe(true);
      expect(after.subarray(kept * SECTOR).every((b) => b === 0)).toBe(true);
      prefixes.add(kept);
    }
    expect(prefixes.has(0)).toBe(true);
    expect(prefixes.has(8)).toBe(true);
    expect([...prefixes].some((k) => k > 0 && k < 8)).toBe(true);
  });

  test('handles opened before a crash fail with a typed error naming the file', async () => {
    const fs = new MemoryFileSystem();
    const f = await fileWith(fs, '/d/a', Buffer.alloc(10));
    fs.crash();
    const err = await f.read(Buffer.alloc(1), 0).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CowdiskError);
    expect((err as CowdiskError).code).toBe(ErrorCode.IO);
    expect((err as CowdiskError).message).toContain('/d/a');
  });
});

describe('namespace durability (syncDir)', () => {
  test('a created file is lost at a crash unless its directory was synced', async () => {
    const fs = new MemoryFileSystem();
    const a = await fs.create('/d/a');
    await a.write(Buffer.from('x'), 0);
    await a.sync();
    fs.crash();
    expect(await fs.exists('/d/a')).toBe(false);

    const b = await fs.create('/d/b');
    await b.write(Buffer.from('y'), 0);
    await b.sync();
    await fs.syncDir('/d');
    fs.crash();
    expect(fs.get('/d/b')).toEqual(Buffer.from('y'));
  });

  test('syncDir of another directory does not make the entry durable', async () => {
    const fs = new MemoryFileSystem();
    const a = await fs.create('/d/a');
    await a.sync();
    await fs.syncDir('/elsewhere');
    fs.crash();
    expect(await fs.exists('/d/a')).toBe(false);
  });

  test('a rename is undone by a crash before syncDir and kept after it', async () => {
    const fs = new MemoryFileSystem();
    await fileWith(fs, '/d/tmp', Buffer.from('data'));
    await fs.rename('/d/tmp', '/d/final');
    fs.crash();
    expect(await fs.exists('/d/tmp')).toBe(true);
    expect(await fs.exists('/d/final')).toBe(false);

    await fs.rename('/d/tmp', '/d/final');
    await fs.syncDir('/d');
    fs.crash();
    expect(await fs.exists('/d/tmp')).toBe(false);
    expect(fs.get('/d/final')).toEqual(Buffer.from('data'));
  });

  test('publish names a file but never over one that exists (EXISTS), and is undone by a crash before syncDir', async () => {
    const fs = new MemoryFileSystem();
    await fileWith(fs, '/d/tmp', Buffer.from('new'));
    await fileWith(fs, '/d/other', Buffer.from('old'));
    await expect(fs.publish('/d/tmp', '/d/other')).rejects.toMatchObject({ code: ErrorCode.EXISTS, path: '/d/other' });
    expect(fs.get('/d/other')).toEqual(Buffer.from('old'));
    await fs.publish('/d/tmp', '/d/final');
    expect(fs.get('/d/final')).toEqual(Buffer.from('new'));
    fs.crash();
    expect(await fs.exists('/d/final')).toBe(false);
    expect(await fs.exists('/d/tmp')).toBe(true);
  });

  test('an unlink is undone by a crash before syncDir', async () => {
    const fs = new MemoryFileSystem();
    await fileWith(fs, '/d/a', Buffer.from('keep'));
    await fs.unlink('/d/a');
    expect(await fs.exists('/d/a')).toBe(false);
    fs.crash();
    expect(fs.get('/d/a')).toEqual(Buffer.from('keep'));
  });
});

describe('injected errors and interleaving', () => {
  test('inject fails the chosen operation with a typed I/O error, and that write does not happen', async () => {
    const fs = new MemoryFileSystem();
    const f = await fileWith(fs, '/d/a', Buffer.alloc(4));
    let writes = 0;
    fs.inject = (op) => (op.op === 'write' && ++writes === 2 ? Object.assign(new Error('injected'), { code: 'EIO' }) : undefined);
    await f.write(Buffer.from([1]), 0);
    const err = await f.write(Buffer.from([2]), 1).catch((e: unknown) => e);
    await f.write(Buffer.from([3]), 2);
    expect(err).toBeInstanceOf(CowdiskError);
    expect((err as CowdiskError).code).toBe(ErrorCode.IO);
    expect((err as CowdiskError).path).toBe('/d/a');
    expect(fs.get('/d/a')).toEqual(Buffer.from([1, 0, 3, 0]));
  });

  test('inject sees each operation with its kind, file, offset and length', async () => {
    const fs = new MemoryFileSystem();
    const seen: string[] = [];
    fs.inject = (op) => {
      seen.push(`${op.op} ${op.path} ${op.pos ?? '-'} ${op.length ?? '-'}`);
      return undefined;
    };
    const f = await fs.create('/d/a');
    await f.write(Buffer.alloc(3), 10);
    await f.read(Buffer.alloc(5), 1);
    await f.sync();
    expect(seen).toEqual(['create /d/a - -', 'write /d/a 10 3', 'read /d/a 1 5', 'sync /d/a - -']);
  });

  test('operations counts every file operation (crash points are picked by it)', async () => {
    const fs = new MemoryFileSystem();
    const f = await fs.create('/d/a');
    const before = fs.operations;
    await f.write(Buffer.alloc(1), 0);
    await f.read(Buffer.alloc(1), 0);
    await f.sync();
    expect(fs.operations - before).toBe(3);
  });

  test('yieldEvery lets other tasks run between the operations of one caller', async () => {
    const fs = new MemoryFileSystem();
    const f = await fs.create('/d/a');
    const order: string[] = [];
    fs.yieldEvery = true;
    const other = new Promise<void>((resolve) =>
      setImmediate(() => {
        order.push('other task');
        resolve();
      }),
    );
    for (let i = 0; i < 3; i++) {
      await f.write(Buffer.alloc(1), i);
      order.push(`write ${i}`);
    }
    await other;
    expect(order.indexOf('other task')).toBeLessThan(order.indexOf('write 2'));
  });
});

describe('files', () => {
  test('a read-only handle refuses writes with a typed error', async () => {
    const fs = new MemoryFileSystem();
    await fileWith(fs, '/d/a', Buffer.alloc(4));
    const ro = await fs.open('/d/a', { readOnly: true });
    await expect(ro.write(Buffer.alloc(1), 0)).rejects.toMatchObject({ code: ErrorCode.IO });
  });

  test('creating an existing file exclusively fails with EXISTS; opening a missing one with NOT_FOUND', async () => {
    const fs = new MemoryFileSystem();
    await fileWith(fs, '/d/a', Buffer.alloc(1));
    await expect(fs.create('/d/a')).rejects.toMatchObject({ code: ErrorCode.EXISTS, path: '/d/a' });
    await expect(fs.open('/d/missing')).rejects.toMatchObject({ code: ErrorCode.NOT_FOUND });
  });

  test('punchHole zeroes the range and stat counts only 4 KiB pages holding data', async () => {
    const fs = new MemoryFileSystem();
    const f = await fileWith(fs, '/d/a', Buffer.alloc(4 * 4096, 5));
    expect((await f.stat()).allocated).toBe(4 * 4096);
    expect(await f.punchHole(4096, 8192)).toBe(true);
    const st = await f.stat();
    expect(st.size).toBe(4 * 4096);
    expect(st.allocated).toBe(2 * 4096);
    expect(fs.get('/d/a').subarray(4096, 3 * 4096).every((b) => b === 0)).toBe(true);
  });

  test('a write changes the modification time; the inode stays', async () => {
    const fs = new MemoryFileSystem();
    const f = await fileWith(fs, '/d/a', Buffer.alloc(4));
    const before = await fs.stat('/d/a');
    await f.write(Buffer.alloc(1, 1), 0);
    const after = await fs.stat('/d/a');
    expect(after.mtimeNs).toBeGreaterThan(before.mtimeNs);
    expect(after.ino).toBe(before.ino);
  });

  test('an exclusive lock excludes other locks until its holder closes, and a crash releases it', async () => {
    const fs = new MemoryFileSystem();
    await fileWith(fs, '/d/a', Buffer.alloc(4));
    const one = await fs.open('/d/a');
    const two = await fs.open('/d/a');
    expect(await one.tryLock(true)).toBe(true);
    expect(await two.tryLock(false)).toBe(false);
    await one.close();
    expect(await two.tryLock(true)).toBe(true);
    fs.crash();
    const three = await fs.open('/d/a');
    expect(await three.tryLock(true)).toBe(true);
  });

  test('shared locks coexist and exclude an exclusive one', async () => {
    const fs = new MemoryFileSystem();
    await fileWith(fs, '/d/a', Buffer.alloc(4));
    const [a, b, c] = [await fs.open('/d/a'), await fs.open('/d/a'), await fs.open('/d/a')];
    expect(await a.tryLock(false)).toBe(true);
    expect(await b.tryLock(false)).toBe(true);
    expect(await c.tryLock(true)).toBe(false);
  });
});
