/**
 * `cowdisk attach IMAGE [DEVICE]`: serve an image as /dev/nbdN from this process, until it is
 * detached. The work is in src/kernel/attach.ts; this file is the command line around it: options,
 * the message, signals, and `--daemon`.
 *
 * Signals: the first SIGINT / SIGTERM detaches cleanly (flush, disconnect, close the image). While
 * the device is mounted that is refused, the reason is printed and the image keeps being served: a
 * second signal forces the disconnect. `cowdisk detach` from another shell ends it the same way.
 * A signal that arrives while attaching is held until the attach is done and then detaches: dying
 * between connecting the kernel and recording the device would leave a connected device that no
 * server answers and no record names. A second signal while attaching exits at once.
 *
 * --daemon: Node cannot fork, so the command starts itself again as a detached process (its own
 * session, no terminal) and waits on an IPC channel until that child reports the device attached
 * (or why it failed). Only then does the parent print and exit, so a script can use the device
 * as soon as `cowdisk attach --daemon` returns, and sees its errors and exit code.
 */
import { spawn } from 'node:child_process';
import { rename, unlink, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Option, type Command } from 'commander';
import { attach, CowdiskError, ErrorCode, ioError, isCowdiskError, openImage, parseDevice, servingFileSystem, warmUpRequestPath, type Attachment } from '../index.js';
import { formatOption, type FormatCliValue } from './format-option.js';
import { printDevices } from './devices.js';
import { parseCount } from './size.js';

interface AttachCliOptions {
  readOnly?: boolean;
  connections: string;
  timeout?: string;
  pollUs: string;
  ioctl?: boolean;
  daemon?: boolean;
  pidFile?: string;
  format?: FormatCliValue;
  list?: boolean;
  daemonChild?: boolean;
}

/** What the daemon child tells its parent over IPC. */
type DaemonReport = { attached: string; line: string } | { error: { code: string; message: string } };

export function register(program: Command): void {
  program
    .command('attach')
    .description("Attach an image to /dev/nbdN through the kernel's nbd driver, served by this process (needs root).")
    .argument('[image]', 'the image: an overlay, a snapshot or a raw file')
    .argument('[device]', '/dev/nbdN to use (default: the first free one)')
    .option('-r, --read-only', 'attach read-only (the kernel refuses writes)')
    .option('-c, --connections <n>', 'sockets between the kernel and the server (more than 1 needs multi-conn)', '1')
    .option('-t, --timeout <seconds>', 'fail a request the server has not answered in this long (default: wait as long as it takes; with more than 1 connection the kernel still gives up after 30 s)')
    .option('--poll-us <n>', 'after answering the kernel, keep polling for its next request up to this many microseconds (adapts; 0 never polls)', '200')
    .option('--ioctl', 'connect through the nbd ioctls instead of netlink (older kernels fall back to them by themselves)')
    .option('-d, --daemon', 'return once attached and keep serving in the background')
    .option('--pid-file <file>', "write the serving process's pid to this file while attached")
    .addOption(formatOption())
    .option('-l, --list', 'show which image is on which device (as `cowdisk devices`) and exit')
    .addOption(new Option('--daemon-child').hideHelp())
    .addHelpText(
      'after',
      `
Needs the kernel's nbd driver: \`modprobe nbd\`. Without it, \`cowdisk serve\` plus nbdfuse and
losetup give a /dev/loopN for the image instead (the error message shows the commands).

Stays in the foreground until Ctrl-C / SIGTERM or \`cowdisk detach DEVICE\`; both flush, disconnect
and close the image cleanly (refused while the device is mounted: unmount it first).

Examples:
  $ sudo cowdisk clone base.cow vm1.cow
  $ sudo cowdisk attach --daemon --pid-file /run/vm1.pid vm1.cow /dev/nbd0
  attached vm1.cow to /dev/nbd0 in 31 ms (read-write, 1 connection, netlink)
  $ sudo mount /dev/nbd0 /mnt/vm1
  ...
  $ sudo umount /mnt/vm1 && sudo cowdisk detach /dev/nbd0`,
    )
    .action(async (image: string | undefined, device: string | undefined, options: AttachCliOptions) => {
      if (options.list) return printDevices({});
      if (!image) throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, 'attach needs an IMAGE (or --list).');
      const request = parseRequest(image, device, options);
      if (options.daemon && !options.daemonChild) return startDaemon();
      if (options.daemonChild) return runDaemonChild(request);
      const attached = await attachImage(request);
      process.stdout.write(`${attached.line}\n`);
      await serveUntilDetached(attached.attachment, request.pidFile, attached.held);
    });
}

/** Catches SIGINT / SIGTERM from the start of an attach until serving takes them over. */
class HeldSignals {
  count = 0;
  private readonly onSignal = (signal: NodeJS.Signals): void => {
    if (++this.count > 1) process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
    process.stderr.write(`cowdisk: ${signal}: detaching as soon as the attach is done; signal again to stop at once\n`);
  };

  constructor() {
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
  }

  /** Stops catching; returns how many signals arrived. */
  release(): number {
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
    return this.count;
  }
}

interface AttachRequest {
  image: string;
  index: number | undefined;
  readOnly: boolean;
  connections: number;
  timeout: number | undefined;
  pollMicros: number;
  ioctl: boolean;
  pidFile: string | undefined;
  format: FormatCliValue;
}

