/**
 * `pull REF OUT`: a chain from a registry as local sealed layers. OUT is the top layer; each
 * layer below goes where its child's header says its parent is (the path it had, relative to the
 * child, when it was pushed), so the chain opens as it did on the machine that pushed it. Every
 * destination must lie inside OUT's directory (a chain from a registry never writes elsewhere),
 * and a file already there is kept if it is the same layer, refused otherwise, before anything
 * is fetched.
 *
 * The bytes go through the layer cache: each layer's cached copy is filled whole (every table
 * page and block checked against its digest as it arrives), then the whole copy is checked
 * against the blob's digest, then it is linked (or, across file systems, copied) to its place.
 * So a pull
 * - is resumable: an interrupted pull leaves a partly filled copy whose present map says what
 *   is there, verified; the next pull fetches only the rest;
 * - fetches nothing for a layer the cache has whole (from an earlier pull, a filled clone, or
 *   `serve --prefetch`), and what a lazy clone already fetched is not fetched again;
 * - leaves ordinary local layers: nothing beside them says "remote".
 */
import { constants } from 'node:fs';
import { copyFile, link, mkdir } from 'node:fs/promises';
import * as path from 'node:path';
import { CowdiskError, ErrorCode, ioError } from '../errors.js';
import type { FileSystem } from '../io/file.js';
import { fileSystemOf } from '../io/real-file.js';
import { detectKind, openImage } from '../image/open.js';
import { openSealedLayer } from '../image/open-layer.js';
import { type ChainCacheOptions, type CachedChain, cacheChain } from './registry-chain.js';
import { blobRanges } from './remote-source.js';

export interface PullOptions extends ChainCacheOptions {
  /** (bytes done, bytes in all) over the layers to be placed. */
  onProgress?: (done: number, total: number) => void;
}

export interface PulledLayer {
  /** Where the layer now is (absolute). */
  path: string;
  digest: string;
  /** Fetched (wholly or in part) now; taken whole from the cache; or already there. */
  how: 'fetched' | 'cached' | 'existing';
}

export interface PullResult {
  out: string;
  reference: string;
  manifestDigest: string;
  /** Top first, as `info --chain` lists them. */
  layers: PulledLayer[];
  /** Bytes fetched, metadata included. */
  fetched: number;
}

const SEALED_MODE = 0o444;

export async function pullImage(refText: string, outFile: string, options: PullOptions = {}): Promise<PullResult> {
  const fs = fileSystemOf(options);
  const out = path.resolve(outFile);
  if (await fs.exists(out)) throw new CowdiskError(ErrorCode.EXISTS, `${out} already exists; choose another name or remove it first.`, { path: out });
  const cached = await cacheChain(refText, options);
  try {
    const dests = destinations(cached, out);
    const present = await Promise.all(cached.layers.map((l, i) => (i === dests.length - 1 ? false : sameLayerAt(fs, dests[i], l.record.layerDigest))));
    let fetched = cached.fetched;
    const how: PulledLayer['how'][] = [];
    const total = cached.layers.reduce((sum, l, i) => sum + (present[i] ? 0 : l.record.blob.size), 0);
    let before = 0;
    for (const [i, entry] of cached.layers.entries()) {
      if (present[i]) {
        how.push('existing');
        continue;
      }
      const size = entry.record.blob.size;
      const layer = await openSealedLayer(fs, entry.copy, 'snapshot');
      try {
        const remote = layer.remote!;
        remote.useSource(blobRanges(cached.client, cached.ref.repository, remote.blob));
        const result = await remote.fill({ onProgress: (done, all) => options.onProgress?.(before + Math.max(0, size - (all - done)), total) });
        if (result.failed.length > 0) throw result.failed[0];
        await remote.completeBlob();
        fetched += remote.stats().bytes;
        how.push(remote.stats().bytes > 0 ? 'fetched' : 'cached');
      } finally {
        await layer.close();
      }
      before += size;
      options.onProgress?.(before, total);
    }
    for (const [i, entry] of cached.layers.entries()) if (!present[i]) await place(fs, entry.copy, dests[i]);
    const image = await openImage(out, { fs, readOnly: true });
    await image.close();
    const layers = cached.layers.map((l, i) => ({ path: dests[i], digest: l.record.layerDigest, how: how[i] })).reverse();
    return { out, reference: cached.what, manifestDigest: cached.manifestDigest, layers, fetched };
  } finally {
    await cached.client.close();
  }
}

/** Where each layer goes, bottom first: the top at `out`, each parent where its child names it. */
function destinations(cached: CachedChain, out: string): string[] {
  const n = cached.layers.length;
  const dests = new Array<string>(n);
  dests[n - 1] = out;
  const home = path.dirname(out);
  for (let i = n - 1; i > 0; i--) {
    const recorded = cached.layers[i].record.parent!.path;
    const dest = path.resolve(path.dirname(dests[i]), recorded);
    const rel = path.relative(home, dest);
    if (path.isAbsolute(recorded) || rel === '' || rel.startsWith('..') || dests.includes(dest)) {
      throw new CowdiskError(
        ErrorCode.UNSUPPORTED,
        `${cached.what}: layer ${cached.layers[i].record.layerDigest} names its parent "${recorded}", which would place it outside ${home} (or over another layer of the chain); pull writes a chain only inside OUT's directory. \`cowdisk clone REF OVERLAY\` needs no file names and works on this chain.`,
      );
    }
    dests[i - 1] = dest;
  }
  return dests;
}

/** Whether `dest` holds layer `digest` already (kept), false when nothing is there; EXISTS for anything else. */
async function sameLayerAt(fs: FileSystem, dest: string, digest: string): Promise<boolean> {
  if (!(await fs.exists(dest))) return false;
  const other = (await detectKind(dest, fs)) === 'snapshot' ? await openSealedLayer(fs, dest, 'snapshot') : null;
  const identity = other?.identity;
  await other?.close();
  if (identity === digest) return true;
  throw new CowdiskError(ErrorCode.EXISTS, `${dest} exists and is not layer ${digest} (${identity ?? 'not a snapshot layer'}), which the chain needs there; move it away first.`, { path: dest });
}

/** Gives `dest` the cached copy's bytes: a hard link (both are read-only), or a copy across file systems. */
async function place(fs: FileSystem, copy: string, dest: string): Promise<void> {
  const dir = path.dirname(dest);
  await mkdir(dir, { recursive: true });
  await fs.chmod(copy, SEALED_MODE);
  try {
    await link(copy, dest);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new CowdiskError(ErrorCode.EXISTS, `${dest} appeared while the chain was pulled; nothing was written over it.`, { path: dest });
    if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'EMLINK') throw ioError(err, dest, `linking ${copy}`);
    const tmp = `${dest}.partial-${process.pid}`;
    try {
      await copyFile(copy, tmp, constants.COPYFILE_FICLONE);
    } catch (copyErr) {
      throw ioError(copyErr, tmp, `copying ${copy}`);
    }
    await fs.chmod(tmp, SEALED_MODE);
    await fs.publish(tmp, dest).catch(async (publishErr: unknown) => {
      await fs.unlink(tmp).catch(() => undefined);
      throw publishErr;
    });
  }
  await fs.syncDir(dir);
}
