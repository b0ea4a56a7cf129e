/**
 * A real Linux kernel for tests: boots Debian's kernel under QEMU (software emulation, TCG),
 * runs one shell script in it as root, and returns what the script printed and its exit code.
 * This is how cowdisk's tests reach the kernel's nbd driver (/dev/nbd0..15), which the host's
 * own kernel does not have.
 *
 * ## API (for test/vm/*.test.ts)
 *
 *   import { runInVm, REPO_ROOT, GUEST_FORWARD_ADDRESS, GUEST_FORWARD_PORT } from './vm.js';
 *   const r = await runInVm({
 *     runDir,                 // optional: a host directory shared writable with the guest, at the
 *                             //   SAME absolute path inside; the script runs there (cwd).
 *                             //   Omitted: a temporary one, removed afterwards.
 *     script: 'modprobe nbd\nnbd-client "$VM_FORWARD_HOST" "$VM_FORWARD_PORT" /dev/nbd0 -N x\n...',
 *     forward: { to: { host: '127.0.0.1', port } },   // or { to: { socket: '/path/nbd.sock' } };
 *                             //   optional guestPort (default GUEST_FORWARD_PORT = 10809)
 *     env: { NAME: 'value' }, // exported to the script
 *     timeoutMs: 240_000, memoryMiB: 1024, cpus: 1,  // the defaults
 *   });
 *   r.exitCode, r.output      // the script's exit code and its stdout+stderr
 *   r.bootMs, r.totalMs       // QEMU start -> script start, QEMU start -> QEMU gone (host clock;
 *                             //   printed with the guest's uptime at script start, for figures)
 *   r.consoleLog              // the serial console (kernel messages, then the output again)
 *
 * The script runs as root under `bash` with `set -euo pipefail` already on, PATH as root's, HOME
 * and TMPDIR = /tmp, and in its environment VM_RUN_DIR, COWDISK (the command that runs this
 * repository's CLI with the host's node: `$COWDISK attach img /dev/nbd0`; needs dist/ built,
 * see REPO_ROOT) and, when `forward` is given, VM_FORWARD_HOST / VM_FORWARD_PORT.
 * The guest sees the HOST'S OWN FILESYSTEM read-only at `/`: the host's node, modprobe,
 * mkfs.ext4, nbd-client and this repository at its host path (shared on its own, read-only, so
 * that a checkout under /tmp is there too). /tmp, /run, /dev/shm are fresh tmpfs in the guest;
 * the only writable place the host sees afterwards is `runDir`. Kernel
 * modules load with plain `modprobe` (`modprobe nbd` gives /dev/nbd0..15).
 * Networking is QEMU's user mode with `restrict=on`: the guest reaches nothing but the one
 * forward, a TCP address (GUEST_FORWARD_ADDRESS:guestPort) whose every connection is spliced to
 * the given host loopback port or Unix socket (by test/vm/guestfwd-bridge.mjs).
 *
 * A script that fails is a normal result (check exitCode). runInVm throws, with the tail of the
 * console, when the VM cannot start, the guest dies before the script finishes, or the timeout
 * passes (QEMU is then killed by its PID). It always removes its temporary files. A missing
 * tool throws an Error naming the Debian package to install: qemu-system-x86, linux-image-amd64,
 * busybox-static (`npm run setup` installs them). Files the script leaves in runDir are owned
 * by root; each run keeps its control files (script, output, console.log) in runDir/.vm-XXXXXX.
 * The writable share is 9p with cache=none: reads, writes and fsync work on it; fallocate (also
 * punch-hole) fails with EOPNOTSUPP; POSIX locks are enforced only among guest processes (the
 * host does not see them) and flock is emulated with them, so lock tests fit the guest's /tmp.
 * Inode numbers and st_dev differ between the two sides (9p remaps them; Linux adds 2 to every
 * 9p inode even without remapping), while sizes and nanosecond mtimes agree: a fingerprint made
 * of inode numbers (a raw parent's identity) does not carry across, a content digest does.
 *
 * ## How it boots
 * initramfs.ts builds a tiny initramfs (static busybox + the virtio / 9p / virtio-net modules
 * and their dependencies from modules.dep) per run. Stage 1 (guest-init.sh) mounts the host's /
 * over virtio-9p, switch_root's into it and runs stage 2 (guest-run.sh) with the host's /bin/sh
 * as PID 1; switch_root rather than chroot so the kernel's own module loader (request_module,
 * e.g. for ext4 on mount) finds the host's /sbin/modprobe and /lib/modules. Stage 2 runs the
 * script, writes the exit code into the share and powers off. The kernel boots uncompressed
 * through its PVH entry when it can (vmlinux.ts), which saves about 3 s of TCG time per boot.
 * /dev/kvm is not used: it is a nested hypervisor here that cannot run a stock kernel.
 */
