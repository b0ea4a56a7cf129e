/**
 * Layers across machines, in-process, against a real registry behind the counting proxy: push
 * and pull round trips, lazy clones that move only metadata and then exactly the pieces read,
 * a cache shared by clones, and damaged answers that are refused and never cached.
 */
import diagnostics from 'node:diagnostics_channel';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, test } from 'vitest';
import { cloneFromRegistry, cloneImage, exportRaw, openImage, pullImage, pushImage, snapshotOverlay } from '../../src/index.js';
import { cachedCopy, presentPath } from '../../src/image/layer-cache.js';
import { metadataOf } from '../../src/ops/push.js';
import { realFileSystem } from '../../src/io/real-file.js';
import { bufferBlobSource } from '../../src/registry/blob-source.js';
import { run } from '../helpers/nbd-tools.js';
import { testClient } from './clients.js';
import { blobGets } from './fault-proxy.js';
import { ACCESS, useRemoteFixture } from './remote-fixture.js';
import { APP_BLOCKS, blobDigest, MiB, rangeRequests, readAll, storedRanges } from './remote-images.js';
import { freePort } from './tools.js';

const f = useRemoteFixture();
const { fresh } = f;

/** Clones `ref` lazily into a fresh overlay, with a cache of its own unless one is given. */
async function lazyClone(cache = fresh('cache')): Promise<{ overlay: string; cache: string }> {
  const overlay = fresh('vm.cow');
  await cloneFromRegistry(f.ref, overlay, { ...ACCESS, cache });
  return { overlay, cache };
}

describe('push', () => {
  test('a second push of the same chain sends no blob, only the manifest', async () => {
    const again = await pushImage(f.chain.app, f.ref, ACCESS);
    expect(again.layers.map((l) => l.outcome)).toEqual(['present', 'present']);
    expect(again.sent).toBe(0);
    expect(f.proxy.log.filter((r) => r.method === 'PATCH' || (r.method === 'PUT' && r.path.includes('/blobs/'))).length).toBe(0);
    expect(again.layers.map((l) => l.blobDigest)).toEqual([blobDigest(f.chain.app), blobDigest(f.chain.base)]);
  });

  test('a blob another repository of the registry holds is mounted, not sent', async () => {
    // Local layers name no origin: to another repository they are uploaded.
    const pushed = await pushImage(f.chain.app, `${f.proxy.host}/disks/copy:v1`, ACCESS);
    expect(pushed.layers.map((l) => l.outcome)).toEqual(['uploaded', 'uploaded']);
    const { overlay } = await lazyClone();
    const sealed = fresh('on-clone.snap');
    await snapshotOverlay(overlay, sealed);
    f.proxy.reset();
    const mounted = await pushImage(sealed, `${f.proxy.host}/disks/derived:v1`, ACCESS);
    expect(mounted.layers.map((l) => l.outcome)).toEqual(['uploaded', 'mounted', 'mounted']);
    expect(f.proxy.log.filter((r) => r.method === 'POST' && r.path.includes('mount=')).length).toBeGreaterThanOrEqual(2);
    // The mounted blobs were never read: no range and no whole GET went out for them.
    expect(f.proxy.log.filter(blobGets).length).toBe(0);
  });

  test('refuses an overlay (naming `snapshot`), a raw image (naming `import`), and a chain on a raw base', async () => {
    const { overlay } = await lazyClone();
    await expect(pushImage(overlay, f.ref, ACCESS)).rejects.toMatchObject({ code: 'COWDISK_E_NOT_SEALED', message: /cowdisk snapshot/ });
    const raw = fresh('disk.raw');
    fs.writeFileSync(raw, Buffer.alloc(MiB, 7));
    await expect(pushImage(raw, f.ref, ACCESS)).rejects.toMatchObject({ code: 'COWDISK_E_INVALID_ARGUMENT', message: /cowdisk import/ });
    const onRaw = fresh('on-raw.cow');
    await cloneImage(raw, onRaw);
    const sealed = fresh('on-raw.snap');
    await snapshotOverlay(onRaw, sealed);
    await expect(pushImage(sealed, f.ref, ACCESS)).rejects.toMatchObject({ code: 'COWDISK_E_INVALID_ARGUMENT', message: /raw base .*cowdisk import/s });
    expect(f.proxy.log.filter((r) => r.method !== 'GET' && r.method !== 'HEAD').length).toBe(0);
  });
});

