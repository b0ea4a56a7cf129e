/**
 * Opening one file as a layer: the only place that knows which classes stand behind the layer
 * interface (layer.ts). The kind of a file is read from its first bytes: an overlay, a snapshot
 * layer, or (no cowdisk magic) a raw image; an overlay whose first header slot is damaged is known
 * by its second. A snapshot layer's format version, in its header, picks its reader. A snapshot
 * with a layer-cache record beside it (layer-cache.ts) is a cached copy that is filled on demand:
 * a remote layer.
 */
import { CowdiskError, ErrorCode } from '../errors.js';
import { MAGIC_LENGTH, SNAPSHOT_MAGIC, SNAPSHOT_V2 } from '../format/constants.js';
import { VERSION_PROBE_LENGTH, sniffKind, snapshotVersion } from '../format/header.js';
import { type FileProbe, PROBE_LENGTH, probeBytes } from '../format/probe.js';
import { RawFile } from '../format/raw.js';
import { SnapshotFile } from '../format/snapshot-reader.js';
import { SnapshotV2File } from '../format/snapshot-v2-reader.js';
import type { FileSystem } from '../io/file.js';
import { realFileSystem } from '../io/real-file.js';
import type { SealedFile } from '../format/sealed-file.js';
import type { SealedLayer } from './layer.js';
import { readRecord } from './layer-cache.js';
import { RawLayer } from './raw-layer.js';
import { RemoteLayer } from './remote-layer.js';
import { SnapshotLayer } from './snapshot-layer.js';

export type ImageKind = 'overlay' | 'snapshot' | 'raw';

/** How a file's kind is decided: from its bytes (the default), or taken as raw whatever they hold. */
export type ImageFormat = 'auto' | 'raw';

/**
 * Reads a file's first bytes to tell what it is: its magic, which decides for every healthy
 * image; only a file without one is read further (its headers' places and first map page).
 */
async function probe(file: string, fs: FileSystem): Promise<FileProbe> {
  const handle = await fs.open(file, { readOnly: true });
  try {
    const magic = Buffer.alloc(MAGIC_LENGTH);
    const n = await handle.read(magic, 0);
    const kind = n === MAGIC_LENGTH ? sniffKind(magic) : undefined;
    if (kind || n < MAGIC_LENGTH) return { kind: kind ?? null, traces: null };
    const head = Buffer.alloc(PROBE_LENGTH);
    return probeBytes(head.subarray(0, await handle.read(head, 0)), handle.path);
  } finally {
    await handle.close();
  }
}

/**
 * Reads the first bytes of a file to tell an overlay, a snapshot layer or a raw image apart. A
 * file that carries cowdisk structures but no header that can be read is none of them: it is a
 * damaged image, CORRUPT, and never taken for a raw disk (serving it would hand out its metadata
 * as disk contents and write over it). `format: 'raw'` takes any file as raw, as qemu's
 * `-f raw` does, for the rare raw disk that really holds such bytes.
 */
export async function detectKind(file: string, fs: FileSystem = realFileSystem, format: ImageFormat = 'auto'): Promise<ImageKind> {
  if (format === 'raw') return 'raw';
  const found = await probe(file, fs);
  if (found.kind) return found.kind;
  if (found.traces) {
    throw new CowdiskError(
      ErrorCode.CORRUPT,
      `${file} is a damaged cowdisk image, not a raw disk: both header copies are unreadable, but it holds ${found.traces}. Restore it from a copy. If it really is a raw disk image that happens to hold such bytes, say so with \`--format raw\`.`,
      { path: file },
    );
  }
  return 'raw';
}

/**
 * The kind of the file a child names as its parent. The child's record says what it was made on,
 * and its identity is checked next, so cowdisk structures without a header are not suspicious
 * here: such a file is the raw base it was (or PARENT_CHANGED says it is not).
 */
export async function parentKind(file: string, fs: FileSystem): Promise<ImageKind> {
  return (await probe(file, fs)).kind ?? 'raw';
}

/** Opens a snapshot file or a raw file (of the kind given, as detectKind found it) as a sealed layer. */
export async function openSealedLayer(fs: FileSystem, file: string, kind: 'snapshot' | 'raw'): Promise<SealedLayer> {
  if (kind === 'raw') return new RawLayer(await RawFile.open(fs, file));
  const record = await readRecord(fs, file);
  const sealed = await openSealedFile(fs, file);
  if (!record) return new SnapshotLayer(sealed);
  try {
    return await RemoteLayer.open(fs, sealed, record);
  } catch (err) {
    await sealed.close();
    throw err;
  }
}

/** A snapshot file through the reader of its format version (BAD_VERSION for one this build does not read). */
export async function openSealedFile(fs: FileSystem, file: string): Promise<SealedFile> {
  const handle = await fs.open(file, { readOnly: true });
  let version: number | null;
  try {
    const head = Buffer.alloc(VERSION_PROBE_LENGTH);
    // A file too short to say, or without the magic, is the version 1 reader's to describe
    // (TRUNCATED when it has the magic, BAD_MAGIC when not).
    const whole = (await handle.read(head, 0)) === head.length;
    version = whole && head.subarray(0, MAGIC_LENGTH).equals(SNAPSHOT_MAGIC) ? snapshotVersion(head, handle.path) : null;
  } finally {
    await handle.close();
  }
  return version === SNAPSHOT_V2 ? SnapshotV2File.open(fs, file) : SnapshotFile.open(fs, file);
}
