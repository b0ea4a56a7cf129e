/**
 * `check`: verify an image and the chain beneath it end to end, and (`repair`) restore the
 * overlay's invariants.
 *
 * What is verified, layer by layer, top first:
 * - overlay: both header copies, both copies of every state-map page (a page with no valid copy
 *   is an error; one damaged copy is a warning: a write torn by a crash, or damage the other copy
 *   survived), the dirty mark (a warning: not closed cleanly), and the link to its parent;
 * - snapshot layer: header, directory, every block-table page, every stored block (decompressed
 *   and compared with its SHA-256), and the layer digest recomputed from the block digests;
 * - raw base: its identity as the child recorded it (size, inode, modification time);
 * - a lazily cloned layer: as a snapshot layer, after fetching what its cache lacks (so its
 *   cache is whole afterwards); `stats.bytesFetched` says how much that was.
 * Every problem names the file and, where there is one, the block.
 *
 * Repair works on the overlay only (sealed layers are never modified: a damaged one must be
 * restored from a copy): both header copies rewritten, damaged map-page copies rewritten from the
 * good one, a page with no good copy reset to "absent" (its blocks read from the parent again,
 * and the report says which), space under non-present sub-blocks punched out, the dirty mark
 * cleared.
 */
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';
import { OverlayFile, readHeaderSlots } from '../format/overlay.js';
import { chooseSlot } from '../format/state-map.js';
import type { FileSystem } from '../io/file.js';
import { fileSystemOf } from '../io/real-file.js';
import { type ImageFormat, detectKind, openImage } from '../image/open.js';
import { reclaimSpace } from './reclaim.js';

export interface Problem {
  severity: 'error' | 'warning';
  code: string;
  message: string;
  path: string;
  block?: number;
}

export interface CheckResult {
  /** No errors (warnings allowed). */
  ok: boolean;
  problems: Problem[];
  /** What repair did, one sentence each. */
  repaired: string[];
  /** `bytesFetched`: what lazily cloned layers fetched from their registry to be verified. */
  stats: { layers: number; blocksVerified: number; bytesVerified: number; bytesFetched: number };
}

const FINDINGS = new Set<string>([
  ErrorCode.CORRUPT,
  ErrorCode.TRUNCATED,
  ErrorCode.BAD_MAGIC,
  ErrorCode.BAD_VERSION,
  ErrorCode.PARENT_MISSING,
  ErrorCode.PARENT_CHANGED,
  ErrorCode.NOT_SEALED,
]);

export interface CheckOptions {
  repair?: boolean;
  /** 'raw': take the image as a raw disk whatever its bytes say. */
  format?: ImageFormat;
  fs?: FileSystem;
  /** Called with (layers done, layers total) and bytes verified so far. */
  onProgress?: (done: number, total: number) => void;
}

export async function checkImage(file: string, options: CheckOptions = {}): Promise<CheckResult> {
  const fs = fileSystemOf(options);
  const abs = path.resolve(file);
  const report: CheckResult = { ok: true, problems: [], repaired: [], stats: { layers: 0, blocksVerified: 0, bytesVerified: 0, bytesFetched: 0 } };
  const add = (p: Problem) => {
    report.problems.push(p);
    if (p.severity === 'error') report.ok = false;
  };
  // Damage and broken links are findings; anything else (the image is locked by a server, an I/O
  // error, a missing file) means check could not do its work, and is thrown as it is.
  const fromError = (err: unknown, where: string) => {
    if (!(err instanceof CowdiskError) || !FINDINGS.has(err.code)) throw err;
    add({ severity: 'error', code: err.code, message: err.message, path: err.path ?? where, block: err.block });
  };

  let kind;
  try {
    kind = await detectKind(abs, fs, options.format);
  } catch (err) {
    fromError(err, abs);
    return report;
  }
  if (kind === 'overlay') {
    try {
      await checkOverlay(fs, abs, options.repair ?? false, add, report);
    } catch (err) {
      fromError(err, abs);
      return report;
    }
  } else if (options.repair) {
    report.repaired.push(`nothing to repair in ${abs}: sealed layers and raw bases are never modified; restore a damaged one from a copy.`);
  }

  // The chain: every link verified by opening it, then every sealed layer read in full.
  let image;
  try {
    image = await openImage(abs, { fs, readOnly: true, format: options.format });
  } catch (err) {
    fromError(err, abs);
    return report;
  }
  try {
    report.stats.layers = image.layers.length + (image.overlay ? 1 : 0);
    let done = image.overlay ? 1 : 0;
    for (const layer of image.layers) {
      await layer.verify({
        verified: (bytes) => {
          report.stats.blocksVerified++;
          report.stats.bytesVerified += bytes;
        },
        problem: (err) => add({ severity: 'error', code: err.code, message: err.message, path: err.path ?? layer.path, block: err.block }),
        fetched: (bytes) => (report.stats.bytesFetched += bytes),
      });
      options.onProgress?.(++done, report.stats.layers);
    }
  } finally {
    await image.close();
  }
  return report;
}