describe('pull', () => {
  test('gives back the chain: the same files byte for byte, named so it opens, ordinary layers, the same disk', async () => {
    const out = path.join(fresh('pulled'), 'top.snap');
    const pulled = await pullImage(f.ref, out, { ...ACCESS, cache: fresh('cache') });
    const base = path.join(path.dirname(out), 'base.snap');
    expect(pulled.layers.map((l) => [l.path, l.how])).toEqual([
      [out, 'fetched'],
      [base, 'fetched'],
    ]);
    await run('cmp', [out, f.chain.app]);
    await run('cmp', [base, f.chain.base]);
    const image = await openImage(out, { readOnly: true });
    try {
      expect(image.layers.map((l) => l.remote)).toEqual([undefined, undefined]);
      expect(image.layers.map((l) => l.path)).toEqual([out, base]);
    } finally {
      await image.close();
    }
    const mine = fresh('mine.raw');
    const theirs = fresh('theirs.raw');
    const local = await openImage(f.chain.app, { readOnly: true });
    await exportRaw(local.device, mine).finally(() => local.close());
    const remote = await openImage(out, { readOnly: true });
    await exportRaw(remote.device, theirs).finally(() => remote.close());
    await run('cmp', [mine, theirs]);
  });

  test('a layer already in place is kept; a different file there is refused before anything is fetched', async () => {
    const dir = fresh('pulled');
    fs.mkdirSync(dir);
    fs.copyFileSync(f.chain.base, path.join(dir, 'base.snap'));
    const kept = await pullImage(f.ref, path.join(dir, 'top.snap'), { ...ACCESS, cache: fresh('cache') });
    expect(kept.layers.map((l) => l.how)).toEqual(['fetched', 'existing']);
    const other = fresh('pulled');
    fs.mkdirSync(other);
    fs.writeFileSync(path.join(other, 'base.snap'), 'not this layer');
    f.proxy.reset();
    await expect(pullImage(f.ref, path.join(other, 'top.snap'), { ...ACCESS, cache: fresh('cache') })).rejects.toMatchObject({ code: 'COWDISK_E_EXISTS' });
    // Only the metadata moved (the names of the layers are in their headers), no block.
    const metadata = [...(await metadataOf(realFileSystem, f.chain.base)).ranges, ...(await metadataOf(realFileSystem, f.chain.app)).ranges].map((r) => r.offset);
    expect(rangeRequests(f.proxy.log).every((r) => metadata.includes(r.first))).toBe(true);
  });
});

