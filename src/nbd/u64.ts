/**
 * The protocol's 64-bit big-endian integers (offsets, sizes, handles) as JavaScript numbers:
 * shared by the handshake, the transmission phase and `cowdisk bench`'s client.
 */

/** Writes a 64-bit unsigned integer (a JavaScript number below 2^53) big-endian. */
export function writeU64(buf: Buffer, value: number, at: number): void {
  buf.writeUInt32BE(Math.floor(value / 0x100000000), at);
  buf.writeUInt32BE(value >>> 0, at + 4);
}

/** Reads a 64-bit unsigned integer; exact below 2^53, and larger values still compare as larger. */
export function readU64(buf: Buffer, at: number): number {
  return buf.readUInt32BE(at) * 0x100000000 + buf.readUInt32BE(at + 4);
}