import { spawn } from 'node:child_process';
import {
  accessSync, closeSync, constants, createWriteStream, existsSync, openSync, readdirSync, readSync,
} from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildInitramfs, shellQuote } from './initramfs.js';
import { extractVmlinux } from './vmlinux.js';

/** The address the guest connects to for `forward` (QEMU's user-mode subnet is 10.0.2.0/24). */
export const GUEST_FORWARD_ADDRESS = '10.0.2.100';
/** The default forwarded port: NBD's IANA port. */
export const GUEST_FORWARD_PORT = 10809;

export interface VmForward {
  guestPort?: number;
  to: { host: string; port: number } | { socket: string };
}

export interface VmOptions {
  script: string;
  runDir?: string;
  forward?: VmForward;
  env?: Record<string, string>;
  timeoutMs?: number;
  memoryMiB?: number;
  cpus?: number;
  /** Where the timing line goes; console.log by default. */
  log?: (line: string) => void;
}

export interface VmResult {
  exitCode: number;
  output: string;
  bootMs: number;
  totalMs: number;
  /** The guest's uptime when the script started: the kernel's share of bootMs. */
  guestUptimeAtStartS: number;
  /** Path of the serial console log; under runDir, so gone if runDir was temporary. */
  consoleLog: string;
}

const HERE = dirname(fileURLToPath(import.meta.url));
/** This repository's root: the same path in the guest as on the host. */
export const REPO_ROOT = resolve(HERE, '../..');
/** The shell command, valid in the guest and on the host, that runs this repository's CLI. */
export const COWDISK_COMMAND = [process.execPath, join(REPO_ROOT, 'bin', 'cowdisk')].map(shellQuote).join(' ');
const BOOT_MARKER = 'cowdisk-vm: script start';

/** A tool on PATH (or in the sbin directories root uses), or an Error naming its package. */
export function findTool(name: string, debianPackage: string): string {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    const path = join(dir, name);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // not in this directory
    }
  }
  throw new Error(`${name} not found: install the Debian package ${debianPackage} (npm run setup does)`);
}

/** True if the ELF file has no program interpreter, i.e. is statically linked. */
function isStaticElf(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    const header = Buffer.alloc(64);
    readSync(fd, header, 0, 64, 0);
    if (header.readUInt32BE(0) !== 0x7f454c46 || header[4] !== 2) return false;
    const phoff = Number(header.readBigUInt64LE(32));
    const phentsize = header.readUInt16LE(54);
    const phnum = header.readUInt16LE(56);
    const table = Buffer.alloc(phentsize * phnum);
    readSync(fd, table, 0, table.length, phoff);
    for (let i = 0; i < phnum; i++) if (table.readUInt32LE(i * phentsize) === 3 /* PT_INTERP */) return false;
    return true;
  } finally {
    closeSync(fd);
  }
}

export interface VmTools {
  qemu: string;
  kernel: string;
  /** The kernel's build configuration (/boot/config-VERSION). */
  config: string;
  modulesDir: string;
  busybox: string;
}

