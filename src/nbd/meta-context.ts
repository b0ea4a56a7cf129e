/**
 * Metadata contexts: what NBD_CMD_BLOCK_STATUS can report. cowdisk has two of its own, and offers
 * QEMU's third when the server is asked to (`NbdServerOptions.allocationDepth`).
 *
 * `base:allocation` (the spec's): NBD_STATE_HOLE when no layer stores the bytes (an absent block
 * with nothing below, a zero block, a hole in a raw base), NBD_STATE_ZERO when they read as zeros.
 * Data stored in any layer of the chain, top or parent, is allocated (status 0).
 *
 * `cowdisk:layer` (ours): which layer of the chain serves each extent, as a depth: 1 is the top
 * layer (the overlay a container writes to), 2 its parent, and so on down the chain, `LayerInfo`
 * index + 1; 0 means no layer serves it (it reads as zeros because nothing below stores anything).
 * A zero block that hides its parent is served by the layer that holds the zero state. The numbering
 * is qemu's `qemu:allocation-depth`, so tools that know one can read the other. docs/PROTOCOL.md
 * has the grammar.
 *
 * `qemu:allocation-depth` (QEMU's, docs/interop/nbd.rst): the same depth under QEMU's name, 0 for
 * unallocated, 1 for the active layer, 2 for the first backing layer and so on, which is what QEMU's
 * block jobs and `nbdinfo --map=qemu:allocation-depth` ask for. It follows QEMU's own rules for
 * what is "allocated": a zero block belongs to the layer that holds it, and a hole in a raw base
 * belongs to that base (QEMU's raw driver reports its holes as allocated zeros), exactly as
 * `cowdisk:layer` counts them. It is offered only when asked for, as qemu-nbd offers it only with
 * `--allocation-depth`: the spec says a LIST without queries returns every context a client may
 * select, and clients of a server that did not ask keep seeing the two they always saw.
 *
 * Query grammar (NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT): a full name selects that
 * context; `base:` and `cowdisk:` list every context of the namespace (LIST only: the spec says an
 * empty leaf selects nothing in SET); queries in other namespaces, or unknown leaves, match nothing
 * and are not errors.
 */
import type { Extent } from '../image/device.js';
import { AllocationState } from './constants.js';

export interface MetaContext {
  /** The id this context always gets in NBD_REP_META_CONTEXT replies to SET (unique per connection). */
  readonly id: number;
  readonly name: string;
  /** The 32-bit status of an extent in this context. */
  status(extent: Extent): number;
}

export const BASE_ALLOCATION: MetaContext = {
  id: 1,
  name: 'base:allocation',
  status: (e) => (e.kind === 'data' ? 0 : AllocationState.HOLE | AllocationState.ZERO),
};

export const COWDISK_LAYER: MetaContext = {
  id: 2,
  name: 'cowdisk:layer',
  status: (e) => (e.layer < 0 ? 0 : e.layer + 1),
};

export const QEMU_ALLOCATION_DEPTH: MetaContext = {
  id: 3,
  name: 'qemu:allocation-depth',
  status: COWDISK_LAYER.status,
};

/** The contexts a server offers: cowdisk's own two, and QEMU's allocation depth when asked for. */
export function offeredContexts(options: { allocationDepth?: boolean } = {}): readonly MetaContext[] {
  return options.allocationDepth ? [BASE_ALLOCATION, COWDISK_LAYER, QEMU_ALLOCATION_DEPTH] : [BASE_ALLOCATION, COWDISK_LAYER];
}

/** Of the `offered` contexts, those matching NBD_OPT_LIST_META_CONTEXT queries (no query: all of them). */
export function listContexts(offered: readonly MetaContext[], queries: readonly string[]): MetaContext[] {
  if (queries.length === 0) return [...offered];
  return offered.filter((c) =>
    queries.some((q) => q === c.name || (q.endsWith(':') && c.name.startsWith(q) && q.indexOf(':') === q.length - 1)),
  );
}

/** Of the `offered` contexts, those selected by NBD_OPT_SET_META_CONTEXT queries: exact names only. */
export function selectContexts(offered: readonly MetaContext[], queries: readonly string[]): MetaContext[] {
  return offered.filter((c) => queries.includes(c.name));
}

/** Descriptors never exceed this many per context in one reply; the spec lets a server stop early. */
const MAX_DESCRIPTORS = 65536;

/**
 * Turns the extents covering [offset, offset + length) into block status descriptors for one
 * context: a flat array [length0, status0, length1, status1, ...], neighbours with the same status
 * merged, clipped to the request, at most one descriptor with REQ_ONE.
 */
export function descriptors(
  extents: readonly Extent[],
  context: MetaContext,
  offset: number,
  length: number,
  reqOne: boolean,
): number[] {
  const out: number[] = [];
  const end = offset + length;
  for (const e of extents) {
    const start = Math.max(e.offset, offset);
    const stop = Math.min(e.offset + e.length, end);
    if (stop <= start) continue;
    const status = context.status(e);
    const n = out.length;
    if (n > 0 && out[n - 1] === status) {
      out[n - 2] += stop - start;
    } else {
      if (reqOne && n > 0) break;
      if (n / 2 >= MAX_DESCRIPTORS) break;
      out.push(stop - start, status);
    }
  }
  return out;
}
