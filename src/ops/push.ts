/**
 * `push IMAGE REF`: a sealed layer and every sealed layer below it into a registry, as one OCI
 * artifact (docs/REGISTRY.md): each layer file one blob, bottom first, tied by a manifest under
 * REF's tag. A blob the repository has is not sent (HEAD); one a lazily cloned layer came from,
 * in another repository of the same registry, is mounted from there. A lazily cloned layer that
 * must really be sent is filled whole from its own registry first.
 *
 * Refused, before anything is sent: a writable overlay (its contents may still change: seal it
 * with `snapshot`), a raw image or a chain standing on a raw base (a registry stores sealed
 * layers: `import` it first).
 *
 * Each layer's descriptor carries, besides its digests, where its header and directory lie and
 * their SHA-256, so a lazy clone can fetch and verify them by range: the header is the first
 * HEADER_SIZE bytes (or the whole file, if shorter) and the directory where the reader says.
 */
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { CowdiskError, ErrorCode } from '../errors.js';
import { HEADER_SIZE } from '../format/constants.js';
import type { FileRange } from '../format/sealed-file.js';
import type { FileSystem } from '../io/file.js';
import { fileSystemOf } from '../io/real-file.js';
import type { SealedLayer } from '../image/layer.js';
import { detectKind, openImage } from '../image/open.js';
import { openSealedFile } from '../image/open-layer.js';
import { type BlobSource, type ChainLayer, fileBlobSource, formatReference, type LayerMetadata, parseReference, type PushOutcome, RegistryClient } from '../registry/index.js';
import type { RegistryAccess } from './remote-source.js';

export interface PushOptions extends RegistryAccess {
  fs?: FileSystem;
  /** (bytes settled, bytes in all): a blob found or mounted counts whole at once. */
  onProgress?: (done: number, total: number) => void;
}

export interface PushedLayer {
  path: string;
  digest: string;
  blobDigest: string;
  size: number;
  outcome: PushOutcome;
}

export interface PushResult {
  reference: string;
  manifestDigest: string;
  /** Top first. */
  layers: PushedLayer[];
  /** Bytes of layer blobs sent. */
  sent: number;
}

export async function pushImage(imageFile: string, refText: string, options: PushOptions = {}): Promise<PushResult> {
  const fs = fileSystemOf(options);
  const abs = path.resolve(imageFile);
  const ref = parseReference(refText);
  if (ref.digest !== undefined) {
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `push stores a chain under a tag; '${refText}' names a digest. Give HOST/REPO:TAG.`);
  }
  const tag = ref.tag!;
  const kind = await detectKind(abs, fs);
  if (kind === 'overlay') {
    throw new CowdiskError(
      ErrorCode.NOT_SEALED,
      `${abs} is a writable overlay, whose contents may still change; a registry holds sealed layers. Seal it first with \`cowdisk snapshot ${imageFile}\` and push the snapshot it prints.`,
      { path: abs },
    );
  }
  if (kind === 'raw') {
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `${abs} is a raw image; a registry holds sealed layers. Import it first: \`cowdisk import ${imageFile} ${stem(abs)}.snap\`, then push that.`, { path: abs });
  }
  const image = await openImage(abs, { fs, readOnly: true });
  const client = RegistryClient.forReference(ref, options);
  try {
    const layers = [...image.layers].reverse();
    const bottom = layers[0];
    if (bottom.kind === 'raw') {
      throw new CowdiskError(
        ErrorCode.INVALID_ARGUMENT,
        `${abs} stands on the raw base ${bottom.path}, which a registry cannot hold as a layer. Import the base (\`cowdisk import ${bottom.path} ${stem(bottom.path)}.snap\`) and build the chain on it, or push a self-contained copy: \`cowdisk flatten ${imageFile} flat.snap\`.`,
        { path: bottom.path },
      );
    }
    const described = await Promise.all(layers.map((l) => describe(fs, l, ref.registry)));
    const names = uniqueNames(layers.map((l) => path.basename(l.path)));
    const chainLayers: ChainLayer[] = described.map((d, i) => ({ ...d.layer, name: names[i] }));
    const total = chainLayers.reduce((sum, l) => sum + l.blobSize, 0);
    let done = 0;
    let sent = 0;
    const sources = described.map((d) =>
      counting(d.source, (n) => {
        done += n;
        sent += n;
        options.onProgress?.(done, total);
      }),
    );
    const outcomes: PushOutcome[] = [];
    const mountFrom = [...new Set(described.flatMap((d) => d.mountFrom))];
    const manifestDigest = await client.pushChain(ref.repository, tag, { virtualSize: image.device.size, blockSize: image.device.blockSize, layers: chainLayers }, sources, {
      mountFrom,
      onBlob: (digest, outcome) => {
        const i = chainLayers.findIndex((l) => l.blobDigest === digest);
        if (i < 0) return;
        outcomes[i] = outcome;
        if (outcome !== 'uploaded') done += chainLayers[i].blobSize;
        options.onProgress?.(done, total);
      },
    });
    const pushed = layers.map((l, i) => ({ path: l.path, digest: l.identity, blobDigest: chainLayers[i].blobDigest, size: chainLayers[i].blobSize, outcome: outcomes[i] }));
    return { reference: formatReference(ref), manifestDigest, layers: pushed.reverse(), sent };
  } finally {
    await client.close();
    await image.close();
  }
}

