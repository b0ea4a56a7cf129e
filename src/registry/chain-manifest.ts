/**
 * A cowdisk chain as an OCI artifact: one image manifest (image-spec `manifest.md`, with the
 * `artifactType` of image-spec 1.1) whose layers are the chain's sealed layer files, bottom-up,
 * each one blob, and whose config blob says what a puller needs to rebuild the chain. The
 * grammar, field by field, is docs/REGISTRY.md; this file is its only reader and writer.
 *
 * The manifest alone lets a registry (and any OCI tool: oras, crane, skopeo) copy, mount and
 * garbage-collect the layers; the annotations let a puller see each layer's cowdisk identity and
 * format version without fetching the config. The config repeats them, with the file names, the
 * virtual size and block size, so a clone needs the manifest and one small blob to know the
 * whole chain. Encoding is deterministic (fixed key order, no timestamps): the same chain always
 * has the same manifest digest, so pushing it twice changes nothing.
 *
 * Decoding trusts nothing: a manifest of another kind (a container image, an index, another
 * artifact) is a NOT_COWDISK error saying what it is; a cowdisk manifest with a bad field, or
 * whose config disagrees with it, is CORRUPT; a file name that would leave the pull's directory
 * is refused. This module knows nothing of the engine: the layer files themselves are checked
 * when they are opened.
 */
import { CowdiskError, ErrorCode } from '../errors.js';
import { isDigest, sha256Digest } from './digest.js';
import { OCI_MANIFEST } from './manifests.js';

export const CHAIN_ARTIFACT_TYPE = 'application/vnd.cowdisk.chain.v1+json';
export const CHAIN_CONFIG_TYPE = 'application/vnd.cowdisk.config.v1+json';
export const LAYER_MEDIA_TYPE = 'application/vnd.cowdisk.layer.v1';
export const ANNOTATION_LAYER_DIGEST = 'org.cowdisk.layer.digest';
export const ANNOTATION_LAYER_VERSION = 'org.cowdisk.layer.version';
/** SHA-256 of the layer file's metadata (header and directory), which a lazy clone fetches by range. */
export const ANNOTATION_METADATA_DIGEST = 'org.cowdisk.layer.metadata';
/** Where that metadata lies in the file: `OFFSET+LENGTH` pairs, comma-separated, ascending. */
export const ANNOTATION_METADATA_RANGES = 'org.cowdisk.layer.metadata.ranges';
/** The OCI annotation for a file name, as oras and others use it. */
export const ANNOTATION_TITLE = 'org.opencontainers.image.title';

export interface ChainLayer {
  /** The layer file as a blob: SHA-256 of its bytes, and its length. */
  blobDigest: string;
  blobSize: number;
  /** cowdisk's identity of the layer (over its block table; docs/FORMAT.md). */
  layerDigest: string;
  /** The layer file's format version. */
  version: number;
  /** The file name the layer had, which a pull gives it again so parent paths resolve. */
  name: string;
  /**
   * The byte ranges of the file a reader needs before anything else (its header and directory)
   * and the SHA-256 of their bytes, concatenated in order: what lets a lazy clone fetch them by
   * range and verify them, since the blob digest covers only the whole file. Absent in a chain
   * pushed without it, which can then only be pulled whole.
   */
  metadata?: LayerMetadata;
}

export interface LayerMetadata {
  ranges: Array<{ offset: number; length: number }>;
  digest: string;
}

/** A layer's metadata is its header and directory: a few ranges, at most a few MiB even for a TiB layer. */
const MAX_METADATA_RANGES = 16;
const MAX_METADATA_BYTES = 64 * 1024 * 1024;

export interface Chain {
  virtualSize: number;
  blockSize: number;
  /** Bottom first: layers[0] has no parent, the last is the top. */
  layers: ChainLayer[];
}

export interface EncodedChain {
  manifest: Buffer;
  manifestDigest: string;
  config: Buffer;
  configDigest: string;
}

