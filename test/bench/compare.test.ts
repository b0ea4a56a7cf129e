/**
 * bench/compare in --quick mode against the two cheapest peers (nbdkit's file plugin, the floor,
 * and its null plugin): real servers, real fio, and the harness's reading of fio's JSON into the
 * table. No timing is asserted; only that every job ran the I/O it was meant to and that the
 * numbers made it into the table with the right ratios.
 */
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
// @ts-expect-error: bench/ is plain JavaScript without declarations (bench/compare/tsconfig.json checks it)
import { renderText } from '../../bench/compare/report.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SCRIPT = join(ROOT, 'bench', 'compare.mjs');
const MiB = 2 ** 20;
const SIZE = 16 * MiB;

interface Measurement {
  p50Us: number;
  p99Us: number;
  clatP50Us: number;
  iops: number;
  mibps: number;
  ios: number;
}
interface Row {
  tool: string;
  job: string;
  reps: Measurement[];
  median: Measurement;
}
interface Report {
  command: string;
  settings: { size: number; measured: number; stride: number; reps: number };
  tools: { id: string; label: string }[];
  jobs: { id: string; title: string; short: string; rate: 'iops' | 'mibps'; headline: 'p50' | 'rate' }[];
  results: Row[];
  chain: unknown;
}

function compare(args: string[]) {
  return spawnSync(process.execPath, [SCRIPT, ...args], { encoding: 'utf8', timeout: 120_000 });
}

function requireTools() {
  for (const [program, pkg] of [['fio', 'fio'], ['nbdkit', 'nbdkit']]) {
    const r = spawnSync(program, ['--version']);
    if (r.status !== 0) throw new Error(`${program} is needed by this test: install the Debian package ${pkg}`);
  }
}

describe('bench/compare --quick', () => {
  let report: Report;

  beforeAll(() => {
    requireTools();
    const r = compare(['--quick', '--json', '--size', '16M', '--reps', '2', '--tools', 'nbdkit-file,nbdkit-null']);
    expect(r.status, r.stderr).toBe(0);
    report = JSON.parse(r.stdout);
  }, 120_000);

  it('runs every job against every tool, once per repetition', () => {
    expect(report.tools.map((t) => t.id)).toEqual(['nbdkit-file', 'nbdkit-null']);
    expect(report.results).toHaveLength(report.tools.length * report.jobs.length);
    for (const row of report.results) expect(row.reps).toHaveLength(2);
  });

  it('moves exactly the planned I/O: one write per block, no wrap-around into rewrites', () => {
    const ios = (job: string) => report.results.find((r) => r.job === job && r.tool === 'nbdkit-null')!.median.ios;
    const { stride, measured } = report.settings;
    expect(stride).toBe(64 * 1024);
    // The last sixteenth of the disk is the warm-up's; the measured passes stay out of it.
    expect(measured).toBe(SIZE - SIZE / 16);
    expect(ios('write-first-qd1')).toBe(Math.floor(measured / stride));
    expect(ios('rewrite-qd1')).toBe(Math.floor(measured / stride));
    expect(ios('rewrite-qd16')).toBe(Math.floor(measured / stride));
    expect(ios('seqread-1m')).toBe(Math.floor(measured / MiB));
    expect(ios('seqwrite-1m')).toBe(Math.floor(measured / MiB));
  });

  it('reads latency percentiles and rates out of fio’s JSON', () => {
    for (const row of report.results) {
      for (const m of row.reps) {
        expect(m.p50Us).toBeGreaterThan(0);
        expect(m.p99Us).toBeGreaterThanOrEqual(m.p50Us);
        expect(m.iops).toBeGreaterThan(0);
        expect(m.mibps * MiB).toBeCloseTo((m.iops * (row.job.endsWith('1m') ? MiB : 4096)), -3);
      }
      const p50s = row.reps.map((m) => m.p50Us);
      expect(row.median.p50Us).toBeCloseTo((p50s[0] + p50s[1]) / 2);
    }
  });

  it('prints one table per job with each tool’s ratio to the floor', () => {
    const text: string = renderText(report, report.command);
    for (const job of report.jobs) expect(text).toContain(`## ${job.title}`);
    // The summary's row first, then one row per job's table.
    const [summary, ...rows] = text.split('\n').filter((l) => l.startsWith('| nbdkit null'));
    expect(rows).toHaveLength(report.jobs.length);
    const summaryCells = summary.split('|').map((c) => c.trim());
    report.jobs.forEach((job, i) => {
      const get = (tool: string) => report.results.find((r) => r.tool === tool && r.job === job.id)!.median;
      const cells = rows[i].split('|').map((c) => c.trim());
      const p50Ratio = `${(get('nbdkit-null').p50Us / get('nbdkit-file').p50Us).toFixed(2)}×`;
      expect(cells[5]).toBe(p50Ratio);
      if (job.id === 'write-first-qd1') expect(summaryCells[2]).toMatch(new RegExp(` \\(${p50Ratio}\\)$`));
    });
    expect(text).toMatch(/^\| nbdkit file \(floor\) +\|.*\| +1\.00× \| +1\.00× \|$/m);
    expect(text).toContain('Not measured: cowdisk is not among the tools measured.');
  });

  it('refuses a base too small for the 1 MiB jobs before it starts, saying the smallest size', () => {
    const r = compare(['--quick', '--size', '1M', '--tools', 'nbdkit-null']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('--size 1M: must be a whole number of MiB, at least 2M');
    expect(r.stderr).not.toContain('making a');
  });

  it('names the tools it knows when asked for one it does not', () => {
    const r = compare(['--quick', '--tools', 'nbdkit-bogus']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('unknown tool nbdkit-bogus; the tools are cowdisk, cowdisk-nopoll, qemu-qcow2-64k');
  });
});
