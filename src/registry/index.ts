/**
 * The OCI registry client: where sealed layers live beyond one machine. The verbs (push, pull,
 * lazy clone) call these; nothing here knows the engine. docs/REGISTRY.md describes the artifact.
 */
export { parseReference, looksLikeReference, formatReference, manifestReference, registryOrigins, type Reference } from './reference.js';
export { Credentials, findCredentials, dockerConfigPath, type CredentialLookup } from './credentials.js';
export { RegistryClient, type ClientOptions, type FetchedChain, type PushChainOptions } from './client.js';
export { bufferBlobSource, fileBlobSource, type BlobSource } from './blob-source.js';
export type { BlobInfo } from './blobs.js';
export type { PushBlobOptions, PushOutcome } from './upload.js';
export type { FetchedManifest, ManifestInfo } from './manifests.js';
export type { RetryPolicy } from './retry.js';
export {
  encodeChain,
  decodeChainManifest,
  decodeChainConfig,
  CHAIN_ARTIFACT_TYPE,
  CHAIN_CONFIG_TYPE,
  LAYER_MEDIA_TYPE,
  type Chain,
  type ChainLayer,
  type LayerMetadata,
  type ChainManifest,
  type EncodedChain,
} from './chain-manifest.js';
