/**
 * `upgrade`: a version 1 layer rewritten as version 2 in place, keeping its digest. The committed
 * v1 fixtures (a chain: overlay on two sealed layers, test/fixtures/v1), copied to a temporary
 * directory and upgraded layer by layer, export byte for byte what they did, with the same
 * identities, and their children still open on them. A power cut at any operation leaves the old
 * file or the new one; a damaged layer, an overlay and a raw file are refused, changing nothing;
 * a layer already of version 2 is left alone.
 */
import { createHash } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { openImage } from '../../src/image/open.js';
import { checkImage } from '../../src/ops/check.js';
import { cloneImage } from '../../src/ops/create.js';
import { describeImage } from '../../src/ops/info.js';
import { upgradeLayer } from '../../src/ops/upgrade.js';
import { type BlockContent, Random, buildChain, pattern, writeSnapshotLayer } from '../helpers/engine-chain.js';
import { snapshotRegions } from '../helpers/engine-damage.js';
import { expectChecks, expectSameDisk, readDisk } from './helpers.js';

const FIXTURES = path.join(import.meta.dirname, '../fixtures/v1');
const expected = JSON.parse(readFileSync(path.join(FIXTURES, 'exports.json'), 'utf8')) as Record<string, { export: string; identity: string; size: number }>;
const KiB = 1024;

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function fixtureCopy(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'cowdisk-upgrade-'));
  dirs.push(dir);
  cpSync(FIXTURES, dir, { recursive: true });
  return dir;
}

async function exportSum(file: string): Promise<{ sum: string; identity: string }> {
  const image = await openImage(file, { readOnly: true });
  try {
    const buf = Buffer.alloc(image.device.size);
    await image.device.read(buf, 0);
    return { sum: createHash('sha256').update(buf).digest('hex'), identity: image.device.chain[0].identity };
  } finally {
    await image.close();
  }
}

describe('the v1 fixture chain, upgraded layer by layer', () => {
  it('exports byte for byte what it did, with the same digests; the children still open on the upgraded layers', async () => {
    const dir = fixtureCopy();
    for (const layer of ['mid.snap', 'base.snap']) {
      const file = path.join(dir, layer);
      expect((await describeImage(file)).version).toBe(1);
      const result = await upgradeLayer(file);
      expect(result).toMatchObject({ layer: file, from: 1, to: 2, upgraded: true, digest: expected[layer].identity });
      expect(result.bytesAfter).toBe(statSync(file).size);
      expect((await describeImage(file)).version).toBe(2);
      expect(statSync(file).mode & 0o777).toBe(0o444);
      for (const name of Object.keys(expected)) {
        expect(await exportSum(path.join(dir, name)), `${name} after upgrading ${layer}`).toEqual({ sum: expected[name].export, identity: expected[name].identity });
      }
    }
    const report = await checkImage(path.join(dir, 'top.cow'));
    expect(report.problems).toEqual([]);
    expect(report.stats.layers).toBe(3);
    const chain = (await describeImage(path.join(dir, 'top.cow'), { chain: true })).chain;
    expect(chain?.map((l) => l.version)).toEqual([1, 2, 2]);
  });

  it('a layer already of version 2 is left as it is, byte for byte', async () => {
    const dir = fixtureCopy();
    const file = path.join(dir, 'base.snap');
    await upgradeLayer(file);
    const before = readFileSync(file);
    const { mtimeMs, ino } = statSync(file);
    expect(await upgradeLayer(file)).toMatchObject({ from: 2, to: 2, upgraded: false, digest: expected['base.snap'].identity });
    expect(readFileSync(file).equals(before)).toBe(true);
    expect(statSync(file)).toMatchObject({ mtimeMs, ino });
  });

  it('an overlay is refused (NOT_SEALED), a raw file too (INVALID_ARGUMENT); nothing changes', async () => {
    const dir = fixtureCopy();
    const top = path.join(dir, 'top.cow');
    const before = readFileSync(top);
    await expect(upgradeLayer(top)).rejects.toMatchObject({ code: ErrorCode.NOT_SEALED, path: top });
    expect(readFileSync(top).equals(before)).toBe(true);
    const readme = path.join(dir, 'README.md');
    await expect(upgradeLayer(readme)).rejects.toMatchObject({ code: ErrorCode.INVALID_ARGUMENT, path: readme });
  });
});

