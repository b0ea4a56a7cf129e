/**
 * `cowdisk attach` / `detach` against the real kernel nbd driver. A Debian kernel boots under QEMU
 * (test/vm/vm.ts) with the host's root shared read-only, so the guest runs this repository's own
 * CLI. In the guest: clone a base that holds an ext4 file system, attach the clone to /dev/nbd0
 * (netlink, --daemon), mount it, check the base's files, write new ones, unmount, detach; attach
 * again read-only (through the ioctl interface, in the foreground, ended by `detach` from another
 * shell) and check everything is there and writes are refused; meanwhile a second ioctl connect to
 * that running device is refused and leaves it as it was. The documented failures happen on
 * the way: a busy device, an image attached twice, detaching a mounted device and a free one, a
 * pid file that cannot be written (the attach is undone), and an orphan whose server was killed.
 * Back on the host: the base file is byte for byte what it was, and the new files are in the
 * overlay (read through the engine, checked with e2fsck and debugfs).
 *
 * The base is a sealed snapshot (`import`ed on the host), not the raw file itself: a raw parent is
 * recognised by size, inode and mtime, and 9p shows the guest other inode numbers than the host
 * sees, so a chain made on one side would be refused on the other. A snapshot is recognised by its
 * layer digest, which survives any mount.
 *
 * It prints the time from `cowdisk attach` to a readable /dev/nbd0, a figure for the README (under
 * software emulation it is mostly Node's start-up, twice for --daemon), not an assertion.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { importRaw } from '../../src/ops/import.js';
import { openImage } from '../../src/image/open.js';
import { COWDISK_COMMAND, REPO_ROOT, findTool, runInVm } from './vm.js';

const BASE_BYTES = 64 * 1024 * 1024;
const GREETING = `written through /dev/nbd0 by cowdisk attach at ${new Date().toISOString()}\n`;

/**
 * Run in the guest with a device as its argument: connects a socketpair to that device through the
 * addon's ioctl path and prints how the kernel refused it (exits 1 if it was not refused).
 */
const INTRUDER = `
  const { native } = await import(${JSON.stringify(join(REPO_ROOT, 'dist', 'native.js'))});
  const binding = native();
  const [kernelEnd] = binding.socketpair();
  try {
    await binding.nbdIoctlConnect({ device: process.argv[1], sockets: [kernelEnd], sizeBytes: 1 << 20, blockSize: 4096, serverFlags: 1 }, () => {});
    console.log('second ioctl connect: UNEXPECTED SUCCESS');
    process.exit(1);
  } catch (err) {
    console.log('second ioctl connect refused: ' + err.code + ', ' + err.syscall);
  }
`;

function sha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/** The virtual disk an image presents, read through the engine into a flat file. */
async function flatten(image: string, out: string): Promise<{ overlayBytes: number }> {
  const device = (await openImage(image, { readOnly: true })).device;
  try {
    const flat = Buffer.alloc(device.size);
    await device.read(flat, 0);
    writeFileSync(out, flat);
    const extents = await device.extents(0, device.size);
    const overlayBytes = extents.filter((e) => e.layer === 0 && e.kind === 'data').reduce((n, e) => n + e.length, 0);
    return { overlayBytes };
  } finally {
    await device.close();
  }
}