async function checkOverlay(
  fs: FileSystem,
  abs: string,
  repair: boolean,
  add: (p: Problem) => void,
  report: CheckResult,
): Promise<void> {
  const overlay = await OverlayFile.open(fs, abs, { readOnly: !repair });
  try {
    let headerRewrite = false;
    for (const [slot, decoded] of (await readHeaderSlots(overlay.file)).entries()) {
      if (!(decoded instanceof CowdiskError)) continue;
      headerRewrite = true;
      add({ severity: 'warning', code: decoded.code, message: `header copy ${slot} is damaged; the other copy is in use (${decoded.message})`, path: abs });
    }
    const wasDirty = overlay.header.dirty;
    if (wasDirty) {
      add({
        severity: 'warning',
        code: 'COWDISK_W_DIRTY',
        message: `the image was not closed cleanly (a crash or a killed process). Its data is consistent; \`cowdisk check --repair\` reclaims space written but never recorded and clears the mark.`,
        path: abs,
      });
    }
    for (let index = 0; index < overlay.header.mapPages; index++) {
      const slots = await overlay.map.readSlots(index);
      const chosen = chooseSlot(slots);
      const [first, last] = overlay.map.blocksOfPage(index);
      if (!chosen) {
        add({
          severity: 'error',
          code: ErrorCode.CORRUPT,
          message: `state map page ${index} (blocks ${first}..${last}) is damaged in both copies`,
          path: abs,
          block: first,
        });
        if (repair) {
          overlay.map.replace(index, undefined, 0);
          report.repaired.push(`state map page ${index} reset: blocks ${first}..${last} now read from the parent (their overlay contents were lost).`);
        }
        continue;
      }
      const damaged = slots.findIndex((s) => s.kind === 'invalid');
      if (damaged !== -1) {
        // Beside an empty copy, a damaged one is the page's first write, torn by a crash: the page
        // never had a durable version, so "every block absent" is its true content.
        const torn = chosen.kind === 'empty';
        add({
          severity: 'warning',
          code: ErrorCode.CORRUPT,
          message: torn
            ? `state map page ${index} (blocks ${first}..${last}): copy ${damaged} is a first write torn by a crash; the page was never recorded, so its blocks read from below`
            : `state map page ${index} (blocks ${first}..${last}): copy ${damaged} is damaged (a write torn by a crash, or damage); the other copy is in use`,
          path: abs,
          block: first,
        });
        if (repair) {
          overlay.map.replace(index, chosen.kind === 'valid' ? chosen.masks : undefined, chosen.kind === 'valid' ? chosen.gen : 0);
          report.repaired.push(
            torn
              ? `state map page ${index}: the torn first write was replaced by an empty page (blocks ${first}..${last} read from below, as before).`
              : `state map page ${index}: the damaged copy was rewritten from the good one.`,
          );
        }
      }
    }
    if (!repair) return;
    if (headerRewrite) {
      await overlay.writeHeader(overlay.header, true);
      report.repaired.push('both header copies rewritten.');
    }
    await overlay.map.persist();
    const reclaimed = await reclaimSpace(overlay);
    if (reclaimed.supported && reclaimed.before > reclaimed.after) {
      report.repaired.push(`${reclaimed.before - reclaimed.after} bytes of unreferenced data reclaimed.`);
    }
    if (wasDirty) {
      await overlay.setDirty(false);
      report.repaired.push('the not-closed-cleanly mark was cleared.');
    }
  } finally {
    await overlay.close();
  }
}
