/** CRC-32 (IEEE 802.3, as zlib and gzip compute it) of metadata: headers, map and table pages. */
import { crc32 } from 'node:zlib';

export function zlibCrc32(data: Uint8Array): number {
  return crc32(data) >>> 0;
}