describe('upgrade in memory', () => {
  const BS = 16 * KiB;

  async function v1Chain() {
    const fs = new MemoryFileSystem();
    const chain = await buildChain(fs, '/u', { depth: 3, base: 'snapshot', size: 12 * BS + 777, blockSize: BS, seed: 5, version: 1 });
    return { fs, chain };
  }

  it('keeps every kind: a data block of zeros stays data (the digest would tell), zero blocks stay zero, absent stay absent', async () => {
    const fs = new MemoryFileSystem();
    const blocks = new Map<number, BlockContent>([
      [0, Buffer.alloc(BS)],
      [1, null],
      [3, pattern(1, BS)],
      [4, pattern(3, BS)],
    ]);
    const ref = await writeSnapshotLayer(fs, '/u/a.snap', { size: 6 * BS, blockSize: BS, parent: { kind: 'none' }, blocks, version: 1 });
    const result = await upgradeLayer('/u/a.snap', { fs });
    expect(result.digest).toBe(`sha256:${ref.digest.toString('hex')}`);
    const kinds = new Map(snapshotRegions(fs.get('/u/a.snap')).blocks.map(([, , block, kind]) => [block, kind]));
    expect(kinds).toEqual(
      new Map([
        [0, 3],
        [3, 3],
        [4, 2],
      ]),
    );
  });

  it('a damaged layer (a stored block flipped) is refused as CORRUPT, left byte for byte, with no file left behind', async () => {
    const { fs, chain } = await v1Chain();
    const layer = chain.sealed[0];
    const bytes = fs.get(layer);
    const [start, end] = snapshotRegions(bytes).blocks[0];
    bytes[(start + end) >> 1] ^= 0x11;
    fs.put(layer, bytes);
    const files = fs.list('/');
    const err = await upgradeLayer(layer, { fs }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCode.CORRUPT, path: layer });
    expect(fs.get(layer).equals(bytes)).toBe(true);
    expect(fs.list('/')).toEqual(files);
  });

  it('a power cut at any operation leaves the old layer or the new one, with the same digest, and the chain reads the same', async () => {
    const { fs: pristine, chain } = await v1Chain();
    const layer = chain.sealed[1];
    const disk = await readDisk(pristine, chain.overlay);
    const copy = () => {
      const fs = new MemoryFileSystem();
      for (const file of pristine.list('/')) fs.put(file, pristine.get(file));
      return fs;
    };
    const clean = copy();
    const start = clean.operations;
    await upgradeLayer(layer, { fs: clean });
    const operations = clean.operations - start;
    const versions = new Set<number>();
    for (let k = 0; k <= operations; k++) {
      const fs = copy();
      const begin = fs.operations;
      fs.inject = () => (fs.operations - begin - 1 >= k ? new Error('power cut') : undefined);
      await upgradeLayer(layer, { fs }).catch((err: Error) => {
        if (!err.message.includes('power cut')) throw err;
      });
      fs.inject = undefined;
      fs.crash({ keep: 'random', random: new Random(k).next.bind(new Random(k)) });
      const where = `power cut at operation ${k} of ${operations}`;
      const version = fs.get(layer).readUInt32LE(8);
      versions.add(version);
      if (version === 1) expect(fs.get(layer).equals(pristine.get(layer)), where).toBe(true);
      expectSameDisk(await readDisk(fs, chain.overlay), disk);
      await expectChecks(fs, chain.overlay);
      await cloneImage(layer, '/u/after.cow', { fs });
    }
    expect([...versions].sort()).toEqual([1, 2]);
  });
});