/** A decoded manifest: the config to fetch and the layers it lists (their names come with the config). */
export interface ChainManifest {
  config: { digest: string; size: number };
  layers: Omit<ChainLayer, 'name'>[];
}

/** Configs are a few hundred bytes per layer; a puller refuses more than this. */
export const CONFIG_LIMIT = 1024 * 1024;

export function encodeChain(chain: Chain): EncodedChain {
  checkChain(chain, (why) => new CowdiskError(ErrorCode.INVALID_ARGUMENT, `cannot describe this chain for a registry: ${why}.`));
  const config = Buffer.from(
    JSON.stringify({
      virtualSize: chain.virtualSize,
      blockSize: chain.blockSize,
      layers: chain.layers.map((l) => ({ layerDigest: l.layerDigest, version: l.version, name: l.name })),
    }),
  );
  const configDigest = sha256Digest(config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: CHAIN_ARTIFACT_TYPE,
      config: { mediaType: CHAIN_CONFIG_TYPE, digest: configDigest, size: config.length },
      layers: chain.layers.map((l) => ({
        mediaType: LAYER_MEDIA_TYPE,
        digest: l.blobDigest,
        size: l.blobSize,
        annotations: {
          [ANNOTATION_LAYER_DIGEST]: l.layerDigest,
          [ANNOTATION_LAYER_VERSION]: String(l.version),
          ...(l.metadata && {
            [ANNOTATION_METADATA_DIGEST]: l.metadata.digest,
            [ANNOTATION_METADATA_RANGES]: l.metadata.ranges.map((r) => `${r.offset}+${r.length}`).join(','),
          }),
          [ANNOTATION_TITLE]: l.name,
        },
      })),
    }),
  );
  return { manifest, manifestDigest: sha256Digest(manifest), config, configDigest };
}

type Fail = (why: string) => CowdiskError;

function isSize(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}

function isVersion(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 1;
}

/** A plain file name: a pull writes it beside its siblings, so it may not name another directory. */
function isFileName(name: unknown): name is string {
  return typeof name === 'string' && name !== '' && name !== '.' && name !== '..' && Buffer.byteLength(name) <= 255 && !/[/\\\u0000-\u001f]/.test(name);
}

function checkChain(chain: Chain, fail: Fail): void {
  if (!isSize(chain.virtualSize) || chain.virtualSize === 0) throw fail(`virtual size ${chain.virtualSize} is not a positive integer`);
  const bs = chain.blockSize;
  if (!isSize(bs) || bs === 0 || (bs & (bs - 1)) !== 0) throw fail(`block size ${bs} is not a power of two`);
  if (!Array.isArray(chain.layers) || chain.layers.length === 0) throw fail('it has no layers');
  const names = new Set<string>();
  chain.layers.forEach((l, i) => {
    if (!isDigest(l.blobDigest) || !isSize(l.blobSize)) throw fail(`layer ${i} has no valid blob digest and size`);
    if (!isDigest(l.layerDigest)) throw fail(`layer ${i}'s layer digest '${l.layerDigest}' is not sha256:<64 hex>`);
    if (!isVersion(l.version)) throw fail(`layer ${i}'s format version '${l.version}' is not a positive integer`);
    if (!isFileName(l.name)) throw fail(`layer ${i}'s file name ${JSON.stringify(l.name)} is not a plain file name`);
    if (names.has(l.name)) throw fail(`two layers are both named ${l.name}`);
    names.add(l.name);
    if (l.metadata) {
      const problem = metadataProblem(l.metadata, l.blobSize);
      if (problem) throw fail(`layer ${i}'s metadata ${problem}`);
    }
  });
}