test('attach serves a clone as /dev/nbd0 to the kernel; files written land in the overlay, the base is untouched', async () => {
  const tools = {
    modprobe: findTool('modprobe', 'kmod'),
    mkfs: findTool('mkfs.ext4', 'e2fsprogs'),
    e2fsck: findTool('e2fsck', 'e2fsprogs'),
    debugfs: findTool('debugfs', 'e2fsprogs'),
  };
  const runDir = mkdtempSync(join(tmpdir(), 'cowdisk-attach-vm-'));
  try {
    // The base: an ext4 file system made from a directory, no mount needed.
    const tree = join(runDir, 'tree');
    mkdirSync(tree);
    writeFileSync(join(tree, 'hello.txt'), 'hello from the base image\n');
    writeFileSync(join(tree, 'base-data.bin'), randomBytes(2 * 1024 * 1024 + 17));
    const raw = join(runDir, 'base.raw');
    writeFileSync(raw, '');
    truncateSync(raw, BASE_BYTES);
    execFileSync(tools.mkfs, ['-q', '-d', tree, raw]);
    const base = join(runDir, 'base.cow');
    await importRaw(raw, base);
    const baseDigest = sha256(base);
    const payload = randomBytes(3 * 1024 * 1024 + 123);
    writeFileSync(join(runDir, 'payload.bin'), payload);

    const result = await runInVm({
      runDir,
      env: { GREETING, INTRUDER },
      timeoutMs: 300_000,
      script: `
        cowdisk() { ${COWDISK_COMMAND} "$@"; }
        # Runs a command that must fail; prints its stderr (the host checks the error codes).
        fails() { if "$@" 2> fail.err; then echo "UNEXPECTED SUCCESS: $*"; exit 1; fi; echo "failed as expected: $*"; cat fail.err; }
        ${tools.modprobe} nbd
        cowdisk clone base.cow vm1.cow

        start=$(date +%s%N)
        cowdisk attach --daemon --pid-file vm1.pid vm1.cow /dev/nbd0
        dd if=/dev/nbd0 of=/dev/null bs=4096 count=1 status=none
        echo "attach-to-readable-ms=$(( ($(date +%s%N) - start) / 1000000 ))"
        cowdisk devices --json > devices.json

        mkdir /tmp/mnt
        mount /dev/nbd0 /tmp/mnt
        cmp /tmp/mnt/hello.txt tree/hello.txt
        cmp /tmp/mnt/base-data.bin tree/base-data.bin
        mkdir /tmp/mnt/new
        printf %s "$GREETING" > greeting.txt
        cp greeting.txt /tmp/mnt/new/greeting.txt
        cp payload.bin /tmp/mnt/new/payload.bin
        fails cowdisk detach /dev/nbd0
        fails cowdisk attach base.cow /dev/nbd0
        fails cowdisk attach vm1.cow /dev/nbd1
        umount /tmp/mnt
        cowdisk detach /dev/nbd0
        test ! -e vm1.pid && echo "pid file removed"
        fails cowdisk detach /dev/nbd3
        # The pid file cannot be written after the device is connected: the attach is undone.
        fails cowdisk attach --daemon --pid-file no-such-dir/vm1.pid vm1.cow /dev/nbd3
        test ! -e /sys/block/nbd3/pid
        test -z "$(ls /run/cowdisk)"
        echo "nbd3 left free when the pid file failed"

        cowdisk attach --read-only --ioctl vm1.cow /dev/nbd1 > ro.out 2> ro.err &
        server=$!
        until grep -q attached ro.out; do kill -0 $server; sleep 0.05; done
        # A second ioctl connect to the running device, as two \`attach --ioctl\` racing for the same
        # free device make: refused, and the device keeps its size and keeps running.
        ro_bytes=$(blockdev --getsize64 /dev/nbd1)
        ${process.execPath} --input-type=module -e "$INTRUDER" /dev/nbd1
        test "$(blockdev --getsize64 /dev/nbd1)" = "$ro_bytes"
        test -e /sys/block/nbd1/pid
        echo "nbd1 kept running at $ro_bytes bytes"
        mount -o ro /dev/nbd1 /tmp/mnt
        cmp /tmp/mnt/new/greeting.txt greeting.txt
        cmp /tmp/mnt/new/payload.bin payload.bin
        cmp /tmp/mnt/base-data.bin tree/base-data.bin
        umount /tmp/mnt
        fails dd if=/dev/zero of=/dev/nbd1 bs=4096 count=1 oflag=direct status=none
        cowdisk detach nbd1
        wait $server
        echo "foreground attach exited with $?"
        cat ro.out ro.err

        # SIGTERM as soon as the kernel has the device, maybe before the attach has recorded it:
        # held until the attach is done, then a clean detach; never a device left behind.
        ${COWDISK_COMMAND} attach --read-only vm1.cow /dev/nbd3 > early.out 2>&1 &
        early=$!
        until [ -e /sys/block/nbd3/pid ]; do kill -0 $early; done
        kill -TERM $early
        wait $early
        echo "attach signalled early exited with $?"
        test ! -e /sys/block/nbd3/pid
        test -z "$(ls /run/cowdisk)"
        echo "nbd3 left free after an early signal"

        # The --daemon parent dies while it waits for the report (Ctrl-C at its terminal): the
        # child attaches all the same, with nobody to report to, and keeps serving.
        ${COWDISK_COMMAND} attach --daemon --read-only vm1.cow /dev/nbd3 > /dev/null 2>&1 &
        parent=$!
        child=
        while [ -z "$child" ]; do kill -0 $parent; child=$(awk -v p=$parent '$4 == p { print $1 }' /proc/[0-9]*/stat 2> /dev/null); done
        kill -9 $parent
        wait $parent || true
        for i in $(seq 1 600); do [ -e /sys/block/nbd3/pid ] && break; sleep 0.1; done
        sleep 1
        kill -0 $child
        dd if=/dev/nbd3 of=/dev/null bs=4096 count=1 status=none
        cowdisk detach /dev/nbd3
        echo "the daemon child kept serving without its parent"

        # An orphan: the serving process is killed, the kernel keeps the device configured.
        ${COWDISK_COMMAND} attach --read-only vm1.cow /dev/nbd2 > orphan.out 2>&1 &
        orphan=$!
        until grep -q attached orphan.out; do kill -0 $orphan; sleep 0.05; done
        kill -9 $orphan
        # Gone, or a zombie nobody reaped yet: either way it serves nothing.
        while [ -e /proc/$orphan ] && ! grep -q ') Z' /proc/$orphan/stat; do sleep 0.05; done
        cowdisk devices --json > orphan.json
        cowdisk detach /dev/nbd2
        for i in 0 1 2; do test ! -e /sys/block/nbd$i/pid; done
        test -z "$(ls /run/cowdisk)" && echo "no device attached, no record left"
        echo guest-done
      `,
    });
    expect(result.exitCode, result.output).toBe(0);
    const out = result.output;
    expect(out).toContain('guest-done');
    const readable = /attach-to-readable-ms=(\d+)/.exec(out);
    expect(readable, out).not.toBeNull();
    console.log(`cowdisk attach: ${readable![1]} ms from \`cowdisk attach --daemon\` to a readable /dev/nbd0 (guest under TCG)`);

    // What `devices` said while attached, and after everything was detached.
    const attached = JSON.parse(readFileSync(join(runDir, 'devices.json'), 'utf8'));
    expect(attached.devices).toMatchObject([{ device: '/dev/nbd0', state: 'attached', readOnly: false, image: join(runDir, 'vm1.cow') }]);
    const orphan = JSON.parse(readFileSync(join(runDir, 'orphan.json'), 'utf8'));
    expect(orphan.devices).toMatchObject([{ device: '/dev/nbd2', state: 'orphaned', readOnly: true }]);
    expect(out).toContain('no device attached, no record left');

    // The documented failures, in the order the script caused them.
    const failures = out.split('failed as expected: ').slice(1);
    expect(failures).toHaveLength(6);
    expect(failures[0]).toMatch(/^cowdisk detach \/dev\/nbd0[\s\S]*mounted or held open[\s\S]*COWDISK_E_DEVICE_BUSY/);
    expect(failures[1]).toMatch(/^cowdisk attach base\.cow \/dev\/nbd0[\s\S]*already in use[\s\S]*COWDISK_E_DEVICE_BUSY/);
    expect(failures[2]).toMatch(/^cowdisk attach vm1\.cow \/dev\/nbd1[\s\S]*already attached to \/dev\/nbd0[\s\S]*COWDISK_E_LOCKED/);
    expect(failures[3]).toMatch(/^cowdisk detach \/dev\/nbd3[\s\S]*has nothing attached[\s\S]*COWDISK_E_NOT_ATTACHED/);
    expect(failures[4]).toMatch(/^cowdisk attach --daemon --pid-file no-such-dir\/vm1\.pid [\s\S]*no such file[\s\S]*COWDISK_E_NOT_FOUND/);
    expect(failures[5]).toMatch(/^dd [\s\S]*Operation not permitted/);
    expect(out).toContain('nbd3 left free when the pid file failed');

    expect(out).toContain(`detached /dev/nbd0: ${join(runDir, 'vm1.cow')} closed cleanly`);
    expect(out).toContain('pid file removed');
    expect(out).toMatch(/attached vm1\.cow to \/dev\/nbd1 in \d+ ms \(read-only, 1 connection, ioctl\)/);
    expect(out).toContain('second ioctl connect refused: EBUSY, ioctl(NBD_SET_SOCK)');
    expect(out).toMatch(/nbd1 kept running at \d+ bytes/);
    expect(out).toContain('foreground attach exited with 0');
    expect(out).toContain('attach signalled early exited with 0');
    expect(out).toContain('nbd3 left free after an early signal');
    expect(out).toContain(`detached /dev/nbd3: ${join(runDir, 'vm1.cow')} closed cleanly`);
    expect(out).toContain('the daemon child kept serving without its parent');
    expect(out).toMatch(/had died[\s\S]*read-only/);

    // On the host: the base is unchanged, and the overlay holds the new files.
    expect(sha256(base)).toBe(baseDigest);
    const flat = join(runDir, 'flat.raw');
    const { overlayBytes } = await flatten(join(runDir, 'vm1.cow'), flat);
    expect(overlayBytes).toBeGreaterThanOrEqual(payload.length);
    expect(overlayBytes).toBeLessThan(BASE_BYTES / 2);
    execFileSync(tools.e2fsck, ['-fn', flat], { stdio: 'pipe' });
    const cat = (file: string): Buffer =>
      execFileSync(tools.debugfs, ['-R', `cat ${file}`, flat], { stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 64 * 1024 * 1024 });
    expect(cat('/new/greeting.txt').toString()).toBe(GREETING);
    expect(cat('/new/payload.bin').equals(payload)).toBe(true);
    expect(cat('/hello.txt').toString()).toBe('hello from the base image\n');
  } finally {
    rmSync(runDir, { recursive: true, force: true });
  }
}, 360_000);
