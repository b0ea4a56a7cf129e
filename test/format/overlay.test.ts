/**
 * The overlay file: created atomically with both header slots valid, headers written to
 * alternating slots so a torn header write leaves the previous one, one writer at a time.
 */
import { describe, expect, test } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { decodeOverlayHeader, encodeOverlayHeader } from '../../src/format/header.js';
import { OverlayFile } from '../../src/format/overlay.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { openImage } from '../../src/image/open.js';
import { checkImage } from '../../src/ops/check.js';

const FILE = '/o/disk.overlay';
const SPEC = { size: 1000 * 4096 + 5, blockSize: 4096, subBlocks: 1, parent: { kind: 'none' } as const };

async function created() {
  const fs = new MemoryFileSystem();
  await OverlayFile.create(fs, FILE, SPEC);
  return fs;
}

function slots(fs: MemoryFileSystem) {
  const bytes = fs.get(FILE);
  return [decodeOverlayHeader(bytes.subarray(0, 4096), FILE), decodeOverlayHeader(bytes.subarray(4096, 8192), FILE)];
}

describe('create', () => {
  test('writes both header slots, valid, and a sparse file as long as the data region', async () => {
    const fs = await created();
    const [a, b] = slots(fs);
    expect([a.generation, b.generation]).toEqual([2n, 1n]);
    expect({ ...a, generation: 0n }).toEqual({ ...b, generation: 0n });
    expect(a.dirty).toBe(false);
    const blocks = Math.ceil(SPEC.size / SPEC.blockSize);
    expect(fs.get(FILE).length).toBe(a.dataOffset + blocks * SPEC.blockSize);
    expect((await fs.stat(FILE)).allocated).toBe(8192);
  });

  test('a crash at any point of create leaves no overlay or a whole one, never a partial file at the name', async () => {
    const { operations } = await created();
    for (let crashAt = 1; crashAt <= operations; crashAt++) {
      const fs = new MemoryFileSystem();
      fs.inject = () => (fs.operations >= crashAt ? new Error('power cut') : undefined);
      await OverlayFile.create(fs, FILE, SPEC).catch(() => undefined);
      fs.inject = undefined;
      fs.crash({ keep: 'random', tear: true, random: () => (crashAt * 0.37) % 1 });
      if (await fs.exists(FILE)) {
        const overlay = await OverlayFile.open(fs, FILE);
        expect(overlay.header.size).toBe(SPEC.size);
        await overlay.close();
      }
    }
  });

  test('a step of create that fails (EIO, a full disk) leaves no temporary file behind', async () => {
    const { operations } = await created();
    for (let failAt = 1; failAt <= operations; failAt++) {
      const fs = new MemoryFileSystem();
      fs.inject = () => (fs.operations === failAt ? new Error('EIO') : undefined);
      const made = await OverlayFile.create(fs, FILE, SPEC).then(
        () => true,
        () => false,
      );
      fs.inject = undefined;
      // Only the directory sync comes after the rename: the file is whole at its name then.
      expect(fs.list('/o')).toEqual(made || (await fs.exists(FILE)) ? [FILE] : []);
    }
  });

  test('the new file gets exactly the permission bits asked for', async () => {
    const fs = new MemoryFileSystem();
    await OverlayFile.create(fs, FILE, { ...SPEC, mode: 0o600 });
    expect((await fs.stat(FILE)).mode).toBe(0o600);
  });

  test('an existing file is never replaced', async () => {
    const fs = await created();
    await expect(OverlayFile.create(fs, FILE, SPEC)).rejects.toMatchObject({ code: ErrorCode.EXISTS, path: FILE });
  });

  test('nor is one that appears while the overlay is being made: EXISTS, and that file is left as it is', async () => {
    const fs = new MemoryFileSystem();
    const theirs = Buffer.from('somebody else made this file meanwhile');
    fs.inject = (op) => {
      if (op.op === 'rename' && !fs.list('/o').includes(FILE)) fs.put(FILE, theirs);
      return undefined;
    };
    await expect(OverlayFile.create(fs, FILE, SPEC)).rejects.toMatchObject({ code: ErrorCode.EXISTS, path: FILE });
    expect(fs.get(FILE)).toEqual(theirs);
    expect(fs.list('/o')).toEqual([FILE]);
  });

  test('a disk of more than 2^31 blocks is INVALID_ARGUMENT (the caller asked for it; nothing is damaged), and no file is made', async () => {
    const fs = new MemoryFileSystem();
    const err = await OverlayFile.create(fs, FILE, { ...SPEC, size: 2 ** 31 * 4096 + 1 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCode.INVALID_ARGUMENT, path: FILE });
    expect((err as Error).message).toMatch(/larger block size/);
    expect(fs.list('/o')).toEqual([]);
  });
});

