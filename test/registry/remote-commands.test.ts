/**
 * The command line on layers across machines, against a real registry behind the fault proxy:
 * `push` and `pull` as a user runs them, every read-side and lifecycle verb on a lazy clone
 * (`info --chain`, `map`, `check`, `export`, `diff`, `snapshot`, `commit`), and a pull that is
 * cut short and run again, which fetches only what it did not have.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { openImage } from '../../src/index.js';
import { cachedCopy, presentPath } from '../../src/image/layer-cache.js';
import { realFileSystem } from '../../src/io/real-file.js';
import { metadataOf } from '../../src/ops/push.js';
import { REPO, cowdisk } from '../helpers/cli.js';
import { run } from '../helpers/nbd-tools.js';
import { blobGets } from './fault-proxy.js';
import { CLI_ENV, useRemoteFixture } from './remote-fixture.js';
import { APP_BLOCKS, blobDigest, MiB, rangeRequests, storedRanges } from './remote-images.js';

const f = useRemoteFixture({ size: 12 * MiB });
const { fresh } = f;
const env = CLI_ENV;

/** Runs the CLI and expects exit 0. */
async function ok(args: string[]): Promise<string> {
  const r = await cowdisk(args, { env });
  expect(r.code, `cowdisk ${args.join(' ')}:\n${r.stderr}`).toBe(0);
  return r.stdout;
}

test('push prints what went up, then what the registry already had', async () => {
  const where = `${f.proxy.host}/disks/cli:v1`;
  const first = JSON.parse(await ok(['push', '--json', f.chain.app, where]));
  expect(first.layers.map((l: { outcome: string }) => l.outcome)).toEqual(['uploaded', 'uploaded']);
  expect(first.sent).toBe(fs.statSync(f.chain.app).size + fs.statSync(f.chain.base).size);
  expect(await ok(['push', f.chain.app, where])).toMatch(/^Pushed .* to 127\.0\.0\.1:\d+\/disks\/cli:v1 \(sha256:[0-9a-f]{64}\): 2 layers, 0 uploaded \(0 B sent\), 2 present\.\n$/);
});

