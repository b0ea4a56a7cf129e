/**
 * Adding a layer to the layer cache (image/layer-cache.ts has the layout): what `clone` and
 * `pull` do for each layer of a chain the cache does not hold yet. Only the layer's metadata
 * moves, its header and directory, in the ranges its manifest names, checked against the
 * manifest's SHA-256 of them before anything is written; the copy is a sparse file of the
 * blob's length holding just those bytes, with an empty present map beside it.
 *
 * The entry is built in a temporary directory beside its place and renamed there whole, so an
 * entry is either absent or complete (copy, present map and record, all synced), whoever looks.
 * Two processes adding the same layer at once both build one; the first rename wins, and the
 * other process throws its copy away and uses the winner's.
 */
import { createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';
import type { FileSystem } from '../io/file.js';
import { type CacheRecord, COPY_NAME, RECORD_VERSION, cachedCopy, encodeRecord, entryName, presentPath, readRecord, recordPath, writeSmallFile } from '../image/layer-cache.js';
import { openSealedFile } from '../image/open-layer.js';
import type { BlobRef, RangeSource } from '../image/range-source.js';

/** A layer as its chain's manifest describes it. */
export interface LayerSpec {
  layerDigest: string;
  blob: BlobRef;
  formatVersion: number;
  metadata: CacheRecord['metadata'];
  /** For people: `HOST/REPO`. */
  source: string;
  origin: Record<string, unknown>;
}

export interface CachedLayer {
  /** The cached copy (absolute path). */
  copy: string;
  record: CacheRecord;
  /** Bytes fetched to add it (0 when the cache had it). */
  fetched: number;
}

/** The cache's copy of `spec`'s layer, adding it (fetching its metadata through `source`) if missing. */
export async function cacheLayer(fs: FileSystem, cacheDir: string, spec: LayerSpec, source: RangeSource): Promise<CachedLayer> {
  const copy = cachedCopy(cacheDir, spec.layerDigest);
  const existing = await readRecord(fs, copy);
  if (existing) return { copy, record: existing, fetched: 0 };
  const layers = path.dirname(path.dirname(copy));
  await mkdir(layers, { recursive: true });
  const tmp = await mkdtemp(path.join(layers, `.partial-${entryName(spec.layerDigest)}-`));
  try {
    // mkdtemp makes it private; the cache is for every process of the machine that may read it.
    await chmod(tmp, 0o755);
    const { record, fetched } = await buildEntry(fs, path.join(tmp, COPY_NAME), spec, source);
    try {
      await rename(tmp, path.dirname(copy));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
      // Another process added the layer meanwhile: theirs is as good as ours.
      await rm(tmp, { recursive: true, force: true });
      const theirs = await readRecord(fs, copy);
      if (theirs) return { copy, record: theirs, fetched };
      throw err;
    }
    await fs.syncDir(layers);
    return { copy, record, fetched };
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

/** Fetches the metadata into a new copy at `copy`, checks it, and writes the present map and record. */
export async function buildEntry(fs: FileSystem, copy: string, spec: LayerSpec, source: RangeSource): Promise<{ record: CacheRecord; fetched: number }> {
  const pieces: Buffer[] = [];
  for (const r of spec.metadata.ranges) pieces.push(await source.read(r.offset, r.length));
  const hash = createHash('sha256');
  for (const piece of pieces) hash.update(piece);
  const actual = `sha256:${hash.digest('hex')}`;
  if (actual !== spec.metadata.digest) {
    throw new CowdiskError(
      ErrorCode.CORRUPT,
      `the header and directory of layer ${spec.layerDigest}, fetched from ${source.name}, hash to ${actual}, not the ${spec.metadata.digest} its manifest gives; nothing was kept. The registry's copy or something on the way damages them; try again.`,
    );
  }
  const handle = await fs.create(copy);
  try {
    await handle.truncate(spec.blob.size);
    for (const [i, r] of spec.metadata.ranges.entries()) await handle.write(pieces[i], r.offset);
    await handle.sync();
  } finally {
    await handle.close();
  }
  const file = await openSealedFile(fs, copy);
  let record: CacheRecord;
  try {
    const found = `sha256:${file.header.layerDigest.toString('hex')}`;
    if (found !== spec.layerDigest || file.version !== spec.formatVersion) {
      throw new CowdiskError(
        ErrorCode.CORRUPT,
        `the blob ${spec.blob.digest} in ${source.name} holds layer ${found} of format version ${file.version}, but the manifest says ${spec.layerDigest} version ${spec.formatVersion}.`,
      );
    }
    const parent = file.header.parent;
    if (parent.kind === 'raw') {
      throw new CowdiskError(ErrorCode.UNSUPPORTED, `layer ${spec.layerDigest} in ${source.name} names a raw base as its parent, which a registry cannot hold; it cannot be cloned.`);
    }
    const tables = file.tableRanges(0, file.blocks);
    record = {
      version: RECORD_VERSION,
      source: source.name,
      origin: spec.origin,
      blob: spec.blob,
      layerDigest: spec.layerDigest,
      formatVersion: spec.formatVersion,
      metadata: spec.metadata,
      parent: parent.kind === 'none' ? null : { path: parent.path, digest: `sha256:${parent.digest.toString('hex')}` },
      tablePages: tables.reduce((most, t) => Math.max(most, t.index + 1), 0),
      blocks: file.blocks,
    };
  } finally {
    await file.close();
  }
  const present = await fs.create(presentPath(copy));
  try {
    await present.truncate(record.tablePages + record.blocks);
    await present.sync();
  } finally {
    await present.close();
  }
  // The record last: an entry with a record is an entry whose other files are whole.
  await writeSmallFile(fs, recordPath(copy), encodeRecord(record));
  await fs.syncDir(path.dirname(copy));
  return { record, fetched: pieces.reduce((sum, p) => sum + p.length, 0) };
}
