/**
 * bench/compare --tls in --quick mode against its cheapest tool (nbdkit's cow filter): the PSK
 * made by psktool, fio through the shim, a server that refuses anything but TLS, and the
 * harness's ratios in the table. No timing is asserted; only that both transports ran the I/O
 * they were meant to and that the table's ratios are the medians' quotients.
 */
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
// @ts-expect-error: bench/ is plain JavaScript without declarations (bench/compare/tsconfig.json checks it)
import { renderTls } from '../../bench/compare/tls.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const MiB = 2 ** 20;

interface Row {
  tool: string;
  job: string;
  tls: boolean;
  median: { iops: number; mibps: number; ios: number; cpuUsPerIo: number };
}

describe('bench/compare --tls --quick', () => {
  let report: { command: string; results: Row[]; settings: { size: number } };

  beforeAll(() => {
    for (const [program, pkg] of [['fio', 'fio'], ['nbdkit', 'nbdkit'], ['psktool', 'gnutls-bin'], ['cc', 'gcc']]) {
      if (spawnSync(program, ['--version']).error) throw new Error(`${program} is needed by this test: install the Debian package ${pkg}`);
    }
    const r = spawnSync(process.execPath, [join(ROOT, 'bench', 'compare.mjs'), '--tls', '--quick', '--json', '--size', '16M', '--reps', '1', '--tools', 'nbdkit-cow'], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(r.status, r.stderr).toBe(0);
    report = JSON.parse(r.stdout);
  }, 120_000);

  it('measures both read jobs in plaintext and over TLS-PSK (the server accepts nothing else)', () => {
    expect(report.results.map((r) => [r.job, r.tls])).toEqual([
      ['randread-qd16', false],
      ['seqread-1m', false],
      ['randread-qd16', true],
      ['seqread-1m', true],
    ]);
    const measured = report.settings.size - report.settings.size / 16;
    for (const r of report.results) expect(r.median.ios).toBe(r.job === 'seqread-1m' ? Math.floor(measured / MiB) : Math.min(measured / 4096, 4096));
  });

  it('prints each TLS/plaintext ratio as the quotient of the medians', () => {
    const text: string = renderTls(report, report.command);
    const get = (job: string, tls: boolean) => report.results.find((r) => r.job === job && r.tls === tls)!.median;
    const row = text.split('\n').find((l) => l.startsWith('| nbdkit cow filter'))!;
    const cells = row.split('|').map((c) => c.trim());
    expect(cells[4]).toBe(`${(get('randread-qd16', true).iops / get('randread-qd16', false).iops).toFixed(2)}×`);
    expect(cells[7]).toBe(`${(get('seqread-1m', true).mibps / get('seqread-1m', false).mibps).toFixed(2)}×`);
    // Without cowdisk and qemu-nbd in the run there is no target to judge.
    expect(text).not.toContain("Issue 14's target");
  });

  it('measures the server\'s CPU per request both ways and prints what TLS adds', () => {
    // /proc/PID/stat counts CPU in 10 ms ticks: a quick pass may show none, never less or NaN.
    for (const r of report.results) {
      expect(Number.isFinite(r.median.cpuUsPerIo)).toBe(true);
      expect(r.median.cpuUsPerIo).toBeGreaterThanOrEqual(0);
    }
    const text: string = renderTls(report, report.command);
    const get = (job: string, tls: boolean) => report.results.find((r) => r.job === job && r.tls === tls)!.median.cpuUsPerIo;
    const rows = text.split('\n').filter((l) => l.startsWith('| nbdkit cow filter'));
    expect(rows).toHaveLength(2);
    const cells = rows[1].split('|').map((c) => c.trim());
    expect(cells[2]).toBe(get('randread-qd16', false).toFixed(1));
    expect(cells[3]).toBe(get('randread-qd16', true).toFixed(1));
    expect(cells[4]).toBe((get('randread-qd16', true) - get('randread-qd16', false)).toFixed(1));
    expect(cells[7]).toBe((get('seqread-1m', true) - get('seqread-1m', false)).toFixed(1));
  });
});
