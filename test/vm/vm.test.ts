/**
 * The VM harness keeps its promises (test/vm/vm.ts): the script's exit code, output and files
 * come back to the host; the host's root (and its node) is there, read-only; `modprobe nbd`
 * gives the kernel's nbd devices; every connection to the forwarded address reaches the host
 * endpoint and nothing else on the host is reachable; a VM that overruns its timeout is killed.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { findTool, runInVm } from './vm.js';

/** True if a live process has `text` in its command line. */
function processMentions(text: string): boolean {
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes(text)) return true;
    } catch {
      // the process ended while we looked
    }
  }
  return false;
}

test('a guest script reaches its files, the nbd module and the one forwarded endpoint, and reports back', async () => {
  const runDir = mkdtempSync(join(tmpdir(), 'cowdisk-vm-test-'));
  const token = randomUUID();
  let served = 0;
  const endpoint = net.createServer((socket) => socket.end(`hello ${token} #${++served}\n`));
  await new Promise<void>((resolve) => endpoint.listen(0, '127.0.0.1', resolve));
  const { port } = endpoint.address() as net.AddressInfo;
  try {
    writeFileSync(join(runDir, 'from-host.txt'), token);
    const result = await runInVm({
      runDir,
      forward: { to: { host: '127.0.0.1', port } },
      env: { TOKEN: token },
      script: `
        echo "cwd=$PWD"
        echo "read=$(cat from-host.txt)"
        echo "$TOKEN" > from-guest.txt
        if touch /cowdisk-vm-probe 2>/dev/null; then echo "host root writable"; fi
        node -e 'console.log("node=" + process.version)'
        modprobe nbd
        echo "nbd-devices=$(ls /dev/nbd* | wc -l)"
        for i in 1 2; do
          exec 3<>"/dev/tcp/$VM_FORWARD_HOST/$VM_FORWARD_PORT"
          echo "forward: $(cat <&3)"
          exec 3<&-
        done
        if timeout 5 bash -c 'echo > /dev/tcp/10.0.2.2/${port}' 2>/dev/null; then echo "host reachable"; fi
        exit 7
      `,
    });
    expect(result.exitCode, result.output).toBe(7);
    expect(result.output).toContain(`cwd=${runDir}\n`);
    expect(result.output).toContain(`read=${token}\n`);
    expect(result.output).not.toContain('host root writable');
    expect(result.output).toContain(`node=${process.version}\n`);
    expect(result.output).toContain('nbd-devices=16\n');
    expect(result.output).toContain(`forward: hello ${token} #1\n`);
    expect(result.output).toContain(`forward: hello ${token} #2\n`);
    expect(result.output).not.toContain('host reachable');
    expect(readFileSync(join(runDir, 'from-guest.txt'), 'utf8')).toBe(`${token}\n`);
    expect(readFileSync(result.consoleLog, 'latin1')).toContain('cowdisk-vm: script start');
    expect(result.bootMs).toBeGreaterThan(0);
    expect(result.totalMs).toBeGreaterThan(result.bootMs);
  } finally {
    endpoint.close();
    rmSync(runDir, { recursive: true, force: true });
  }
}, 300_000);

test('a VM that overruns its timeout is killed and the run fails with the console tail', async () => {
  const runDir = mkdtempSync(join(tmpdir(), 'cowdisk-vm-timeout-'));
  try {
    await expect(runInVm({ runDir, timeoutMs: 1500, script: 'sleep 600' })).rejects.toThrow(
      /did not finish within 1500 ms[\s\S]*serial console/,
    );
    // QEMU's command line names runDir (its writable share): no such process may be left.
    expect(processMentions(runDir)).toBe(false);
  } finally {
    rmSync(runDir, { recursive: true, force: true });
  }
}, 60_000);

test('a missing tool fails with the Debian package that provides it', () => {
  expect(() => findTool('cowdisk-no-such-tool', 'cowdisk-no-such-package')).toThrow(
    /cowdisk-no-such-tool not found: install the Debian package cowdisk-no-such-package/,
  );
  expect(findTool('qemu-system-x86_64', 'qemu-system-x86')).toMatch(/\/qemu-system-x86_64$/);
});