/** What is wrong with a layer's metadata description, if anything. */
function metadataProblem(m: LayerMetadata, blobSize: number): string | undefined {
  if (!isDigest(m.digest)) return `digest '${m.digest}' is not sha256:<64 hex>`;
  if (!Array.isArray(m.ranges) || m.ranges.length === 0 || m.ranges.length > MAX_METADATA_RANGES) return `has ${m.ranges?.length ?? 'no'} ranges, not 1 to ${MAX_METADATA_RANGES}`;
  let end = 0;
  let total = 0;
  for (const r of m.ranges) {
    if (!isSize(r.offset) || !isSize(r.length) || r.length === 0) return `range ${r.offset}+${r.length} is not an offset and a positive length`;
    if (r.offset < end) return `ranges are not ascending and apart (${r.offset} after ${end})`;
    end = r.offset + r.length;
    total += r.length;
    if (end > blobSize) return `range ${r.offset}+${r.length} reaches past the blob's ${blobSize} bytes`;
  }
  if (total > MAX_METADATA_BYTES) return `covers ${total} bytes, more than ${MAX_METADATA_BYTES}`;
  return undefined;
}

/** `OFFSET+LENGTH,...` as the ranges annotation writes them, or undefined when it is not that. */
function parseRanges(text: string): LayerMetadata['ranges'] | undefined {
  if (!/^[0-9]+\+[0-9]+(,[0-9]+\+[0-9]+)*$/.test(text)) return undefined;
  return text.split(',').map((pair) => {
    const [offset, length] = pair.split('+').map(Number);
    return { offset, length };
  });
}

function parseJson(bytes: Buffer, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    value = undefined;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new CowdiskError(ErrorCode.NOT_COWDISK, `${what} is not a JSON object, so not a cowdisk chain manifest.`);
  }
  return value as Record<string, unknown>;
}

/** Names the kind of manifest that is not cowdisk's, for the refusal. */
function describeOther(m: Record<string, unknown>, mediaType: string | undefined): string {
  const type = (typeof m.mediaType === 'string' ? m.mediaType : mediaType) ?? '';
  if (/index|manifest\.list/.test(type) || Array.isArray(m.manifests)) return `an image index (${type || 'manifests list'})`;
  if (m.schemaVersion === 1) return 'a Docker schema 1 manifest';
  const config = (m.config as { mediaType?: unknown } | undefined)?.mediaType;
  const artifact = typeof m.artifactType === 'string' ? m.artifactType : config;
  if (artifact === 'application/vnd.oci.image.config.v1+json' || artifact === 'application/vnd.docker.container.image.v1+json') return 'a container image';
  return `an artifact of type ${String(artifact ?? type ?? 'unknown')}`;
}

/**
 * The chain a manifest describes, or NOT_COWDISK when it describes something else. `mediaType`
 * is the Content-Type it was served with; `what` names it in messages (`HOST/REPO:TAG`).
 */