interface Described {
  layer: Omit<ChainLayer, 'name'>;
  source: BlobSource;
  /** Repositories of the target registry that hold the blob (a cached layer's origin). */
  mountFrom: string[];
}

/** A layer's descriptor and blob: from the file, or from the cache's record for a lazily cloned one. */
async function describe(fs: FileSystem, layer: SealedLayer, registry: string): Promise<Described> {
  const version = layer.version!;
  const remote = layer.remote;
  if (remote) {
    const origin = remote.origin as { registry?: unknown; repository?: unknown };
    const mountFrom = origin.registry === registry && typeof origin.repository === 'string' ? [origin.repository] : [];
    const metadata: LayerMetadata = { digest: remote.metadata.digest, ranges: remote.metadata.ranges.map((r) => ({ ...r })) };
    return {
      layer: { blobDigest: remote.blob.digest, blobSize: remote.blob.size, layerDigest: layer.identity, version, metadata },
      // Read only if the blob must really be sent: the copy is filled and checked whole first.
      source: {
        digest: remote.blob.digest,
        size: remote.blob.size,
        stream: (start, end) =>
          Readable.from(
            (async function* () {
              const result = await remote.fill();
              if (result.failed.length > 0) throw result.failed[0];
              await remote.completeBlob();
              yield* (await fileBlobSource(layer.path, remote.blob)).stream(start, end);
            })(),
          ),
      },
      mountFrom,
    };
  }
  const source = await fileBlobSource(layer.path);
  return { layer: { blobDigest: source.digest, blobSize: source.size, layerDigest: layer.identity, version, metadata: await metadataOf(fs, layer.path) }, source, mountFrom: [] };
}

/** Where a layer file's header and directory lie, and the SHA-256 of their bytes in that order. */
export async function metadataOf(fs: FileSystem, file: string): Promise<LayerMetadata> {
  const sealed = await openSealedFile(fs, file);
  const handle = await fs.open(file, { readOnly: true });
  try {
    const size = await handle.size();
    const ranges = mergeRanges([{ offset: 0, length: Math.min(HEADER_SIZE, size) }, sealed.directoryRange()].filter((r) => r.length > 0));
    const hash = createHash('sha256');
    for (const r of ranges) {
      const bytes = Buffer.alloc(r.length);
      await handle.read(bytes, r.offset);
      hash.update(bytes);
    }
    return { digest: `sha256:${hash.digest('hex')}`, ranges };
  } finally {
    await handle.close();
    await sealed.close();
  }
}

/** Ranges sorted, with overlapping or touching ones joined. */
function mergeRanges(ranges: FileRange[]): FileRange[] {
  const out: FileRange[] = [];
  for (const r of [...ranges].sort((a, b) => a.offset - b.offset)) {
    const last = out[out.length - 1];
    if (last && r.offset <= last.offset + last.length) last.length = Math.max(last.length, r.offset + r.length - last.offset);
    else out.push({ ...r });
  }
  return out;
}

/** File names for the config, made unique (two layers of one name in different directories). */
function uniqueNames(names: string[]): string[] {
  const seen = new Set<string>();
  return names.map((name) => {
    let unique = name;
    for (let n = 2; seen.has(unique); n++) unique = `${n}-${name}`;
    seen.add(unique);
    return unique;
  });
}

/** A blob source that reports the bytes its streams hand out. */
function counting(source: BlobSource, onBytes: (n: number) => void): BlobSource {
  return {
    digest: source.digest,
    size: source.size,
    stream: (start, end) => {
      const through = new Transform({
        transform(chunk: Buffer, _encoding, done) {
          onBytes(chunk.length);
          done(null, chunk);
        },
      });
      return source.stream(start, end).on('error', (err) => through.destroy(err)).pipe(through);
    },
  };
}

function stem(file: string): string {
  return path.join(path.dirname(file), path.basename(file, path.extname(file)));
}