describe('on a lazy clone', () => {
  let overlay: string;
  let cache: string;
  let local: string;
  beforeAll(async () => {
    cache = fresh('cache');
    overlay = fresh('vm.cow');
    await ok(['clone', '--cache', cache, f.ref, overlay]);
    local = fresh('local.cow');
    await ok(['clone', f.chain.app, local]);
  });

  test('info --chain lists the cached layers, read from their headers alone', async () => {
    f.proxy.reset();
    const info = JSON.parse(await ok(['info', '--chain', '--json', overlay]));
    expect(info.chain.map((l: { kind: string; path: string }) => [l.kind, l.path])).toEqual([
      ['overlay', overlay],
      ['snapshot', cachedCopy(cache, info.chain[1].identity)],
      ['snapshot', cachedCopy(cache, info.chain[2].identity)],
    ]);
    expect(f.proxy.log).toEqual([]);
  });

  test('map gives the extents the local chain gives', async () => {
    const strip = (text: string) => JSON.parse(text).map(({ offset, length, kind, layer }: Record<string, unknown>) => ({ offset, length, kind, layer }));
    expect(strip(await ok(['map', '--json', overlay]))).toEqual(strip(await ok(['map', '--json', local])));
  });

  test('export writes the disk the local chain exports', async () => {
    const mine = fresh('lazy.raw');
    const theirs = fresh('local.raw');
    await ok(['export', overlay, mine]);
    await ok(['export', local, theirs]);
    await run('cmp', [mine, theirs]);
  });

  test('check fetches what it must verify and says so; checked again, it fetches nothing', async () => {
    const other = fresh('vm.cow');
    const otherCache = fresh('cache');
    await ok(['clone', '--cache', otherCache, f.ref, other]);
    f.proxy.reset();
    expect(await ok(['check', other])).toMatch(/^fetched [0-9.]+ MiB from the registry to verify lazily cloned layers\.\n.*: no problems found \(3 layers, \d+ stored blocks verified/);
    expect(f.proxy.bytes).toBeGreaterThan(fs.statSync(f.chain.base).size / 2);
    f.proxy.reset();
    expect(await ok(['check', other])).toMatch(/^[^\n]*no problems found/);
    expect(f.proxy.log).toEqual([]);
  });

  test('diff against a local layer finds the blocks the top layer rewrote', async () => {
    const diff = JSON.parse(await ok(['diff', '--json', '--against', f.chain.base, overlay]));
    const bs = f.chain.blockSize;
    expect(diff.ranges.map((r: { offset: number; length: number }) => [r.offset / bs, r.length / bs])).toEqual([[1, 1], [5, 2], [40, 1]]);
    expect(APP_BLOCKS).toEqual([1, 5, 6, 40]);
  });

  test('snapshot seals the overlay over the cached layers, and commit merges it down into them', async () => {
    const image = await openImage(overlay);
    await image.device.write(Buffer.alloc(4096, 0x5a), 3 * f.chain.blockSize + 4096);
    await image.close();
    const sealed = fresh('vm.1.snap');
    const before = await layerIds(overlay);
    expect(JSON.parse(await ok(['snapshot', '--json', overlay, sealed])).parent).toBe(cachedCopy(cache, before[1]));
    expect((await layerIds(overlay)).length).toBe(4);
    const committed = JSON.parse(await ok(['commit', '--json', '--into', (await layerIds(overlay))[2], overlay]));
    expect(committed.merged).toHaveLength(2);
    const ids = await layerIds(overlay);
    expect(ids.length).toBe(3);
    const expected = Buffer.from(f.chain.contents);
    expected.fill(0x5a, 3 * f.chain.blockSize + 4096, 3 * f.chain.blockSize + 8192);
    const out = fresh('after.raw');
    await ok(['export', overlay, out]);
    expect(fs.readFileSync(out).equals(expected)).toBe(true);
  });
});

/** The identities of an image's layers, top first. */
async function layerIds(image: string): Promise<string[]> {
  return JSON.parse(await ok(['info', '--chain', '--json', image])).chain.map((l: { identity: string }) => l.identity);
}

test('a pull killed midway fetches, when run again, only what it did not have, and gives the chain', async () => {
  const cache = fresh('cache');
  const out = path.join(fresh('pulled'), 'app.snap');
  // The config, each layer's metadata ranges (one per layer in format version 2: header and
  // directory are one range), the base's table page and one of its groups of blocks get
  // through; the registry then stops answering, and the pull is killed while it waits, as by a
  // user's Ctrl-C or a crash.
  const metadataRanges = (await metadataOf(realFileSystem, f.chain.base)).ranges.length + (await metadataOf(realFileSystem, f.chain.app)).ranges.length;
  let allowed = 1 + metadataRanges + 1 + 1;
  f.proxy.faults = { hang: (r) => blobGets(r) && --allowed < 0 };
  const child = spawn(process.execPath, [`${REPO}bin/cowdisk`, 'pull', '--cache', cache, f.ref, out], { env, stdio: 'ignore' });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const baseId = (await layerIds(f.chain.base))[0];
  const { blocks, tables } = await storedRanges(f.chain.base);
  const marksNow = () => {
    const file = presentPath(cachedCopy(cache, baseId));
    return fs.existsSync(file) ? [...fs.readFileSync(file)].filter((m) => m === 1).length : 0;
  };
  // Until the marks of what got through are written (after their sync) and stay so.
  for (let last = -1, deadline = Date.now() + 20_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 300))) {
    const now = marksNow();
    if (now > tables.length && now === last) break;
    last = now;
  }
  child.kill('SIGKILL');
  await exited;
  expect(fs.existsSync(out)).toBe(false);
  const marks = fs.readFileSync(presentPath(cachedCopy(cache, baseId)));
  const had = [...blocks].filter(([b]) => marks[tables.length + b] === 1).map(([, r]) => r);
  expect(had.length).toBeGreaterThan(0);
  expect(had.length).toBeLessThan(blocks.size);
  f.proxy.reset();
  const pulled = await ok(['pull', '--json', '--cache', cache, f.ref, out]);
  expect(JSON.parse(pulled).layers.map((l: { how: string }) => l.how)).toEqual(['fetched', 'fetched']);
  const asked = rangeRequests(f.proxy.log).filter((a) => a.digest === blobDigest(f.chain.base));
  for (const r of had) expect(asked.some((a) => a.first < r.offset + r.length && r.offset < a.end), `bytes ${r.offset}+${r.length} fetched again`).toBe(false);
  expect(f.proxy.bytes).toBeLessThan(fs.statSync(f.chain.base).size + fs.statSync(f.chain.app).size - had.reduce((sum, r) => sum + r.length, 0));
  await run('cmp', [out, f.chain.app]);
  await run('cmp', [path.join(path.dirname(out), 'base.snap'), f.chain.base]);
});

test('registry options are refused for a local parent, --format raw for a reference', async () => {
  const a = await cowdisk(['clone', '--cache', fresh('cache'), f.chain.app, fresh('x.cow')], { env });
  expect([a.code, a.stderr]).toEqual([2, expect.stringMatching(/--cache is for a registry reference/)]);
  const b = await cowdisk(['clone', '--format', 'raw', f.ref, fresh('x.cow')], { env });
  expect([b.code, b.stderr]).toEqual([2, expect.stringMatching(/--format raw is for a parent file/)]);
});
