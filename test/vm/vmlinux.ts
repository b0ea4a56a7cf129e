/**
 * Booting the kernel without its self-decompression. A Debian vmlinuz is a bzImage whose payload
 * is an xz-compressed vmlinux; under TCG the guest spends about 3 s of a roughly 7 s boot
 * unpacking it, while the host's xz does the same in under a second. QEMU can start an
 * uncompressed vmlinux directly through its PVH entry point (the Xen PVH ELF note, present when
 * the kernel was built with CONFIG_PVH), so the harness extracts the payload and boots that.
 *
 * The payload is found from the boot protocol header (Documentation/arch/x86/boot.rst):
 * setup_sects at 0x1f1 gives where protected-mode code starts, and payload_offset (0x248) /
 * payload_length (0x24c) locate the compressed vmlinux inside it; the magic says which
 * compressor made it. Anything unexpected returns null and the caller boots the bzImage as is.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';

const XZ_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
const GZIP_MAGIC = Buffer.from([0x1f, 0x8b]);

/** The uncompressed ELF vmlinux inside `bzImage`, or null if it cannot (or should not) be had. */
export function extractVmlinux(bzImage: string, configFile: string): Buffer | null {
  if (!existsSync(configFile) || !/^CONFIG_PVH=y$/m.test(readFileSync(configFile, 'utf8'))) return null;
  const image = readFileSync(bzImage);
  if (image.length < 0x250 || image.toString('latin1', 0x202, 0x206) !== 'HdrS') return null;
  const setupSects = image[0x1f1] || 4;
  const start = (setupSects + 1) * 512 + image.readUInt32LE(0x248);
  const payload = image.subarray(start, start + image.readUInt32LE(0x24c));
  const options = { input: payload, maxBuffer: 1 << 30, stdio: ['pipe', 'pipe', 'ignore'] as ['pipe', 'pipe', 'ignore'] };
  let vmlinux: Buffer;
  try {
    if (payload.subarray(0, 6).equals(XZ_MAGIC)) vmlinux = execFileSync('xz', ['-dc', '--single-stream'], options);
    else if (payload.subarray(0, 4).equals(ZSTD_MAGIC)) vmlinux = execFileSync('zstd', ['-dcq'], options);
    else if (payload.subarray(0, 2).equals(GZIP_MAGIC)) vmlinux = gunzipSync(payload);
    else return null;
  } catch {
    return null;
  }
  return vmlinux.readUInt32BE(0) === 0x7f454c46 ? vmlinux : null;
}