export function decodeChainManifest(bytes: Buffer, what: string, mediaType?: string): ChainManifest {
  const m = parseJson(bytes, what);
  const config = m.config as { mediaType?: unknown; digest?: unknown; size?: unknown } | undefined;
  const ours = m.artifactType === CHAIN_ARTIFACT_TYPE || config?.mediaType === CHAIN_CONFIG_TYPE;
  const ociManifest = m.schemaVersion === 2 && (m.mediaType ?? mediaType ?? OCI_MANIFEST) === OCI_MANIFEST;
  if (!ours || !ociManifest) {
    throw new CowdiskError(
      ErrorCode.NOT_COWDISK,
      `${what} is ${describeOther(m, mediaType)}, not a cowdisk chain (artifactType ${CHAIN_ARTIFACT_TYPE}); check the reference, it must name what cowdisk push stored.`,
    );
  }
  const corrupt: Fail = (why) => new CowdiskError(ErrorCode.CORRUPT, `${what} is a damaged cowdisk chain manifest: ${why}.`);
  if (config?.mediaType !== CHAIN_CONFIG_TYPE || typeof config.digest !== 'string' || !isDigest(config.digest) || !isSize(config.size)) {
    throw corrupt(`its config is not a ${CHAIN_CONFIG_TYPE} descriptor with a sha256 digest and a size`);
  }
  if (config.size > CONFIG_LIMIT) throw corrupt(`its config claims ${config.size} bytes, more than ${CONFIG_LIMIT}`);
  if (!Array.isArray(m.layers) || m.layers.length === 0) throw corrupt('it lists no layers');
  const layers = m.layers.map((entry: unknown, i: number) => {
    const d = entry as { mediaType?: unknown; digest?: unknown; size?: unknown; annotations?: Record<string, unknown> };
    if (d?.mediaType !== LAYER_MEDIA_TYPE) throw corrupt(`layer ${i} has media type ${String(d?.mediaType)}, not ${LAYER_MEDIA_TYPE}`);
    if (typeof d.digest !== 'string' || !isDigest(d.digest) || !isSize(d.size)) throw corrupt(`layer ${i} has no valid digest and size`);
    const layerDigest = d.annotations?.[ANNOTATION_LAYER_DIGEST];
    const version = Number(d.annotations?.[ANNOTATION_LAYER_VERSION]);
    if (typeof layerDigest !== 'string' || !isDigest(layerDigest)) throw corrupt(`layer ${i} lacks a valid ${ANNOTATION_LAYER_DIGEST}`);
    if (!/^[0-9]+$/.test(String(d.annotations?.[ANNOTATION_LAYER_VERSION])) || !isVersion(version)) {
      throw corrupt(`layer ${i} lacks a valid ${ANNOTATION_LAYER_VERSION}`);
    }
    const layer: Omit<ChainLayer, 'name'> = { blobDigest: d.digest, blobSize: d.size, layerDigest, version };
    const metaDigest = d.annotations?.[ANNOTATION_METADATA_DIGEST];
    const metaRanges = d.annotations?.[ANNOTATION_METADATA_RANGES];
    if (metaDigest !== undefined || metaRanges !== undefined) {
      const ranges = typeof metaRanges === 'string' ? parseRanges(metaRanges) : undefined;
      if (typeof metaDigest !== 'string' || ranges === undefined) {
        throw corrupt(`layer ${i} needs both ${ANNOTATION_METADATA_DIGEST} (sha256:...) and ${ANNOTATION_METADATA_RANGES} (OFFSET+LENGTH,...), or neither`);
      }
      const problem = metadataProblem({ digest: metaDigest, ranges }, d.size);
      if (problem) throw corrupt(`layer ${i}'s metadata ${problem}`);
      layer.metadata = { digest: metaDigest, ranges };
    }
    return layer;
  });
  return { config: { digest: config.digest, size: config.size }, layers };
}

/**
 * The whole chain, from the config blob a manifest names (already verified against its digest by
 * whoever fetched it): the config must agree with the manifest layer by layer.
 */
export function decodeChainConfig(bytes: Buffer, manifest: ChainManifest, what: string): Chain {
  const corrupt: Fail = (why) => new CowdiskError(ErrorCode.CORRUPT, `${what}: the chain's config blob disagrees with its manifest or is damaged: ${why}.`);
  if (sha256Digest(bytes) !== manifest.config.digest) throw corrupt(`it does not hash to ${manifest.config.digest}`);
  let c: Record<string, unknown>;
  try {
    c = parseJson(bytes, what);
  } catch {
    throw corrupt('it is not a JSON object');
  }
  const entries = c.layers;
  if (!Array.isArray(entries) || entries.length !== manifest.layers.length) {
    throw corrupt(`it lists ${Array.isArray(entries) ? entries.length : 'no'} layers, the manifest ${manifest.layers.length}`);
  }
  const layers = manifest.layers.map((layer, i) => {
    const e = entries[i] as { layerDigest?: unknown; version?: unknown; name?: unknown };
    if (e?.layerDigest !== layer.layerDigest || e.version !== layer.version) {
      throw corrupt(`layer ${i} is ${String(e?.layerDigest)} v${String(e?.version)} there, ${layer.layerDigest} v${layer.version} in the manifest`);
    }
    return { ...layer, name: e.name as string };
  });
  const chain: Chain = { virtualSize: c.virtualSize as number, blockSize: c.blockSize as number, layers };
  checkChain(chain, corrupt);
  return chain;
}
