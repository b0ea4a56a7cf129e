/**
 * `upgrade`: a version 1 snapshot layer rewritten as version 2 (docs/FORMAT.md), under the same
 * name, keeping its identity.
 *
 * Every block the layer holds is read through its version 1 reader and written again with the
 * same kind (a data block of zeros stays a data block: the layer digest records the difference)
 * over the same parent, with the same creation time, to a temporary file that is published over
 * the old name in one rename once it is synced (io/new-file.ts, `replace`). The layer digest is a
 * function of the content only, so the new file has the same one, and every child that names the
 * layer stays valid; that is checked before the rename, and a layer whose blocks do not match
 * their digests (damage `cowdisk check` would report) is refused and left as it was. A reader
 * that has the old file open goes on reading it (it is the same content) until it closes it.
 *
 * The parent is not opened: the layer's own file is all that is rewritten.
 */
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';
import { SNAPSHOT_V2 } from '../format/constants.js';
import { SnapshotV2Writer } from '../format/snapshot-v2-writer.js';
import { BlockState } from '../image/layer.js';
import { detectKind, openSealedLayer } from '../image/open-layer.js';
import { fileSystemOf } from '../io/real-file.js';
import { heldBlocks } from './layers.js';
import type { LifecycleOptions } from './seal.js';

export interface UpgradeResult {
  layer: string;
  /** The format version the layer had, and has now. */
  from: number;
  to: number;
  /** False when the layer was already version 2: nothing was written. */
  upgraded: boolean;
  /** The layer's identity, the same before and after. */
  digest: string;
  /** The file's length before and after. */
  bytesBefore: number;
  bytesAfter: number;
}

const CHUNK_BYTES = 4 * 1024 * 1024;

export async function upgradeLayer(file: string, options: LifecycleOptions = {}): Promise<UpgradeResult> {
  const fs = fileSystemOf(options);
  const abs = path.resolve(file);
  const kind = await detectKind(abs, fs);
  if (kind === 'overlay') {
    throw new CowdiskError(
      ErrorCode.NOT_SEALED,
      `${abs} is an overlay: upgrade rewrites sealed snapshot layers only (an overlay's format has one version). \`cowdisk snapshot\` seals an overlay's changes into a layer of the current format.`,
      { path: abs },
    );
  }
  if (kind === 'raw') {
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `${abs} is a raw file, not a cowdisk snapshot layer: there is nothing to upgrade. \`cowdisk import\` makes a layer of it.`, {
      path: abs,
    });
  }
  const bytesBefore = (await fs.stat(abs)).size;
  const layer = await openSealedLayer(fs, abs, 'snapshot');
  try {
    const from = layer.version as number;
    if (from === SNAPSHOT_V2) return { layer: abs, from, to: from, upgraded: false, digest: layer.identity, bytesBefore, bytesAfter: bytesBefore };
    const bs = layer.blockSize as number;
    const blocks = Math.ceil(layer.size / bs);
    const writer = await SnapshotV2Writer.create(fs, abs, { size: layer.size, blockSize: bs, parent: layer.parent, replace: true, createdNs: layer.createdNs ?? undefined });
    try {
      const set = await heldBlocks([layer], blocks, bs);
      const buf = Buffer.alloc(Math.max(bs, Math.floor(CHUNK_BYTES / bs) * bs));
      let done = 0;
      for (const [first, end] of set.runs(buf.length / bs)) {
        const states = await layer.states(first, end - first, bs);
        // Whole blocks, the last one too: the stored block (and its digest) runs past the disk's end.
        const data = buf.subarray(0, (end - first) * bs);
        await layer.read(data, first * bs);
        for (let i = 0; i < end - first; i++) {
          const state = states?.[i] ?? BlockState.ABSENT;
          if (state === BlockState.ABSENT) continue;
          await writer.add(first + i, state === BlockState.ZERO ? null : data.subarray(i * bs, (i + 1) * bs));
        }
        done += data.length;
        options.onProgress?.(done, set.size * bs);
      }
      const header = await writer.finish(({ layerDigest }) => {
        const made = `sha256:${layerDigest.toString('hex')}`;
        if (made === layer.identity) return;
        throw new CowdiskError(
          ErrorCode.CORRUPT,
          `${abs}: its blocks do not add up to its layer digest (${made}, not ${layer.identity}), so the layer is damaged; it was left as it was. \`cowdisk check ${abs}\` names the blocks; restore the layer from a copy.`,
          { path: abs },
        );
      });
      return { layer: abs, from, to: SNAPSHOT_V2, upgraded: true, digest: `sha256:${header.layerDigest.toString('hex')}`, bytesBefore, bytesAfter: header.fileLength };
    } catch (err) {
      await writer.abort();
      throw err;
    }
  } finally {
    await layer.close();
  }
}