/** Finds QEMU, the newest kernel that has its module tree, and a static busybox. */
export function vmTools(): VmTools {
  const qemu = findTool('qemu-system-x86_64', 'qemu-system-x86');
  const versions = readdirSync('/boot')
    .filter((f) => f.startsWith('vmlinuz-'))
    .map((f) => f.slice('vmlinuz-'.length))
    .filter((v) => existsSync(`/lib/modules/${v}/modules.dep`))
    .sort((a, b) => b.localeCompare(a, undefined, { numeric: true }));
  const version = versions[0];
  if (!version) {
    throw new Error(
      'no kernel to boot: /boot/vmlinuz-VERSION with /lib/modules/VERSION/modules.dep not found; ' +
        'install the Debian package linux-image-amd64 (npm run setup does)',
    );
  }
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p) && isStaticElf(p));
  if (!busybox) {
    throw new Error(
      'no statically linked busybox (/bin/busybox) for the guest initramfs: install the Debian ' +
        'package busybox-static (npm run setup does)',
    );
  }
  return { qemu, kernel: `/boot/vmlinuz-${version}`, config: `/boot/config-${version}`, modulesDir: `/lib/modules/${version}`, busybox };
}

/** QEMU option values escape a comma by doubling it. */
function qemuValue(value: string): string {
  return value.replace(/,/g, ',,');
}

function netdevArg(forward: VmForward | undefined): string {
  let netdev = 'user,id=net0,restrict=on';
  if (forward) {
    const target = 'socket' in forward.to
      ? ['unix', forward.to.socket]
      : ['tcp', forward.to.host, String(forward.to.port)];
    const cmd = [process.execPath, join(HERE, 'guestfwd-bridge.mjs'), ...target].map(shellQuote).join(' ');
    const port = forward.guestPort ?? GUEST_FORWARD_PORT;
    netdev += `,guestfwd=tcp:${GUEST_FORWARD_ADDRESS}:${port}-cmd:${qemuValue(cmd)}`;
  }
  return netdev;
}

function tail(text: string, lines: number): string {
  return text.split('\n').slice(-lines).join('\n');
}

