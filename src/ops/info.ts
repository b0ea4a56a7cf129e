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
import type { ParentRef } from '../format/header.js';
import { SnapshotFile } from '../format/snapshot.js';
import type { FileSystem } from '../io/file.js';
import { realFileSystem } from '../io/real-file.js';
import type { LayerKind } from '../image/device.js';
import { type ImageKind, openImage } from '../image/open.js';
import { OverlayDevice } from '../image/overlay-device.js';
import { SealedChain } from '../image/sealed-chain.js';

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
  path: string;
  /** A snapshot's layer digest (sha256:...), a raw base's fingerprint (raw:size=...), an overlay's uuid (uuid:...). */
  identity: string;
  /** The file's length in bytes (an overlay's is sparse). */
  fileSize: number;
  bytesOnDisk: number;
}

export interface ImageDescription {
  path: string;
  kind: ImageKind;
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
  fs?: FileSystem;
}

export async function describeImage(file: string, options: DescribeOptions = {}): Promise<ImageDescription> {
  const fs = options.fs ?? realFileSystem;
  const image = await openImage(file, { readOnly: true, fs, rawBlockSize: options.rawBlockSize });
  try {
    const bytesOnDisk = (await fs.stat(image.path)).allocated;
    const blocks = Math.ceil(image.size / image.blockSize);
    const common = { path: image.path, kind: image.kind, identity: image.chain[0].identity, virtualSize: image.size, blockSize: image.blockSize, blocks, depth: image.chain.length };
    const parentOf = (ref: ParentRef): ImageDescription['parent'] =>
      ref.kind === 'none' ? null : { kind: ref.kind, recordedPath: ref.path, path: image.chain[1].path };
    let description: ImageDescription;
    if (image instanceof OverlayDevice) {
      const { header } = image.overlay;
      const { present, zero, bytesPresent } = await image.allocation();
      description = {
        ...common,
        subBlocks: header.subBlocks,
        dirty: header.dirty,
        created: isoTime(header.createdNs),
        parent: parentOf(header.parent),
        allocation: { presentBlocks: present, zeroBlocks: zero, absentBlocks: blocks - present - zero, dataBytes: bytesPresent, bytesOnDisk },
      };
    } else if (image instanceof SealedChain && image.layers[0] instanceof SnapshotFile) {
      const top = image.layers[0];
      const { header } = top;
      const zero = entriesInDirectory(top) - header.storedBlocks;
      description = {
        ...common,
        subBlocks: null,
        dirty: null,
        created: isoTime(header.createdNs),
        parent: parentOf(header.parent),
        allocation: {
          presentBlocks: header.storedBlocks,
          zeroBlocks: zero,
          absentBlocks: blocks - header.storedBlocks - zero,
          dataBytes: header.dataBytes,
          bytesOnDisk,
        },
      };
    } else {
      description = {
        ...common,
        subBlocks: null,
        dirty: null,
        created: null,
        parent: null,
        allocation: { presentBlocks: null, zeroBlocks: null, absentBlocks: null, dataBytes: null, bytesOnDisk },
      };
    }
    if (options.chain) {
      description.chain = await Promise.all(
        image.chain.map(async (layer, index): Promise<LayerDescription> => {
          const stat = await fs.stat(layer.path);
          return { index, kind: layer.kind, path: layer.path, identity: layer.identity, fileSize: stat.size, bytesOnDisk: stat.allocated };
        }),
      );
    }
    return description;
  } finally {
    await image.close();
  }
}

/** Blocks a snapshot has an entry for (stored or zero), from its directory alone. */
function entriesInDirectory(snap: SnapshotFile): number {
  let entries = 0;
  for (let page = 0; page < snap.header.dirPages; page++) entries += snap.storedInPage(page);
  return entries;
}

/** A header's creation time, or null when the field holds no representable date (a damaged file). */
function isoTime(ns: bigint): string | null {
  const date = new Date(Number(ns / 1_000_000n));
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}
