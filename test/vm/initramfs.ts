/**
 * The guest's initramfs, built at test time from what this machine has installed; nothing binary
 * is committed. It holds exactly what the guest needs before it can reach the host's root over
 * virtio-9p: a static busybox (shell, insmod, mount, ip, switch_root), the kernel modules for
 * virtio-pci, virtio-net and 9p together with their dependencies, `/dev/console`, the stage-1
 * init script (test/vm/guest-init.sh) and a small `/vm.env` that tells it what to do.
 *
 * Dependencies are resolved from the kernel's own `modules.dep` (depth first, so every module is
 * loaded after the ones it needs) and modules built into the kernel (`modules.builtin`) are
 * skipped, so a kernel update that moves, splits or builds in a driver keeps working. Modules
 * compressed by the distribution (.ko.xz, .ko.zst, .ko.gz) are stored decompressed, because
 * busybox's insmod is not guaranteed to read them.
 *
 * The archive is the "newc" cpio format the kernel unpacks (Documentation/driver-api/
 * early-userspace/buffer-format.rst), written here directly: a 110-byte ASCII header per entry,
 * name and data each padded to 4 bytes, closed by a `TRAILER!!!` entry.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { gunzipSync } from 'node:zlib';

/** What the guest must load to see its 9p shares and its network card. */
export const GUEST_MODULES = ['virtio_pci', 'virtio_net', '9pnet_virtio', '9p'];

/** Module names are compared the way modprobe does: '-' and '_' are the same character. */
function moduleName(path: string): string {
  return basename(path).replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_');
}

export interface ModuleFile {
  name: string;
  /** Absolute path of the (possibly compressed) module file on the host. */
  path: string;
}

/**
 * The modules to insmod, in load order, for `wanted` on the kernel whose module tree is
 * `modulesDir` (/lib/modules/VERSION). Throws if one is neither a module nor built in.
 */
export function resolveModules(modulesDir: string, wanted: readonly string[]): ModuleFile[] {
  const deps = new Map<string, { path: string; deps: string[] }>();
  for (const line of readFileSync(join(modulesDir, 'modules.dep'), 'utf8').split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const path = line.slice(0, colon);
    const needs = line.slice(colon + 1).trim().split(/\s+/).filter(Boolean).map(moduleName);
    deps.set(moduleName(path), { path: join(modulesDir, path), deps: needs });
  }
  const builtin = new Set(
    readFileSync(join(modulesDir, 'modules.builtin'), 'utf8').split('\n').filter(Boolean).map(moduleName),
  );

  const order: ModuleFile[] = [];
  const placed = new Set<string>();
  const visit = (raw: string, chain: string[]): void => {
    const name = raw.replace(/-/g, '_');
    if (placed.has(name) || builtin.has(name)) return;
    const entry = deps.get(name);
    if (!entry) {
      throw new Error(
        `kernel module ${name} (needed by ${chain.join(' <- ') || 'the VM'}) is neither in ` +
          `${modulesDir}/modules.dep nor built in; the installed linux-image-amd64 looks incomplete`,
      );
    }
    for (const dep of entry.deps) visit(dep, [name, ...chain]);
    placed.add(name);
    order.push({ name, path: entry.path });
  };
  for (const name of wanted) visit(name, []);
  return order;
}

/** The module's ELF bytes, decompressed if the distribution compressed it. */
function moduleBytes(path: string): Buffer {
  if (path.endsWith('.gz')) return gunzipSync(readFileSync(path));
  if (path.endsWith('.xz')) return execFileSync('xz', ['-dc', path], { maxBuffer: 1 << 28 });
  if (path.endsWith('.zst')) return execFileSync('zstd', ['-dcq', path], { maxBuffer: 1 << 28 });
  return readFileSync(path);
}

type Entry =
  | { kind: 'dir'; path: string }
  | { kind: 'file'; path: string; data: Buffer; mode: number }
  | { kind: 'chardev'; path: string; major: number; minor: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFCHR = 0o020000;

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/** Serialises entries as a newc cpio archive (uncompressed: the kernel reads it as is). */
function cpioNewc(entries: Entry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const push = (name: string, mode: number, data: Buffer, rdevMajor = 0, rdevMinor = 0): void => {
    const nameBytes = Buffer.from(`${name}\0`);
    const fields = [
      ino++, mode, 0, 0, mode & S_IFDIR ? 2 : 1, 0, data.length, 0, 0, rdevMajor, rdevMinor,
      nameBytes.length, 0,
    ];
    const header = Buffer.from(`070701${fields.map((f) => f.toString(16).padStart(8, '0')).join('')}`);
    parts.push(header, nameBytes, Buffer.alloc(pad4(header.length + nameBytes.length)));
    parts.push(data, Buffer.alloc(pad4(data.length)));
  };
  for (const e of entries) {
    const name = e.path.replace(/^\/+/, '');
    if (e.kind === 'dir') push(name, S_IFDIR | 0o755, Buffer.alloc(0));
    else if (e.kind === 'file') push(name, S_IFREG | e.mode, e.data);
    else push(name, S_IFCHR | 0o600, Buffer.alloc(0), e.major, e.minor);
  }
  push('TRAILER!!!', 0, Buffer.alloc(0));
  return Buffer.concat(parts);
}

export interface InitramfsSpec {
  /** /lib/modules/VERSION of the kernel that will boot. */
  modulesDir: string;
  /** A statically linked busybox. */
  busybox: string;
  /** The stage-1 init script (runs as PID 1 under busybox sh). */
  init: string;
  /** Shell assignments the init script sources from /vm.env. */
  env: Record<string, string>;
}

/** Shell-quotes a value for a `NAME='value'` line. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** Builds the initramfs image and returns it with the module load order it contains. */
export function buildInitramfs(spec: InitramfsSpec): { image: Buffer; modules: string[] } {
  const modules = resolveModules(spec.modulesDir, GUEST_MODULES);
  const env = { ...spec.env, VM_MODULES: modules.map((m) => m.name).join(' ') };
  const entries: Entry[] = [
    ...['/bin', '/dev', '/proc', '/sys', '/newroot', '/lib', '/lib/modules'].map(
      (path): Entry => ({ kind: 'dir', path }),
    ),
    { kind: 'chardev', path: '/dev/console', major: 5, minor: 1 },
    { kind: 'file', path: '/bin/busybox', data: readFileSync(spec.busybox), mode: 0o755 },
    { kind: 'file', path: '/init', data: readFileSync(spec.init), mode: 0o755 },
    {
      kind: 'file',
      path: '/vm.env',
      data: Buffer.from(Object.entries(env).map(([k, v]) => `${k}=${shellQuote(v)}\n`).join('')),
      mode: 0o644,
    },
    ...modules.map((m): Entry => ({
      kind: 'file', path: `/lib/modules/${m.name}.ko`, data: moduleBytes(m.path), mode: 0o644,
    })),
  ];
  return { image: cpioNewc(entries), modules: modules.map((m) => m.name) };
}
