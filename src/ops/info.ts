/**
 * Describing an image for people and scripts (`cowdisk info`): what kind of file it is, the disk
 * it presents, how much of it this file holds, and (on request) every layer beneath.
 *
 * The image is opened read-only, which takes no lock and writes nothing (not even the dirty
 * mark), so describing an image that is being served is safe. It is a full open all the same: a
 * parent that is missing or has changed fails here exactly as it would for `serve`, which is what
 * a person checking a clone wants to learn.
 *
 * Allocation counts come from what each format keeps anyway: an overlay's state map (one pass
 * over its pages, 8 bytes a block), a snapshot's header and block directory (no table page is
 * read). A raw file has no block states; only its bytes on disk are told.
 */
import { FORMAT_VERSION } from '../format/constants.js';
import type { ParentRef } from '../format/header.js';
import type { FileSystem } from '../io/file.js';
import { fileSystemOf } from '../io/real-file.js';
import type { LayerKind } from '../image/device.js';
import { type ImageFormat, type ImageKind, openImage } from '../image/open.js';

export interface Allocation {
  /** Blocks whose data this file holds (for an overlay: any sub-block present). Null for a raw file. */
  presentBlocks: number | null;
  /** Blocks this file marks as reading zeros, hiding the layers below. Null for a raw file. */
  zeroBlocks: number | null;
  /** Blocks this file leaves to the layers below (or to zeros, with none). Null for a raw file. */
  absentBlocks: number | null;
  /** Bytes of block data stored (a snapshot's after compression). Null for a raw file. */
  dataBytes: number | null;
  /** Bytes the file occupies on disk (st_blocks * 512): what `du` says. */
  bytesOnDisk: number;
}

export interface LayerDescription {
  /** 0 is the top layer (the image itself). */
  index: number;
  kind: LayerKind;
  /** The file's format version (an overlay's, or a snapshot layer's: 1 or 2), or null for a raw file. */
  version: number | null;
  path: string;
  /** A snapshot's layer digest (sha256:...), a raw base's fingerprint (raw:size=...), an overlay's uuid (uuid:...). */
  identity: string;
  /** The file's length in bytes (an overlay's is sparse). */
  fileSize: number;
  bytesOnDisk: number;
  /** For a lazily cloned layer: where it is fetched from, and how many of its pieces are cached. */
  remote?: { source: string; blobDigest: string; cachedPieces: number; pieces: number };
}

export interface ImageDescription {
  path: string;
  kind: ImageKind;
  /** The file's format version (an overlay's, or a snapshot layer's: 1 or 2), or null for a raw file. */
  version: number | null;
  /** The file's own identity, as a child records it (see LayerDescription.identity). */
  identity: string;
  /** Size of the disk the image presents, in bytes. */
  virtualSize: number;
  blockSize: number;
  blocks: number;
  /** Copy-on-write units per block (overlays only). */
  subBlocks: number | null;
  /** Set while an overlay is open for writing or was not closed cleanly (overlays only). */
  dirty: boolean | null;
  /** Creation time as ISO 8601 (cowdisk files only). */
  created: string | null;
  /** The parent as the header records it: its kind and the path relative to this file. */
  parent: { kind: 'raw' | 'snapshot'; recordedPath: string; path: string } | null;
  /** Layers in the chain, this one included. */
  depth: number;
  allocation: Allocation;
  /** Every layer, top first (with `chain: true`). */
  chain?: LayerDescription[];
}

export interface DescribeOptions {
  /** Describe every layer of the chain too. */
  chain?: boolean;
  /** Block size to present a bare raw file with (it has none of its own). */
  rawBlockSize?: number;
  /** 'raw': take the image as a raw disk whatever its bytes say (see detectKind). */
  format?: ImageFormat;
  fs?: FileSystem;
}

export async function describeImage(file: string, options: DescribeOptions = {}): Promise<ImageDescription> {
  const fs = fileSystemOf(options);
  const image = await openImage(file, { readOnly: true, fs, rawBlockSize: options.rawBlockSize, format: options.format });
  try {
    const { device } = image;
    const bytesOnDisk = (await fs.stat(image.path)).allocated;
    const blocks = Math.ceil(device.size / device.blockSize);
    // Versions by chain position: the overlay's (there is one), then each sealed layer's.
    const versions = [...(image.overlay ? [FORMAT_VERSION] : []), ...image.layers.map((layer) => layer.version)];
    const common = {
      path: image.path,
      kind: image.kind,
      version: versions[0],
      identity: device.chain[0].identity,
      virtualSize: device.size,
      blockSize: device.blockSize,
      blocks,
      depth: device.chain.length,
    };
    const parentOf = (ref: ParentRef): ImageDescription['parent'] =>
      ref.kind === 'none' ? null : { kind: ref.kind, recordedPath: ref.path, path: device.chain[1].path };
    let description: ImageDescription;
    if (image.overlay) {
      const { header } = image.overlay.file;
      const { present, zero, bytesPresent } = await image.overlay.allocation();
      description = {
        ...common,
        subBlocks: header.subBlocks,
        dirty: header.dirty,
        created: isoTime(header.createdNs),
        parent: parentOf(header.parent),
        allocation: { presentBlocks: present, zeroBlocks: zero, absentBlocks: blocks - present - zero, dataBytes: bytesPresent, bytesOnDisk },
      };
    } else {
      const top = image.layers[0];
      const counts = top.counts();
      description = {
        ...common,
        subBlocks: null,
        dirty: null,
        created: top.createdNs === null ? null : isoTime(top.createdNs),
        parent: parentOf(top.parent),
        allocation: counts
          ? { presentBlocks: counts.stored, zeroBlocks: counts.zero, absentBlocks: blocks - counts.stored - counts.zero, dataBytes: counts.dataBytes, bytesOnDisk }
          : { presentBlocks: null, zeroBlocks: null, absentBlocks: null, dataBytes: null, bytesOnDisk },
      };
    }
    if (options.chain) {
      description.chain = await Promise.all(
        device.chain.map(async (layer, index): Promise<LayerDescription> => {
          const stat = await fs.stat(layer.path);
          const described: LayerDescription = { index, kind: layer.kind, version: versions[index], path: layer.path, identity: layer.identity, fileSize: stat.size, bytesOnDisk: stat.allocated };
          const remote = image.layers[index - (image.overlay ? 1 : 0)]?.remote;
          if (remote) {
            const { present, total } = remote.cached();
            described.remote = { source: remote.source, blobDigest: remote.blob.digest, cachedPieces: present, pieces: total };
          }
          return described;
        }),
      );
    }
    return description;
  } finally {
    await image.close();
  }
}

/** A header's creation time, or null when the field holds no representable date (a damaged file). */
function isoTime(ns: bigint): string | null {
  const date = new Date(Number(ns / 1_000_000n));
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}
