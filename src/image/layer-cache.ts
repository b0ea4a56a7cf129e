/**
 * The layer cache: where the layers of lazily cloned chains live on this machine, shared by every
 * clone and every process. docs/REGISTRY.md ("The layer cache") is the reference.
 *
 *   CACHE/layers/sha256-<layer digest>/layer              a sparse copy of the layer's blob, the
 *                                                         same length, filled as pieces arrive
 *   CACHE/layers/sha256-<layer digest>/layer.remote.json  the record: where the blob comes from,
 *                                                         its digest, the metadata's digest, counts
 *   CACHE/layers/sha256-<layer digest>/layer.present      one byte per table page, then one per
 *                                                         block: 1 once the piece is in the copy,
 *                                                         verified and durable (present-map.ts)
 *
 * An entry is keyed by the layer digest, the identity a child records of its parent, so a layer's
 * parent is always the sibling entry named by the parent digest in its header, and an overlay
 * names a cached layer as it names any snapshot: a relative path to the copy and its digest.
 * The record is written once, before the entry appears under its name (the whole directory is
 * renamed into place), and never changed. When every piece is present the present map is
 * removed and the copy made read-only: from then on the entry is an ordinary sealed layer that
 * only reads from its copy (its parent still resolved through the cache).
 */
import * as os from 'node:os';
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';
import type { FileRange } from '../format/sealed-file.js';
import type { BlockFile, FileSystem } from '../io/file.js';
import type { BlobRef } from './range-source.js';

export const COPY_NAME = 'layer';
export const RECORD_SUFFIX = '.remote.json';
export const PRESENT_SUFFIX = '.present';
export const RECORD_VERSION = 1;
/** A record is a few hundred bytes; anything much larger is not one. */
const RECORD_LIMIT = 64 * 1024;

export interface CacheRecord {
  /** Of this record's grammar. */
  version: number;
  /** Where the blob is fetched from, for people: `HOST/REPO`. */
  source: string;
  /** Where the blob is fetched from, for the range-source factory (the engine does not look inside). */
  origin: Record<string, unknown>;
  blob: BlobRef;
  /** The layer's identity, sha256:... */
  layerDigest: string;
  /** The layer file's format version. */
  formatVersion: number;
  /** The header and directory: fetched whole at clone, verified against this digest. */
  metadata: { digest: string; ranges: FileRange[] };
  /** The parent as the layer's header names it (the path it had when pushed), or null. */
  parent: { path: string; digest: string } | null;
  /** Present-map slots: table pages (the first `tablePages` bytes), then blocks. */
  tablePages: number;
  blocks: number;
}

/** `$XDG_CACHE_HOME/cowdisk`, else `~/.cache/cowdisk`. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CACHE_HOME && path.isAbsolute(env.XDG_CACHE_HOME) ? env.XDG_CACHE_HOME : path.join(env.HOME ?? os.homedir(), '.cache');
  return path.join(base, 'cowdisk');
}

/** The directory name of a layer's entry: `sha256-<hex>`. */
export function entryName(layerDigest: string | Buffer): string {
  const hex = typeof layerDigest === 'string' ? layerDigest.replace(/^sha256:/, '') : layerDigest.toString('hex');
  return `sha256-${hex}`;
}

/** The copy of layer `layerDigest` in the cache at `cacheDir`. */
export function cachedCopy(cacheDir: string, layerDigest: string): string {
  return path.join(path.resolve(cacheDir), 'layers', entryName(layerDigest), COPY_NAME);
}

export const recordPath = (copy: string): string => `${copy}${RECORD_SUFFIX}`;
export const presentPath = (copy: string): string => `${copy}${PRESENT_SUFFIX}`;

/** Reads all of a small file. */
export async function readSmallFile(fs: FileSystem, file: string, limit: number): Promise<Buffer> {
  const handle = await fs.open(file, { readOnly: true });
  try {
    const size = await handle.size();
    if (size > limit) throw new CowdiskError(ErrorCode.CORRUPT, `${file} is ${size} bytes, more than the ${limit} such a file can be.`, { path: file });
    const bytes = Buffer.alloc(size);
    await handle.read(bytes, 0);
    return bytes;
  } finally {
    await handle.close();
  }
}

/** The record beside `copy`, or null when there is none (the file is an ordinary layer). */
export async function readRecord(fs: FileSystem, copy: string): Promise<CacheRecord | null> {
  const file = recordPath(copy);
  if (!(await fs.exists(file))) return null;
  return decodeRecord(await readSmallFile(fs, file, RECORD_LIMIT), file);
}

export function encodeRecord(record: CacheRecord): Buffer {
  return Buffer.from(`${JSON.stringify(record, null, 2)}\n`);
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;
const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;

/** A record as written by `encodeRecord`, every field checked; CORRUPT otherwise. */
export function decodeRecord(bytes: Buffer, file: string): CacheRecord {
  const bad = (why: string) =>
    new CowdiskError(ErrorCode.CORRUPT, `${file}: the layer cache's record is damaged (${why}). Remove its directory and clone again; the layer is fetched anew.`, { path: file });
  let r: CacheRecord;
  try {
    r = JSON.parse(bytes.toString('utf8')) as CacheRecord;
  } catch {
    throw bad('not JSON');
  }
  if (r === null || typeof r !== 'object') throw bad('not an object');
  if (r.version !== RECORD_VERSION) throw bad(`version ${String(r.version)}, this cowdisk reads ${RECORD_VERSION}`);
  if (typeof r.source !== 'string' || r.origin === null || typeof r.origin !== 'object') throw bad('no source');
  if (!r.blob || !DIGEST.test(r.blob.digest) || !isCount(r.blob.size)) throw bad('no blob digest and size');
  if (!DIGEST.test(r.layerDigest) || !isCount(r.formatVersion)) throw bad('no layer digest and format version');
  if (!r.metadata || !DIGEST.test(r.metadata.digest) || !Array.isArray(r.metadata.ranges)) throw bad('no metadata');
  for (const m of r.metadata.ranges) if (!isCount(m?.offset) || !isCount(m?.length) || m.offset + m.length > r.blob.size) throw bad('a metadata range outside the blob');
  if (r.parent !== null && (typeof r.parent?.path !== 'string' || !DIGEST.test(r.parent.digest))) throw bad('a parent without path and digest');
  if (!isCount(r.tablePages) || !isCount(r.blocks)) throw bad('no piece counts');
  return r;
}

/** Writes a whole small file, durably. */
export async function writeSmallFile(fs: FileSystem, file: string, bytes: Buffer): Promise<void> {
  const handle: BlockFile = await fs.create(file);
  try {
    await handle.write(bytes, 0);
    await handle.sync();
  } finally {
    await handle.close();
  }
}
