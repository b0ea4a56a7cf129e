/**
 * The kernel's nbd driver, reached through the native addon, and what its refusals mean.
 *
 * Two interfaces reach the same driver. Generic netlink (Linux 4.12+) is preferred: one CONNECT
 * message configures and starts the device and returns, and without an index the kernel picks a
 * free device atomically. The ioctls are the fallback for kernels without the netlink family;
 * their NBD_DO_IT blocks for the device's lifetime, so the addon runs it on a thread of its own.
 * Both leave the kernel holding its own reference to each socket, so the caller closes its copy.
 *
 * Disconnecting is the same from any process: the kernel sends NBD_CMD_DISC down every socket and
 * shuts them down, and the serving process sees its connections end. Before that, `flushDevice`
 * writes the block device's dirty pages and asks the server for a FLUSH, and refuses (unless
 * forced) when the device is mounted or held open exclusively: disconnecting under a mounted file
 * system loses whatever it had not written.
 */
import { constants } from 'node:fs';
import { existsSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { CowdiskError, ErrorCode } from '../errors.js';
import { native, nativeUnavailableReason, type NativeBinding, type NbdGeometry } from '../native.js';
import { devicePath } from './devices.js';

export type KernelInterface = 'netlink' | 'ioctl';

export interface KernelConnectOptions {
  /** Device index; without it the kernel (netlink) or sysfs (ioctl) picks a free one. */
  index: number | undefined;
  sockets: number[];
  sizeBytes: number;
  /** Logical sector size, 512 to the page size. */
  sectorSize: number;
  /** NBD transmission flags, as a handshake would have sent them. */
  flags: number;
  /** Seconds before a request fails; undefined: as long as it takes, with one socket (see attach.ts). */
  timeout: number | undefined;
  /** Shown in /sys/block/nbdN/backend. */
  backend: string;
}

export interface KernelConnection {
  index: number;
  kernelInterface: KernelInterface;
  /** Resolves when the kernel has let go of the device (ioctl: NBD_DO_IT returned, with its error). */
  released: Promise<NodeJS.ErrnoException | null>;
}

/** The addon, or NO_NATIVE saying why it is missing. */
export function requireNative(): NativeBinding {
  const binding = native();
  if (!binding) {
    throw new CowdiskError(
      ErrorCode.NO_NATIVE,
      `attaching to (and detaching from) the kernel's nbd driver needs cowdisk's native addon, and ${nativeUnavailableReason()}. ` +
        'It needs g++, make and python3 to build (`npm run build:native`); every other command works without it.',
    );
  }
  return binding;
}

/** NOT_ROOT unless this process is root: nbd devices are configured with CAP_SYS_ADMIN. */
export function requireRoot(doing: string): void {
  if (process.getuid?.() !== 0) {
    throw new CowdiskError(ErrorCode.NOT_ROOT, `${doing} needs root (the kernel asks for CAP_SYS_ADMIN); run it with sudo.`);
  }
}

export function noDriverError(): CowdiskError {
  return new CowdiskError(
    ErrorCode.NO_NBD_DRIVER,
    "this kernel has no nbd driver loaded (no \"nbd\" netlink family, no /sys/module/nbd). Load it with `modprobe nbd` " +
      '(`modprobe nbd nbds_max=32` for more devices). Where the kernel has no nbd module at all, FUSE and a loop device ' +
      'reach the same image: `cowdisk serve IMAGE --socket /run/img.sock &`, `mkdir -p /mnt/img && nbdfuse /mnt/img ' +
      '--unix /run/img.sock &`, then `losetup -f --show /mnt/img/nbd` prints a /dev/loopN for it.',
  );
}

/** Which interface reaches the driver: netlink when it can, else the ioctls; NO_NBD_DRIVER when neither. */
export async function kernelInterface(binding: NativeBinding, prefer?: KernelInterface): Promise<KernelInterface> {
  if (await binding.nbdNetlinkAvailable()) return prefer ?? 'netlink';
  if (existsSync('/sys/module/nbd') || existsSync('/dev/nbd0')) return 'ioctl';
  throw noDriverError();
}

/** Turns an errno from the addon into the CowdiskError a person can act on. */
export function kernelError(err: unknown, device: string, doing: string): CowdiskError {
  if (err instanceof CowdiskError) return err;
  const e = err as NodeJS.ErrnoException;
  switch (e?.code) {
    case 'EPERM':
    case 'EACCES':
      return new CowdiskError(ErrorCode.NOT_ROOT, `${doing} ${device} needs root (CAP_SYS_ADMIN); run it with sudo.`, { cause: err });
    case 'EBUSY':
      return new CowdiskError(
        ErrorCode.DEVICE_BUSY,
        `${device} is already in use; name a free device, or leave DEVICE out to take the first free one (\`cowdisk devices\` lists them).`,
        { path: device, cause: err },
      );
    case 'ENOENT':
      if (e.syscall?.startsWith('netlink')) return noDriverError();
      return new CowdiskError(
        ErrorCode.NOT_FOUND,
        `${device} does not exist: the driver was loaded with fewer devices (\`modprobe -r nbd && modprobe nbd nbds_max=N\`), or name a lower one.`,
        { path: device, cause: err },
      );
    default:
      return new CowdiskError(ErrorCode.IO, `${doing} ${device} failed (${e?.message ?? String(err)}).`, { path: device, cause: err });
  }
}

/** Hands the sockets to the driver and starts the device. */
export async function connectKernel(
  binding: NativeBinding,
  how: KernelInterface,
  options: KernelConnectOptions,
): Promise<KernelConnection> {
  const target = options.index === undefined ? 'a free nbd device' : devicePath(options.index);
  const geometry: NbdGeometry = {
    sockets: options.sockets,
    sizeBytes: options.sizeBytes,
    blockSize: options.sectorSize,
    serverFlags: options.flags,
    timeout: options.timeout,
  };
  try {
    if (how === 'netlink') {
      const index = await binding.nbdConnect({ ...geometry, index: options.index, backend: options.backend });
      return { index, kernelInterface: how, released: Promise.resolve(null) };
    }
    if (options.index === undefined) throw new Error('the ioctl interface needs a device index');
    let release: (err: NodeJS.ErrnoException | null) => void = () => {};
    const released = new Promise<NodeJS.ErrnoException | null>((resolve) => (release = resolve));
    await binding.nbdIoctlConnect({ ...geometry, device: devicePath(options.index) }, (err) => release(err));
    return { index: options.index, kernelInterface: how, released };
  } catch (err) {
    throw kernelError(err, target, 'connecting');
  }
}

/**
 * Flushes what the kernel holds for the device: its dirty pages, then a FLUSH to the server.
 * Unless `force`, the device is opened O_EXCL, which the kernel refuses with EBUSY while a file
 * system is mounted on it (or another program holds it exclusively): that is DEVICE_BUSY.
 */
export async function flushDevice(index: number, force: boolean): Promise<void> {
  const device = devicePath(index);
  let handle;
  try {
    handle = await open(device, constants.O_RDONLY | (force ? 0 : constants.O_EXCL));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EBUSY') {
      throw new CowdiskError(
        ErrorCode.DEVICE_BUSY,
        `${device} is mounted or held open; unmount it first (\`umount ${device}\`), or force the disconnect and lose what it had not written.`,
        { path: device, cause: err },
      );
    }
    throw kernelError(err, device, 'opening');
  }
  try {
    await handle.sync();
  } catch (err) {
    if (!force) throw kernelError(err, device, 'flushing');
  } finally {
    await handle.close();
  }
}

/** Asks the driver to disconnect the device (through netlink when it has the family). */
export async function disconnectKernel(binding: NativeBinding, index: number): Promise<void> {
  const device = devicePath(index);
  try {
    if (await binding.nbdNetlinkAvailable()) await binding.nbdDisconnect(index);
    else await binding.nbdIoctlDisconnect(device);
  } catch (err) {
    throw kernelError(err, device, 'disconnecting');
  }
}