describe('lazy clone', () => {
  test('moves the manifest, the config and each layer header and directory, nothing else', async () => {
    await lazyClone();
    const expected = [...(await metadataOf(realFileSystem, f.chain.base)).ranges, ...(await metadataOf(realFileSystem, f.chain.app)).ranges];
    const asked = rangeRequests(f.proxy.log);
    expect(asked.map((r) => ({ offset: r.first, length: r.end - r.first })).sort((a, b) => a.offset - b.offset)).toEqual(expected.sort((a, b) => a.offset - b.offset));
    const metadata = expected.reduce((sum, r) => sum + r.length, 0);
    // The rest is the manifest and the config: JSON of well under a few KiB.
    expect(f.proxy.bytes).toBeGreaterThanOrEqual(metadata);
    expect(f.proxy.bytes).toBeLessThan(metadata + 4096);
  });

  test('N reads fetch the N blocks they touch and the table pages describing them, once', async () => {
    const { overlay } = await lazyClone();
    f.proxy.reset();
    const app = await storedRanges(f.chain.app);
    const base = await storedRanges(f.chain.base);
    const picks = [0, 2, 3, 5, 9, 14, 18, 22, 27, 33, 40, 47, 51, 60];
    const image = await openImage(overlay, { readOnly: true });
    try {
      for (const b of picks) {
        const got = Buffer.alloc(f.chain.blockSize);
        await image.device.read(got, b * f.chain.blockSize);
        expect(got.equals(f.chain.contents.subarray(b * f.chain.blockSize, (b + 1) * f.chain.blockSize)), `block ${b}`).toBe(true);
      }
      // Each stored block one request, each layer's table page one; zero blocks cost nothing.
      const fetchedBlocks = picks.filter((b) => app.blocks.has(b) || base.blocks.has(b));
      const stored = fetchedBlocks.reduce((sum, b) => sum + (app.blocks.get(b) ?? base.blocks.get(b))!.length, 0);
      const tables = [...app.tables, ...base.tables].reduce((sum, t) => sum + t.length, 0);
      expect(fetchedBlocks.length).toBeLessThan(picks.length);
      expect(rangeRequests(f.proxy.log).length).toBe(fetchedBlocks.length + 2);
      expect(f.proxy.bytes).toBe(stored + tables);
      // Read again: nothing moves.
      f.proxy.reset();
      for (const b of picks) await image.device.read(Buffer.alloc(f.chain.blockSize), b * f.chain.blockSize);
      expect(f.proxy.log.length).toBe(0);
      expect(APP_BLOCKS.some((b) => picks.includes(b))).toBe(true);
    } finally {
      await image.close();
    }
  });

  test('a second clone on the same cache moves no layer data, and finds what the first fetched', async () => {
    const first = await lazyClone();
    const a = await openImage(first.overlay, { readOnly: true });
    await a.device.read(Buffer.alloc(4 * f.chain.blockSize), 4 * f.chain.blockSize);
    await a.close();
    f.proxy.reset();
    const second = await lazyClone(first.cache);
    expect(rangeRequests(f.proxy.log)).toEqual([]);
    const b = await openImage(second.overlay, { readOnly: true });
    try {
      const got = Buffer.alloc(4 * f.chain.blockSize);
      await b.device.read(got, 4 * f.chain.blockSize);
      expect(got.equals(f.chain.contents.subarray(4 * f.chain.blockSize, 8 * f.chain.blockSize))).toBe(true);
      expect(rangeRequests(f.proxy.log)).toEqual([]);
    } finally {
      await b.close();
    }
  });

  test('a block damaged on the way is refused, logged with layer and block, never cached; the next read fetches it again', async () => {
    const { overlay, cache } = await lazyClone();
    const image = await openImage(overlay, { readOnly: true });
    const refused: Array<{ layer: string; block: number }> = [];
    const listen = (message: unknown) => refused.push(message as { layer: string; block: number });
    diagnostics.subscribe('cowdisk:remote:refused', listen);
    try {
      await image.device.read(Buffer.alloc(1), 2 * f.chain.blockSize); // a zero block: the table pages only, undamaged
      f.proxy.faults = { corrupt: blobGets };
      const block = 9;
      const got = Buffer.alloc(f.chain.blockSize, 0xee);
      await expect(image.device.read(got, block * f.chain.blockSize)).rejects.toMatchObject({ code: 'COWDISK_E_CORRUPT', block, message: /block 9 of layer sha256:.* fails its check; it was not used and not cached/ });
      expect(got.equals(Buffer.alloc(f.chain.blockSize, 0xee))).toBe(true);
      const baseDigest = image.layers[1].identity;
      expect(refused).toEqual([expect.objectContaining({ layer: baseDigest, block })]);
      // No block of the base is marked (slot 0 is its table page).
      const present = fs.readFileSync(presentPath(cachedCopy(cache, baseDigest)));
      expect(present.subarray(1).every((m) => m === 0)).toBe(true);
      f.proxy.faults = {};
      await image.device.read(got, block * f.chain.blockSize);
      expect(got.equals(f.chain.contents.subarray(block * f.chain.blockSize, (block + 1) * f.chain.blockSize))).toBe(true);
    } finally {
      diagnostics.unsubscribe('cowdisk:remote:refused', listen);
      await image.close();
    }
  });

  test.each([
    ['ignores Range and sends the whole blob', { ignoreRange: true }, /ignores Range/],
    ['answers another range than asked', { shiftRange: true }, /Content-Range/],
  ])('a registry that %s is refused, nothing cached', async (_, faults, why) => {
    const { overlay } = await lazyClone();
    const image = await openImage(overlay, { readOnly: true });
    try {
      f.proxy.faults = faults;
      await expect(image.device.read(Buffer.alloc(f.chain.blockSize), 0)).rejects.toMatchObject({ code: 'COWDISK_E_REGISTRY', message: why });
      f.proxy.faults = {};
      const got = Buffer.alloc(f.chain.blockSize);
      await image.device.read(got, 0);
      expect(got.equals(f.chain.contents.subarray(0, f.chain.blockSize))).toBe(true);
    } finally {
      await image.close();
    }
  });

  test('pulled whole, the cached layers are ordinary: no fetch, no present map, read-only copies', async () => {
    const { overlay, cache } = await lazyClone();
    await pullImage(f.ref, path.join(fresh('pulled'), 'top.snap'), { ...ACCESS, cache });
    f.proxy.reset();
    const image = await openImage(overlay, { readOnly: true });
    try {
      expect(image.layers.map((l) => l.remote?.whole)).toEqual([true, true]);
      expect((await readAll(image.device)).equals(f.chain.contents)).toBe(true);
      expect(f.proxy.log).toEqual([]);
      for (const layer of image.layers) {
        expect(fs.existsSync(presentPath(layer.path))).toBe(false);
        expect(fs.statSync(layer.path).mode & 0o777).toBe(0o444);
      }
    } finally {
      await image.close();
    }
  });
});

