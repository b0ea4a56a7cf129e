/**
 * What a file is, from its first bytes: an overlay (a header magic in its first slot, or a valid
 * header in its second: an overlay survives damage to one slot), a snapshot layer (its magic), or
 * neither. For neither, whether it still carries an overlay's structures (a damaged header copy's
 * magic, the first state-map page) tells a damaged image from a raw disk.
 */
import { HEADER_SIZE, MAGIC_LENGTH, MAP_PAGE_MAGIC, MAP_PAGE_SIZE, MAP_SLOT_STRIDE, MapPageField, OVERLAY_MAGIC, OVERLAY_MAP_OFFSET } from './constants.js';
import { decodeOverlayHeader, sniffKind } from './header.js';

/** Bytes to read from a file's start for `probeBytes`: both header slots and the first map page. */
export const PROBE_LENGTH = OVERLAY_MAP_OFFSET + MAP_SLOT_STRIDE;

export interface FileProbe {
  /** The kind a readable header says, or null. */
  kind: 'overlay' | 'snapshot' | null;
  /** With no kind: the cowdisk structures found anyway, in words (why the file is not raw), or null. */
  traces: string | null;
}

/** `head`: the file's first bytes (PROBE_LENGTH, or fewer for a shorter file). */
export function probeBytes(head: Buffer, path: string): FileProbe {
  const kind = head.length >= MAGIC_LENGTH ? sniffKind(head) : undefined;
  if (kind) return { kind, traces: null };
  const second = head.subarray(HEADER_SIZE, 2 * HEADER_SIZE);
  if (second.length === HEADER_SIZE) {
    try {
      decodeOverlayHeader(second, path);
      return { kind: 'overlay', traces: null };
    } catch {
      // Not a readable overlay header: is anything else of an overlay here?
    }
  }
  const traces: string[] = [];
  if (second.length >= MAGIC_LENGTH && second.subarray(0, MAGIC_LENGTH).equals(OVERLAY_MAGIC)) traces.push('a damaged overlay header in its second slot');
  for (let slot = 0; slot < 2; slot++) {
    const at = OVERLAY_MAP_OFFSET + slot * MAP_PAGE_SIZE;
    if (head.length < at + MapPageField.GENERATION) continue;
    if (head.readUInt32LE(at + MapPageField.MAGIC) === MAP_PAGE_MAGIC && head.readUInt32LE(at + MapPageField.PAGE_INDEX) === 0) {
      traces.push('an overlay state-map page where the first one belongs');
      break;
    }
  }
  return { kind: null, traces: traces.length > 0 ? traces.join(' and ') : null };
}
