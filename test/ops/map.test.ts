import { describe, expect, it } from 'vitest';
import type { BlockDevice, Extent } from '../../src/image/device.js';
import { mapExtents } from '../../src/ops/map.js';

/** A device whose extents come from a function of the byte offset, answered block by block. */
function device(size: number, kindAt: (offset: number) => Extent['kind'], calls: Array<[number, number]>): BlockDevice {
  const blockSize = 64 * 1024;
  return {
    size,
    blockSize,
    chain: [{ kind: 'overlay', path: '/top.cow', identity: 'uuid:0' }],
    async extents(offset: number, length: number) {
      calls.push([offset, length]);
      const out: Extent[] = [];
      for (let at = offset; at < offset + length; at += blockSize) {
        const kind = kindAt(at);
        out.push({ offset: at, length: Math.min(blockSize, offset + length - at), kind, layer: kind === 'hole' ? -1 : 0 });
      }
      return out;
    },
  } as unknown as BlockDevice;
}

async function all(d: BlockDevice) {
  const out = [];
  for await (const e of mapExtents(d)) out.push(e);
  return out;
}

describe('mapExtents', () => {
  it('asks the device in bounded windows and joins extents across them', async () => {
    const calls: Array<[number, number]> = [];
    const size = 10 * 1024 ** 3 + 4096;
    const extents = await all(device(size, () => 'hole', calls));
    expect(extents).toEqual([{ offset: 0, length: size, kind: 'hole', layer: -1, path: null }]);
    expect(calls.length).toBeGreaterThan(1);
    expect(calls.reduce((sum, [, length]) => sum + length, 0)).toBe(size);
  });

  it('keeps neighbours apart where the kind or layer changes, and names the serving file', async () => {
    const boundary = 4 * 1024 ** 3;
    const extents = await all(device(2 * boundary, (at) => (at < boundary ? 'data' : 'zero'), []));
    expect(extents).toEqual([
      { offset: 0, length: boundary, kind: 'data', layer: 0, path: '/top.cow' },
      { offset: boundary, length: boundary, kind: 'zero', layer: 0, path: '/top.cow' },
    ]);
  });
});