describe('headers', () => {
  test('a header change goes to the slot not holding the current header', async () => {
    const fs = await created();
    const overlay = await OverlayFile.open(fs, FILE);
    await overlay.setDirty(true);
    let [a, b] = slots(fs);
    expect([a.generation, a.dirty, b.generation, b.dirty]).toEqual([2n, false, 3n, true]);
    await overlay.setDirty(false);
    [a, b] = slots(fs);
    expect([a.generation, a.dirty, b.generation, b.dirty]).toEqual([4n, false, 3n, true]);
    await overlay.close();
  });

  test('a change that must not roll back is written to both slots', async () => {
    const fs = await created();
    const overlay = await OverlayFile.open(fs, FILE);
    await overlay.writeHeader({ ...overlay.header, dirty: true }, true);
    expect(slots(fs).map((h) => h.dirty)).toEqual([true, true]);
    await overlay.close();
  });

  test('open takes the valid slot with the higher generation; a torn newest slot leaves the previous header', async () => {
    const fs = await created();
    const overlay = await OverlayFile.open(fs, FILE);
    await overlay.setDirty(true);
    await overlay.close();
    expect((await OverlayFile.open(fs, FILE, { readOnly: true })).header.dirty).toBe(true);
    const bytes = fs.get(FILE);
    bytes.fill(0xee, 4096 + 512, 8192);
    fs.put(FILE, bytes);
    const again = await OverlayFile.open(fs, FILE, { readOnly: true });
    expect([again.header.generation, again.header.dirty]).toEqual([2n, false]);
  });

  test('an overlay shorter than its data region is TRUNCATED, naming the file', async () => {
    const fs = await created();
    const bytes = fs.get(FILE);
    fs.put(FILE, bytes.subarray(0, bytes.length - 1));
    const err = await OverlayFile.open(fs, FILE).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCode.TRUNCATED, path: FILE });
    expect((err as Error).message).toContain(FILE);
  });
});

describe('one writer at a time', () => {
  test('a second writable open is LOCKED; read-only opens are not', async () => {
    const fs = await created();
    const writer = await OverlayFile.open(fs, FILE);
    await expect(OverlayFile.open(fs, FILE)).rejects.toMatchObject({ code: ErrorCode.LOCKED, path: FILE });
    const reader = await OverlayFile.open(fs, FILE, { readOnly: true });
    await reader.close();
    await writer.close();
    const next = await OverlayFile.open(fs, FILE);
    await next.close();
  });

  test('an open that meets a file just replaced by rename (snapshot, commit) locks the new file, not the old one', async () => {
    const fs = await created();
    await OverlayFile.create(fs, `${FILE}.next`, { ...SPEC, size: 4096 });
    const replacer = await OverlayFile.open(fs, FILE);
    fs.yieldEvery = true;
    // The opener finds the old file; before it locks it, the replacer renames the new file over
    // the name and lets go of the old one, as `snapshot` does.
    let replaced = false;
    fs.inject = (op) => {
      if (!replaced && op.op === 'open' && op.path === FILE) {
        replaced = true;
        void fs.rename(`${FILE}.next`, FILE).then(() => replacer.close());
      }
      return undefined;
    };
    const opened = await OverlayFile.open(fs, FILE);
    expect(replaced).toBe(true);
    expect(opened.header.size).toBe(4096);
    // The lock is on the file the name leads to: nobody else can open it for writing now.
    fs.inject = undefined;
    await expect(OverlayFile.open(fs, FILE)).rejects.toMatchObject({ code: ErrorCode.LOCKED });
    await opened.close();
  });
});

describe('a generation at the reader\'s limit', () => {
  const LIMIT = BigInt(Number.MAX_SAFE_INTEGER);

  /** An overlay whose two header slots hold generations `gen - 1` and `gen`, as a long life leaves them. */
  async function aged(gen: bigint) {
    const fs = await created();
    const [current] = slots(fs);
    const bytes = fs.get(FILE);
    for (const g of [gen - 1n, gen]) encodeOverlayHeader({ ...current, generation: g }).copy(bytes, Number(g % 2n) * 4096);
    fs.put(FILE, bytes);
    return fs;
  }

  test('a write and a clean close at the limit leave an overlay that opens, and check --repair finds nothing to mend', async () => {
    for (const gen of [LIMIT - 1n, LIMIT]) {
      const fs = await aged(gen);
      const image = await openImage(FILE, { fs });
      await image.device.write(Buffer.alloc(4096, 7), 8192);
      await image.close();
      const again = await openImage(FILE, { fs, readOnly: true });
      const back = Buffer.alloc(4096);
      await again.device.read(back, 8192);
      expect(back.every((b) => b === 7), `generation ${gen}`).toBe(true);
      // Renumbered from the bottom: far from the limit again.
      expect(again.overlay?.file.header.generation).toBeLessThan(10n);
      await again.close();
      const report = await checkImage(FILE, { fs, repair: true });
      expect(report.problems).toEqual([]);
      expect((await checkImage(FILE, { fs })).ok).toBe(true);
    }
  });

  test('the renumbering is safe at every instant: a power cut after any step leaves an overlay that opens as before or after', async () => {
    const fs0 = await aged(LIMIT);
    const count = new MemoryFileSystem();
    count.put(FILE, fs0.get(FILE));
    let ops = 0;
    count.inject = () => void ops++;
    const overlay = await OverlayFile.open(count, FILE);
    await overlay.setDirty(true);
    await overlay.close();
    for (let cut = 1; cut <= ops; cut++) {
      const fs = new MemoryFileSystem();
      fs.put(FILE, fs0.get(FILE));
      let n = 0;
      fs.inject = () => (++n >= cut ? Object.assign(new Error('power cut'), { code: 'EIO' }) : undefined);
      const o = await OverlayFile.open(fs, FILE).catch(() => undefined);
      await o?.setDirty(true).catch(() => undefined);
      fs.inject = undefined;
      fs.crash({ keep: 'random', tear: true, random: mulberry(cut) });
      const after = await OverlayFile.open(fs, FILE, { readOnly: true });
      expect(after.header.size, `cut at operation ${cut}`).toBe(SPEC.size);
      await after.close();
    }
  });
});

function mulberry(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