function parseRequest(image: string, device: string | undefined, options: AttachCliOptions): AttachRequest {
  return {
    image: path.resolve(image),
    index: device === undefined ? undefined : parseDevice(device),
    readOnly: options.readOnly ?? false,
    connections: parseCount(options.connections, '--connections', 1),
    timeout: options.timeout === undefined ? undefined : parseCount(options.timeout, '--timeout', 0),
    pollMicros: parseCount(options.pollUs, '--poll-us', 0),
    ioctl: options.ioctl ?? false,
    pidFile: options.pidFile === undefined ? undefined : path.resolve(options.pidFile),
    format: options.format,
  };
}

/**
 * Attaches, catching signals from the start (HeldSignals): the caller hands `held` to
 * serveUntilDetached, which takes them over. On failure they are released here.
 */
async function attachImage(request: AttachRequest): Promise<{ attachment: Attachment; line: string; held: HeldSignals }> {
  const held = new HeldSignals();
  try {
    return { ...(await attachDevice(request)), held };
  } catch (err) {
    held.release();
    throw err;
  }
}

async function attachDevice(request: AttachRequest): Promise<{ attachment: Attachment; line: string }> {
  const started = performance.now();
  // The kernel's first requests (partition scan, the file system's mount) should not wait for V8
  // to compile the request path (bench/warm-up.ts).
  await warmUpRequestPath({ pollMicros: request.pollMicros });
  const attachment = await attach({
    image: request.image,
    openExport: async () => ({
      name: '',
      device: (await openImage(request.image, { fs: servingFileSystem, readOnly: request.readOnly, sharedLock: request.readOnly, format: request.format })).device,
      readOnly: request.readOnly,
    }),
    device: request.index,
    connections: request.connections,
    timeout: request.timeout,
    pollMicros: request.pollMicros,
    kernelInterface: request.ioctl ? 'ioctl' : undefined,
  });
  const ms = Math.round(performance.now() - started);
  const r = attachment.record;
  const what = `${r.readOnly ? 'read-only' : 'read-write'}, ${r.connections} connection${r.connections === 1 ? '' : 's'}, ${r.kernelInterface}`;
  if (request.pidFile) {
    try {
      await writePidFile(request.pidFile);
    } catch (err) {
      // The device is attached already, and nothing would detach it: the caller sees an error and
      // no pid to signal. Undo the attach, so a failure leaves no device and no image behind.
      await attachment.close().catch(() => {});
      throw ioError(err, request.pidFile, 'writing the pid file');
    }
  }
  return { attachment, line: `attached ${path.basename(r.image)} to ${r.device} in ${ms} ms (${what})` };
}

/** Serves until the device is detached, by a signal here or by `cowdisk detach` elsewhere. */
async function serveUntilDetached(attachment: Attachment, pidFile: string | undefined, held: HeldSignals): Promise<void> {
  let signals = 0;
  const onSignal = (): void => {
    signals++;
    attachment.close({ force: signals > 1 }).catch((err: unknown) => {
      const busy = isCowdiskError(err, ErrorCode.DEVICE_BUSY);
      process.stderr.write(`cowdisk: ${(err as Error).message}\n`);
      process.stderr.write(`cowdisk: still serving ${attachment.device}${busy ? '; signal again to force the disconnect' : ''}.\n`);
    });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // Installed before the held ones go, with no await between: no signal finds neither.
  if (held.release() > 0) onSignal();
  try {
    await attachment.ended;
    // Joins a close a signal started, or closes the image after a detach from elsewhere.
    await attachment.close();
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (pidFile) await unlink(pidFile).catch(() => {});
  }
  process.stderr.write(`cowdisk: detached ${attachment.device}; ${attachment.record.image} closed cleanly\n`);
}

async function writePidFile(file: string): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${process.pid}\n`);
  await rename(tmp, file);
}

/**
 * The parent side of --daemon: start the child, relay its report, exit. The child runs this same
 * command line (in the same directory) with --daemon-child right after `attach`, where a later
 * `--` cannot make it an operand, so every option reaches it without being passed on by hand.
 */
async function startDaemon(): Promise<void> {
  const [script, command, ...rest] = process.argv.slice(1);
  const child = spawn(process.execPath, [...process.execArgv, script, command, '--daemon-child', ...rest], {
    detached: true,
    stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
  });
  const report = await new Promise<DaemonReport>((resolve) => {
    child.once('message', (m) => resolve(m as DaemonReport));
    child.once('exit', (code, signal) =>
      resolve({ error: { code: ErrorCode.IO, message: `the background server exited (${signal ?? `code ${code}`}) before attaching.` } }),
    );
  });
  child.removeAllListeners('exit');
  if (child.connected) child.disconnect();
  child.unref();
  if ('error' in report) throw new CowdiskError(report.error.code, report.error.message);
  process.stdout.write(`${report.line}\n`);
}

/** The child side of --daemon: attach, report to the parent, then serve like the foreground. */
async function runDaemonChild(request: AttachRequest): Promise<void> {
  const send = (report: DaemonReport): void => {
    // The parent may be gone (a Ctrl-C while it waited): the report is then for nobody. With a
    // callback a failed send is not an 'error' event, which would kill the process now serving
    // the device and leave the kernel with a device nothing answers.
    if (process.connected) process.send?.(report, undefined, undefined, () => {});
    if (process.connected) process.disconnect();
  };
  let attached;
  try {
    attached = await attachImage(request);
  } catch (err) {
    const e = isCowdiskError(err) ? err : new CowdiskError(ErrorCode.IO, String((err as Error)?.message ?? err));
    send({ error: { code: e.code, message: e.message } });
    throw err;
  }
  send({ attached: attached.attachment.device, line: attached.line });
  await serveUntilDetached(attached.attachment, request.pidFile, attached.held);
}
