/**
 * The registry client the verbs use: one `RegistryClient` per registry, holding its connection
 * pool, credentials and tokens, with the operations of the distribution spec cowdisk needs and
 * the two that speak in chains (`pushChain`, `fetchChain`). Everything is in the words of the
 * spec: repositories, blobs, manifests, tags, digests.
 */
import { CowdiskError, ErrorCode } from '../errors.js';
import { bufferBlobSource, type BlobSource } from './blob-source.js';
import { openBlob, readBlob, readBlobRange, statBlob, type BlobInfo } from './blobs.js';
import {
  CONFIG_LIMIT,
  decodeChainConfig,
  decodeChainManifest,
  encodeChain,
  type Chain,
  type ChainManifest,
} from './chain-manifest.js';
import { getManifest, OCI_MANIFEST, putManifest, resolveManifest, type FetchedManifest, type ManifestInfo } from './manifests.js';
import { formatReference, manifestReference, type Reference } from './reference.js';
import { Session, type SessionOptions } from './session.js';
import { pushBlob, type PushBlobOptions, type PushOutcome } from './upload.js';

export type ClientOptions = SessionOptions;

export interface PushChainOptions extends PushBlobOptions {
  /** Called as each blob is settled, for a progress display. */
  onBlob?: (digest: string, outcome: PushOutcome) => void;
}

export interface FetchedChain {
  chain: Chain;
  manifest: ChainManifest;
  manifestDigest: string;
}

export class RegistryClient {
  private readonly session: Session;

  constructor(
    /** `HOST[:PORT]`, as in a reference. */
    readonly registry: string,
    options: ClientOptions = {},
  ) {
    this.session = new Session(registry, options);
  }

  /** A client for the registry a reference names. */
  static forReference(ref: Reference, options: ClientOptions = {}): RegistryClient {
    return new RegistryClient(ref.registry, options);
  }

  /** Checks the registry answers the distribution API (`GET /v2/`), authenticating if it asks. */
  ping(): Promise<void> {
    const session = this.session;
    return session.call({ method: 'GET', url: '/v2/' }, [], async (response, exchange) => {
      if (response.status !== 200) throw await session.fault(response, exchange, 'the registry API (/v2/)');
      await response.body.dump();
    });
  }

  statBlob(repository: string, digest: string): Promise<BlobInfo | undefined> {
    return statBlob(this.session, repository, digest);
  }

  /** A small blob whole, verified; refused when larger than `limit` bytes. */
  readBlob(repository: string, digest: string, limit: number): Promise<Buffer> {
    return readBlob(this.session, repository, digest, limit);
  }

  /** A blob as a stream that errors at its end unless it matches its digest. */
  openBlob(repository: string, digest: string): ReturnType<typeof openBlob> {
    return openBlob(this.session, repository, digest);
  }

  /** Exactly `length` bytes at `offset` of a blob (HTTP Range), or an error. */
  readBlobRange(repository: string, digest: string, offset: number, length: number): Promise<Buffer> {
    return readBlobRange(this.session, repository, digest, offset, length);
  }

  pushBlob(repository: string, source: BlobSource, options?: PushBlobOptions): Promise<PushOutcome> {
    return pushBlob(this.session, repository, source, options);
  }

  getManifest(repository: string, reference: string): Promise<FetchedManifest> {
    return getManifest(this.session, repository, reference);
  }

  resolveManifest(repository: string, reference: string): Promise<ManifestInfo> {
    return resolveManifest(this.session, repository, reference);
  }

  putManifest(repository: string, reference: string, bytes: Buffer, mediaType: string): Promise<string> {
    return putManifest(this.session, repository, reference, bytes, mediaType);
  }

  /**
   * Pushes a chain: every layer blob (`sources[i]` is `chain.layers[i]`'s file), then the config,
   * then the manifest under `tag`. Returns the manifest's digest.
   */
  async pushChain(repository: string, tag: string, chain: Chain, sources: BlobSource[], options: PushChainOptions = {}): Promise<string> {
    const encoded = encodeChain(chain);
    const mismatch = sources.length !== chain.layers.length ? -1 : sources.findIndex((s, i) => s.digest !== chain.layers[i].blobDigest || s.size !== chain.layers[i].blobSize);
    if (sources.length !== chain.layers.length || mismatch >= 0) {
      throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `pushChain: the blobs given are not the chain's layer files (${mismatch < 0 ? 'count differs' : `layer ${mismatch}`}).`);
    }
    for (const source of [...sources, bufferBlobSource(encoded.config)]) {
      // Not `onBlob?.(digest, await push())`: optional chaining would skip the push with the call.
      const outcome = await this.pushBlob(repository, source, options);
      options.onBlob?.(source.digest, outcome);
    }
    return this.putManifest(repository, tag, encoded.manifest, OCI_MANIFEST);
  }

  /** The chain a reference names: its manifest (NOT_COWDISK when it is something else) and config. */
  async fetchChain(ref: Reference): Promise<FetchedChain> {
    const what = formatReference(ref);
    const fetched = await this.getManifest(ref.repository, manifestReference(ref));
    const manifest = decodeChainManifest(fetched.bytes, what, fetched.mediaType);
    const config = await this.readBlob(ref.repository, manifest.config.digest, CONFIG_LIMIT);
    return { chain: decodeChainConfig(config, manifest, what), manifest, manifestDigest: fetched.digest };
  }

  close(): Promise<void> {
    return this.session.close();
  }
}
