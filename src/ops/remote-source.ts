/**
 * The registry behind remote layers: how a cached layer's record names the registry its blob
 * lives in (its origin), and the range-source factory (image/range-source.ts) that turns such an
 * origin into byte ranges of the blob, through one RegistryClient per registry and TLS setting,
 * shared by every layer of the process.
 *
 * An origin holds the registry, the repository, and how to reach them (plain HTTP, a CA file);
 * never credentials. A layer fetched later, by `serve` or `export` long after the clone, finds
 * them where every OCI tool does: the Docker config (`docker login`). `pull` and `clone` hand
 * their own client (with `--username` / `--password-stdin`) to the layers they fill.
 */
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';
import type { BlobRef, RangeSource, RangeSourceFactory } from '../image/range-source.js';
import { RegistryClient, type ClientOptions, type Reference } from '../registry/index.js';

/** How to reach a registry: what the commands' registry options say. */
export type RegistryAccess = Pick<ClientOptions, 'plainHttp' | 'caFile' | 'credentials' | 'dockerConfigDir' | 'retry'>;

interface Origin {
  registry: string;
  repository: string;
  plainHttp?: boolean;
  caFile?: string;
}

/** The origin a cached layer's record keeps for a blob of `repository` on `ref`'s registry. */
export function originOf(ref: Reference, access: RegistryAccess): Record<string, unknown> {
  const origin: Origin = { registry: ref.registry, repository: ref.repository };
  if (access.plainHttp) origin.plainHttp = true;
  if (access.caFile) origin.caFile = path.resolve(access.caFile);
  return { ...origin };
}

function parseOrigin(origin: Readonly<Record<string, unknown>>): Origin {
  const { registry, repository, plainHttp, caFile } = origin;
  if (typeof registry !== 'string' || typeof repository !== 'string' || (plainHttp !== undefined && typeof plainHttp !== 'boolean') || (caFile !== undefined && typeof caFile !== 'string')) {
    throw new CowdiskError(ErrorCode.CORRUPT, `a layer cache record names an origin cowdisk cannot read (${JSON.stringify(origin)}); remove the entry and clone again.`);
  }
  return { registry, repository, plainHttp, caFile };
}

/** Byte ranges of `blob` in `repository`, through `client` (which the caller keeps and closes). */
export function blobRanges(client: RegistryClient, repository: string, blob: BlobRef): RangeSource {
  return {
    name: `${client.registry}/${repository}`,
    read: (offset, length) => client.readBlobRange(repository, blob.digest, offset, length),
    close: async () => undefined,
  };
}

/** Clients by registry and TLS setting, with how many sources use each. */
const clients = new Map<string, { client: RegistryClient; users: number }>();

/**
 * The factory the library installs (src/index.ts): a client per registry, kept while a layer
 * uses it, with the Docker config's credentials and the default retries (a fetch that keeps
 * failing costs its read a few seconds, then an error; the next read tries again).
 */
export const registryRangeSources: RangeSourceFactory = (raw, blob) => {
  const origin = parseOrigin(raw);
  const key = JSON.stringify([origin.registry, origin.plainHttp ?? false, origin.caFile ?? null]);
  let entry = clients.get(key);
  if (!entry) {
    entry = { client: new RegistryClient(origin.registry, { plainHttp: origin.plainHttp, caFile: origin.caFile }), users: 0 };
    clients.set(key, entry);
  }
  entry.users++;
  const held = entry;
  let closed = false;
  return {
    ...blobRanges(held.client, origin.repository, blob),
    async close() {
      if (closed) return;
      closed = true;
      if (--held.users === 0 && clients.get(key) === held) {
        clients.delete(key);
        await held.client.close();
      }
    },
  };
};
