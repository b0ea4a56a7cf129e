/**
 * The JavaScript face of cowdisk's N-API addon (native/). Nothing else in cowdisk touches the
 * binding: callers ask `native()` and get either the typed binding or null when the addon was not
 * built (no compiler at install time, say). `attach` and `detach` need it and say why it is missing
 * through `nativeUnavailableReason()`; everything else runs without it, with less: images are not
 * locked, holes are not punched, and a raw base's holes are reported as data.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** What both kernel interfaces tell the nbd driver about a disk (native/src/nbd_geometry.h). */
export interface NbdGeometry {
  /** Connected stream sockets, one per connection; the kernel takes its own reference. */
  sockets: number[];
  sizeBytes: number;
  /** Logical sector size the kernel uses: a power of two from 512 to the page size. */
  blockSize?: number;
  /** NBD transmission flags (NBD_FLAG_*), as a server would send them. */
  serverFlags: number;
  /**
   * Seconds before a request fails; absent (or 0): with one socket, requests wait for the server
   * forever; with several, the kernel still gives up on a socket after the block layer's 30 s.
   */
  timeout?: number;
}

/** What `nbdConnect` hands the kernel's nbd driver (linux/nbd-netlink.h, NBD_CMD_CONNECT). */
export interface NbdConnectOptions extends NbdGeometry {
  /** Device index (nbdN); without it the kernel picks a free device atomically. */
  index?: number;
  /** Shown in /sys/block/nbdN/backend (Linux 5.14+; older kernels ignore it). */
  backend?: string;
}

/** What `nbdIoctlConnect` configures with the NBD_SET_* ioctls before NBD_DO_IT. */
export interface NbdIoctlOptions extends NbdGeometry {
  /** /dev/nbdN */
  device: string;
}

/**
 * The addon's functions. Errors are Node-style: an Error with `code` ('EBUSY', 'ENOENT', ...),
 * a negative `errno` and the `syscall` that failed. Promises come back from calls that may wait
 * in the kernel; they run on a thread, never on the event loop.
 */
export interface NativeBinding {
  /** fallocate(PUNCH_HOLE | KEEP_SIZE); false when the file system does not support it. */
  punchHole(fd: number, offset: number, length: number): boolean;
  /**
   * preadv2(RWF_NOWAIT): reads into `buffer` at `position` only what the page cache holds, never
   * waiting for the device. Returns the bytes read (possibly fewer than asked; 0 at end of file),
   * -1 when nothing is cached, -2 when the file system cannot read without waiting.
   */
  readCached(fd: number, buffer: Uint8Array, position: number): number;
  /**
   * setsockopt(SO_SNDBUF): asks for a send buffer of `bytes` on a socket; returns what the kernel
   * granted (twice the request, capped by net.core.wmem_max), or -1 when fd is not a socket.
   */
  setSendBuffer(fd: number, bytes: number): number;
  /** lseek(SEEK_DATA): the first data offset at or after `offset`, or -1 when only a hole follows. */
  seekData(fd: number, offset: number): number;
  /** lseek(SEEK_HOLE): the first hole at or after `offset` (the end of file counts), or -1 past it. */
  seekHole(fd: number, offset: number): number;
  /**
   * An open-file-description lock on the whole file (F_OFD_SETLK), exclusive or shared, without
   * waiting: false when another open file holds a conflicting lock, even in this process. Released
   * when the last descriptor of this open file closes (also when the process dies).
   */
  lock(fd: number, exclusive: boolean): boolean;
  /** socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC): two connected ends. */
  socketpair(): [number, number];
  /**
   * prctl(PR_SET_IO_FLUSHER) for the calling thread: it serves a block device, so its memory
   * allocations must not wait on writeback. false when the kernel or our privileges do not allow it.
   */
  setIoFlusher(): boolean;
  /** Whether the kernel has the "nbd" generic-netlink family (the nbd module is loaded). */
  nbdNetlinkAvailable(): Promise<boolean>;
  /** NBD_CMD_CONNECT; resolves with the device index the kernel used. */
  nbdConnect(options: NbdConnectOptions): Promise<number>;
  /** NBD_CMD_DISCONNECT: the kernel sends NBD_CMD_DISC on each socket and shuts them down. */
  nbdDisconnect(index: number): Promise<void>;
  /**
   * The ioctl fallback: configures the device and runs NBD_DO_IT on a thread of its own.
   * Resolves once the device runs; `onEnd` is called when NBD_DO_IT returns (null, or its error).
   */
  nbdIoctlConnect(options: NbdIoctlOptions, onEnd: (err: NodeJS.ErrnoException | null) => void): Promise<void>;
  /** NBD_DISCONNECT on the device (the serving thread then clears its sockets). */
  nbdIoctlDisconnect(device: string): Promise<void>;
  /**
   * Seals `count` blocks laid end to end in `data` on the thread pool (format/frames.ts says
   * what goes where); resolves with the bytes written to `packed`. Absent from an addon built
   * before format version 2.
   */
  sealFrames?(data: Buffer, count: number, blockSize: number, packed: Buffer, codes: Uint16Array, lengths: Uint32Array, digests: Buffer): Promise<number>;
  /** Decodes the lz4 block `src` into `dst`: the bytes decoded, or -1 when it does not decode within dst. */
  decodeFrame?(src: Uint8Array, dst: Uint8Array): number;
}

/**
 * Where node-gyp puts the addon. COWDISK_NATIVE_ADDON names another file, for a package that
 * installs the addon elsewhere (and for the test of what happens when it is missing).
 */
const BINDING_PATH =
  process.env.COWDISK_NATIVE_ADDON ||
  fileURLToPath(new URL('../native/build/Release/cowdisk_native.node', import.meta.url));

let loaded: NativeBinding | null | undefined;
let failure: string | undefined;

export function native(): NativeBinding | null {
  if (loaded !== undefined) return loaded;
  try {
    loaded = createRequire(import.meta.url)(BINDING_PATH) as NativeBinding;
  } catch (err) {
    loaded = null;
    failure = `the native addon is not built (${BINDING_PATH}: ${(err as Error).message.split('\n')[0]}); run \`npm run setup\``;
  }
  return loaded;
}

/** Why `native()` returned null, as a sentence for an error message. */
export function nativeUnavailableReason(): string | undefined {
  native();
  return failure;
}