describe('errors a person can act on', () => {
  test('an unreachable registry is named', async () => {
    const port = await freePort();
    await expect(cloneFromRegistry(`127.0.0.1:${port}/disks/app:v1`, fresh('vm.cow'), { ...ACCESS, cache: fresh('cache') })).rejects.toMatchObject({
      code: 'COWDISK_E_REGISTRY',
      message: new RegExp(`registry 127\\.0\\.0\\.1:${port} is unreachable`),
    });
  });

  test('a missing tag is NOT_FOUND, and no overlay is made', async () => {
    const overlay = fresh('vm.cow');
    await expect(cloneFromRegistry(`${f.proxy.host}/disks/app:nope`, overlay, { ...ACCESS, cache: fresh('cache') })).rejects.toMatchObject({ code: 'COWDISK_E_NOT_FOUND' });
    expect(fs.existsSync(overlay)).toBe(false);
  });

  test('a manifest that is not a cowdisk chain is NOT_COWDISK', async () => {
    const client = testClient(f.registry.host);
    try {
      const config = bufferBlobSource(Buffer.from('{"architecture":"amd64","os":"linux"}'));
      await client.pushBlob('images/other', config);
      const manifest = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config.digest, size: config.size }, layers: [] };
      await client.putManifest('images/other', 'latest', Buffer.from(JSON.stringify(manifest)), 'application/vnd.oci.image.manifest.v1+json');
    } finally {
      await client.close();
    }
    await expect(cloneFromRegistry(`${f.proxy.host}/images/other`, fresh('vm.cow'), { ...ACCESS, cache: fresh('cache') })).rejects.toMatchObject({ code: 'COWDISK_E_NOT_COWDISK', message: /container image/ });
  });
});