/** Boots the VM, runs `options.script` in it, and returns its result (see the top of this file). */
export async function runInVm(options: VmOptions): Promise<VmResult> {
  const prepared = performance.now();
  const tools = vmTools();
  const log = options.log ?? ((line: string) => console.log(line));
  const timeoutMs = options.timeoutMs ?? 240_000;
  const ownRunDir = options.runDir === undefined;
  const runDir = resolve(options.runDir ?? (await mkdtemp(join(tmpdir(), 'cowdisk-vm-run-'))));
  const bootDir = await mkdtemp(join(tmpdir(), 'cowdisk-vm-boot-'));
  try {
    const controlDir = await mkdtemp(join(runDir, '.vm-'));
    const consoleLog = join(controlDir, 'console.log');
    const env: Record<string, string> = { ...options.env, VM_RUN_DIR: runDir, COWDISK: COWDISK_COMMAND };
    if (options.forward) {
      env.VM_FORWARD_HOST = GUEST_FORWARD_ADDRESS;
      env.VM_FORWARD_PORT = String(options.forward.guestPort ?? GUEST_FORWARD_PORT);
    }
    const prelude = Object.entries(env).map(([k, v]) => `export ${k}=${shellQuote(v)}\n`).join('');
    await writeFile(join(controlDir, 'script.sh'), `${prelude}set -euo pipefail\n${options.script}\n`);

    const { image } = buildInitramfs({
      modulesDir: tools.modulesDir,
      busybox: tools.busybox,
      init: join(HERE, 'guest-init.sh'),
      env: {
        VM_RUN_DIR: runDir,
        VM_REPO_DIR: REPO_ROOT,
        VM_CONTROL_DIR: controlDir,
        VM_STAGE2: join(HERE, 'guest-run.sh'),
        VM_GUEST_IP: '10.0.2.15',
        // The guest's own deadline (guest-run.sh), for when this process dies before killing QEMU.
        VM_DEADLINE_S: String(Math.ceil(timeoutMs / 1000) + 10),
      },
    });
    const initrd = join(bootDir, 'initramfs.cpio');
    await writeFile(initrd, image);
    const vmlinux = extractVmlinux(tools.kernel, tools.config);
    const kernel = vmlinux ? join(bootDir, 'vmlinux') : tools.kernel;
    if (vmlinux) await writeFile(kernel, vmlinux);

    const args = [
      '-nodefaults', '-nographic', '-no-reboot', '-monitor', 'none', '-serial', 'stdio',
      '-accel', 'tcg', '-cpu', 'max',
      '-m', String(options.memoryMiB ?? 1024), '-smp', String(options.cpus ?? 1),
      '-kernel', kernel, '-initrd', initrd,
      '-append', 'console=ttyS0 panic=-1 quiet',
      '-virtfs', 'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap',
      '-virtfs', `local,path=${qemuValue(runDir)},mount_tag=run,security_model=none,multidevs=remap`,
      // The repository on its own share too: under /tmp (a CI checkout, say) the root share's copy
      // is hidden by the guest's fresh tmpfs.
      '-virtfs', `local,path=${qemuValue(REPO_ROOT)},mount_tag=repo,security_model=none,readonly=on,multidevs=remap`,
      '-netdev', netdevArg(options.forward),
      // romfile= drops the iPXE option ROM: nothing boots from the network, and it saves time.
      '-device', 'virtio-net-pci,netdev=net0,romfile=',
    ];
    const started = performance.now();
    let bootMs = -1;
    let consoleText = '';
    let stderr = '';
    const consoleFile = createWriteStream(consoleLog);
    const qemu = spawn(tools.qemu, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const killQemu = (): void => {
      if (qemu.exitCode === null && qemu.signalCode === null) qemu.kill('SIGKILL');
    };
    process.on('exit', killQemu);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killQemu();
    }, timeoutMs);
    try {
      qemu.stdout.on('data', (chunk: Buffer) => {
        consoleFile.write(chunk);
        consoleText += chunk.toString('latin1');
        if (bootMs < 0 && consoleText.includes(BOOT_MARKER)) bootMs = performance.now() - started;
      });
      qemu.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
      });
      const exit = await new Promise<{ code: number | null; error?: Error }>((done) => {
        qemu.on('error', (error) => done({ code: null, error }));
        qemu.on('close', (code) => done({ code }));
      });
      const totalMs = performance.now() - started;
      await new Promise<void>((done) => consoleFile.end(done));

      const diagnosis = (what: string): Error =>
        new Error(
          `${what}\nQEMU: ${tools.qemu} ${args.join(' ')}\n` +
            (stderr ? `QEMU stderr:\n${tail(stderr, 20)}\n` : '') +
            `serial console (last lines):\n${tail(consoleText, 60)}`,
        );
      if (exit.error) throw diagnosis(`QEMU did not start: ${exit.error.message}`);
      if (timedOut) throw diagnosis(`the VM did not finish within ${timeoutMs} ms and was killed`);
      let exitText: string;
      try {
        exitText = await readFile(join(controlDir, 'exit-code'), 'utf8');
      } catch {
        throw diagnosis(`the VM stopped (QEMU exit ${exit.code}) before the script finished`);
      }
      const output = await readFile(join(controlDir, 'output'), 'utf8');
      const uptime = Number.parseFloat(await readFile(join(controlDir, 'guest-uptime-at-start'), 'utf8'));
      const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
      log(
        `cowdisk-vm: initramfs + kernel prepared in ${seconds(started - prepared)}; QEMU start to script ` +
          `${seconds(bootMs)} (guest kernel uptime ${uptime.toFixed(1)} s); QEMU start to power-off ${seconds(totalMs)}`,
      );
      return { exitCode: Number(exitText.trim()), output, bootMs, totalMs, guestUptimeAtStartS: uptime, consoleLog };
    } finally {
      clearTimeout(timer);
      killQemu();
      process.off('exit', killQemu);
    }
  } finally {
    await rm(bootDir, { recursive: true, force: true });
    if (ownRunDir) await rm(runDir, { recursive: true, force: true });
  }
}
