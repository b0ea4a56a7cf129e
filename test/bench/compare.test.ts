/**
 * bench/compare in --quick mode against the two cheapest peers (nbdkit's file plugin, the floor,
 * and its null plugin): real servers, real fio, and the harness's reading of fio's JSON into the
 * table and the HTML page. No timing is asserted; only that every job ran the I/O it was meant
 * to, that the numbers made it into the table with the right ratios, that the server's CPU time
 * is the server's, and that the page is well-formed with a line per tool per job.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// @ts-expect-error: bench/ is plain JavaScript without declarations (bench/compare/tsconfig.json checks it)
import { renderText } from '../../bench/compare/report.mjs';
// @ts-expect-error: as above
import { startServer } from '../../bench/compare/server.mjs';
// @ts-expect-error: as above
import { parseFioJson, percentile } from '../../bench/compare/fio.mjs';
import { readXml } from '../helpers/xml.js';

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
  cpuUsPerIo: number;
  latNs: [number, number][];
  warm?: Measurement;
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
  jobs: { id: string; title: string; short: string; rate: 'iops' | 'mibps'; headline: 'p50' | 'rate' | 'cold' }[];
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
  const dir = mkdtempSync(join(tmpdir(), 'compare-test-'));
  const html = join(dir, 'run.html');

  beforeAll(() => {
    requireTools();
    const r = compare(['--quick', '--json', '--html', html, '--plots', join(dir, 'plots'), '--size', '16M', '--reps', '2', '--tools', 'nbdkit-file,nbdkit-null']);
    expect(r.status, r.stderr).toBe(0);
    report = JSON.parse(r.stdout);
  }, 120_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

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
    // The cold start: 500 requests, writes and reads (--quick), then as many again once warm.
    const cold = report.results.find((r) => r.job === 'cold-start' && r.tool === 'nbdkit-null')!.median;
    expect(cold.ios).toBe(500);
    expect(cold.warm!.ios).toBe(500);
  });

  it('keeps every request in the latency distribution, and the warm pass apart from the cold one', () => {
    const count = (bins: [number, number][]) => bins.reduce((n, [, c]) => n + c, 0);
    for (const row of report.results) {
      for (const m of row.reps) {
        expect(count(m.latNs)).toBe(m.ios);
        expect(m.warm === undefined).toBe(row.job !== 'cold-start');
      }
      // The summary's distribution pools the repetitions.
      expect(count(row.median.latNs)).toBe(row.reps.reduce((n, m) => n + m.ios, 0));
    }
  });

  it("charges each pass the server's own CPU time", () => {
    for (const tool of report.tools) {
      const rows = report.results.filter((r) => r.tool === tool.id);
      for (const m of rows.flatMap((r) => r.reps)) expect(m.cpuUsPerIo).toBeGreaterThanOrEqual(0);
      // A few seconds of I/O cost the server something; a wrapper's PID would show nothing.
      expect(rows.flatMap((r) => r.reps).reduce((sum, m) => sum + m.cpuUsPerIo * m.ios, 0)).toBeGreaterThan(0);
    }
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

  it('prints one table per job with each tool’s ratio to the floor, and its CPU per request', () => {
    const text: string = renderText(report, report.command);
    for (const job of report.jobs) expect(text).toContain(`## ${job.title}`);
    // The summary's row first, then the CPU table's, then one row per job's table.
    const [summary, cpu, ...rows] = text.split('\n').filter((l) => l.startsWith('| nbdkit null'));
    expect(rows).toHaveLength(report.jobs.length);
    const summaryCells = summary.split('|').map((c) => c.trim());
    const cpuCells = cpu.split('|').map((c) => c.trim());
    report.jobs.forEach((job, i) => {
      const get = (tool: string) => report.results.find((r) => r.tool === tool && r.job === job.id)!.median;
      const cells = rows[i].split('|').map((c) => c.trim());
      const null_ = get('nbdkit-null');
      expect(Number(cpuCells[i + 2])).toBeCloseTo(null_.cpuUsPerIo, null_.cpuUsPerIo < 100 ? 1 : 0);
      if (job.id === 'cold-start') {
        // cold p50, cold p99, warm p50, warm p99, cold × warm
        expect(cells[6]).toBe(`${(null_.p50Us / null_.warm!.p50Us).toFixed(2)}×`);
        return;
      }
      const p50Ratio = `${(null_.p50Us / get('nbdkit-file').p50Us).toFixed(2)}×`;
      expect(cells[6]).toBe(p50Ratio);
      if (job.id === 'write-first-qd1') expect(summaryCells[2]).toMatch(new RegExp(` \\(${p50Ratio}\\)$`));
    });
    expect(text).toMatch(/^\| nbdkit file \(floor\) +\|.*\| +1\.00× \| +1\.00× \|$/m);
    expect(text).toContain('Not measured: cowdisk is not among the tools measured.');
  });

  it('--html writes a well-formed, self-contained page: the tables, and a line per tool in every job’s plot', () => {
    const page = readXml(html);
    expect(page.root).toBe('html');
    const labels = report.tools.map((t) => t.label);
    expect(page.tables.summary.rows.map((r) => r[0])).toEqual(labels);
    expect(page.tables.cpu.rows.map((r) => r[0])).toEqual(labels);
    for (const job of report.jobs) {
      const expected = job.id === 'cold-start' ? labels.flatMap((l) => [`${l}, cold`, `${l}, warm`]) : labels;
      expect(page.paths[`job-${job.id}`], job.id).toEqual(expected);
    }
    const text = readFileSync(html, 'utf8');
    expect(text).not.toMatch(/<script|<link|\bsrc=|url\(/i);
  });

  it('--plots writes every job’s plot as an SVG file of its own, the same lines as the page', () => {
    expect(readdirSync(join(dir, 'plots')).sort()).toEqual(report.jobs.map((j) => `${j.id}.svg`).sort());
    const page = readXml(html);
    for (const job of report.jobs) {
      const svg = readXml(join(dir, 'plots', `${job.id}.svg`));
      expect(svg.root).toBe('svg');
      expect(svg.paths['']).toEqual(page.paths[`job-${job.id}`]);
    }
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

describe('bench/compare internals', () => {
  it('measures the process that accepts on the socket, also when a wrapper shell started it', async () => {
    requireTools();
    const dir = mkdtempSync(join(tmpdir(), 'compare-pid-'));
    try {
      const socket = join(dir, 'nbd.sock');
      // `; exit 0` keeps the shell from exec'ing nbdkit: the shell stays, nbdkit is its child.
      const launch = { command: 'sh', args: ['-c', `nbdkit --foreground --exit-with-parent --unix=${socket} null size=1M; exit 0`] };
      const server = await startServer(launch, socket, dir);
      try {
        expect(readFileSync(`/proc/${server.pid}/comm`, 'utf8').trim()).toBe('nbdkit');
        const ppid = Number(readFileSync(`/proc/${server.pid}/stat`, 'utf8').split(') ')[1].split(' ')[1]);
        expect(readFileSync(`/proc/${ppid}/comm`, 'utf8').trim()).toBe('sh');
      } finally {
        await server.stop();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads a mixed pass as reads and writes together, percentiles nearest-rank over the merged bins', () => {
    const side = (ios: number, bins: Record<string, number>) => ({
      total_ios: ios,
      iops: ios / 2,
      bw_bytes: ios * 2048,
      lat_ns: { bins, percentile: {} },
      clat_ns: { bins, percentile: {} },
    });
    const text = `fio: connected to NBD server\n${JSON.stringify({
      jobs: [{ jobname: 'cold', error: 0, read: side(3, { '1000': 2, '9000': 1 }), write: side(2, { '5000': 2 }) }],
    })}`;
    const m = parseFioJson(text, 'mixed');
    expect(m.ios).toBe(5);
    expect(m.iops).toBe(2.5);
    expect(m.latNs).toEqual([[1000, 2], [5000, 2], [9000, 1]]);
    // Ranks: p50 of 5 is the 3rd fastest (5000 ns), p99 the 5th.
    expect(m.p50Us).toBe(5);
    expect(m.p99Us).toBe(9);
    expect(parseFioJson(text, 'read').latNs).toEqual([[1000, 2], [9000, 1]]);
    expect(percentile([[10, 1], [20, 1]], 0.5)).toBe(10);
  });
});
