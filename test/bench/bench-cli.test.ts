/**
 * `cowdisk bench` as a user runs it (the built CLI, a real server child, cowdisk's NBD client),
 * on small images. No timing is asserted: what is checked is that the passes ran the writes they
 * were meant to, that the report has its figures, that the user's image is never written, and
 * that nothing is left behind (the clone, its directory, the server process).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { summarize } from '../../src/bench/latency.js';
import { measuredOffset, planWrites, warmupOffset } from '../../src/bench/workload.js';
import { ErrorCode } from '../../src/errors.js';
import { REPO } from '../helpers/cli.js';
import { readXml } from '../helpers/xml.js';
import { KiB, MiB, cowdisk, json, ok, scratchDir, writeRaw } from '../cli/fixtures.js';

const { at } = scratchDir();
/** 64 blocks of 64 KiB: random, text and zero blocks, so the clone's parent has data to copy from. */
const PATTERN = 'rrtzrrhr'.repeat(8);

function sha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/** A fresh, empty directory for one run's temporary files, to check that the run leaves it empty. */
function workDir(name: string): string {
  const dir = at(name);
  mkdirSync(dir);
  return dir;
}

interface Summary {
  count: number;
  seconds: number;
  iops: number;
  latencyUs: { p50: number; p90: number; p99: number; max: number; mean: number };
  histogram: { fromUs: number; toUs: number; count: number }[];
  cdf: [number, number][];
}

function expectSummary(s: Summary, count: number): void {
  expect(s.count).toBe(count);
  const { p50, p90, p99, max } = s.latencyUs;
  for (const v of [p50, p90, p99, max, s.iops, s.seconds]) expect(v).toBeGreaterThan(0);
  expect(p50).toBeLessThanOrEqual(p90);
  expect(p90).toBeLessThanOrEqual(p99);
  expect(p99).toBeLessThanOrEqual(max);
  expect(s.histogram.reduce((sum, b) => sum + b.count, 0)).toBe(count);
  for (const [i, b] of s.histogram.entries()) {
    expect(b.toUs).toBeGreaterThan(b.fromUs);
    if (i > 0) expect(b.fromUs).toBe(s.histogram[i - 1].toUs);
  }
  expect(s.histogram[0].fromUs).toBeLessThanOrEqual(Math.min(p50, max));
  expect(s.histogram[s.histogram.length - 1].toUs).toBeGreaterThan(max);
  // The plot's distribution: ascending, from the fastest request to the slowest (all of them).
  const cdf = s.cdf;
  expect(cdf[cdf.length - 1]).toEqual([max, 1]);
  for (let i = 1; i < cdf.length; i++) {
    expect(cdf[i][0]).toBeGreaterThan(cdf[i - 1][0]);
    expect(cdf[i][1]).toBeGreaterThan(cdf[i - 1][1]);
  }
}

beforeAll(async () => {
  writeRaw(at('base.raw'), PATTERN);
  await ok(['import', at('base.raw'), at('base.snap')]);
});

describe('cowdisk bench', () => {
  it('measures first writes and rewrites through NBD on a clone of a snapshot, which is left untouched', async () => {
    const before = sha256(at('base.snap'));
    const dir = workDir('run-snap');
    const r = await json(['bench', at('base.snap'), '--count', '40', '--dir', dir]);
    expect(r).toMatchObject({
      image: at('base.snap'),
      imageKind: 'snapshot',
      mode: 'nbd',
      clone: { parent: at('base.snap'), virtualSize: 4 * MiB, blockSize: 64 * KiB, subBlocks: 16, subBlockSize: 4 * KiB, chainDepth: 2 },
      workload: { ioSize: 4 * KiB, count: 40, queueDepth: 1, offsetInBlock: 4 * KiB, stride: 64 * KiB, copyUpBytes: 0 },
    });
    // 64 blocks: 40 measured, the other 24 take the warm-up writes.
    expect(r.workload).toMatchObject({ warmupBlocks: 24, warmupRequests: 3000 });
    expectSummary(r.firstWrite, 40);
    expectSummary(r.rewrite, 40);
    expect(r.flushMs.afterFirstWrites).toBeGreaterThan(0);
    expect(r.clone.path.startsWith(dir)).toBe(true);
    expect(existsSync(r.clone.path)).toBe(false);
    expect(readdirSync(dir)).toEqual([]);
    expect(sha256(at('base.snap'))).toBe(before);
  });

  it('on an overlay, benches a fresh overlay on its parent and never writes the overlay (bytes and dirty flag)', async () => {
    await ok(['clone', at('base.snap'), at('vm.cow')]);
    const before = sha256(at('vm.cow'));
    const mtime = statSync(at('vm.cow')).mtimeMs;
    const dir = workDir('run-overlay');
    const r = await json(['bench', at('vm.cow'), '--count', '16', '--queue-depth', '4', '--sub-blocks', '1', '--dir', dir]);
    expect(r).toMatchObject({ imageKind: 'overlay', clone: { parent: at('base.snap'), subBlocks: 1, chainDepth: 2 }, workload: { queueDepth: 4 } });
    expect(r.clone.basis).toContain('overlay');
    // Whole-block copy-up: a 4 KiB write at 4 KiB into a 64 KiB block reads the other 60 KiB.
    expect(r.workload.copyUpBytes).toBe(60 * KiB);
    expectSummary(r.firstWrite, 16);
    expectSummary(r.rewrite, 16);
    expect(sha256(at('vm.cow'))).toBe(before);
    expect(statSync(at('vm.cow')).mtimeMs).toBe(mtime);
    expect((await json(['info', at('vm.cow')])).dirty).toBe(false);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('--plot draws both passes as a well-formed SVG, a line each', async () => {
    const dir = workDir('run-plot');
    const plot = at('plot.svg');
    await ok(['bench', at('base.snap'), '--count', '20', '--dir', dir, '--plot', plot]);
    const svg = readXml(plot);
    expect(svg.root).toBe('svg');
    const lines = svg.paths[''];
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^first write \(p50 [\d.]+ µs\)$/);
    expect(lines[1]).toMatch(/^rewrite \(p50 [\d.]+ µs\)$/);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('--engine measures BlockDevice calls without NBD, here on a clone of a raw image', async () => {
    const before = sha256(at('base.raw'));
    const mtime = statSync(at('base.raw')).mtimeMs;
    const dir = workDir('run-engine');
    // Every block is measured, so none is left for warm-up writes: the warm-up reads instead.
    const r = await json(['bench', at('base.raw'), '--engine', '--count', '64', '--block-size-io', '8K', '--dir', dir]);
    expect(r).toMatchObject({
      imageKind: 'raw',
      mode: 'engine',
      clone: { parent: at('base.raw'), chainDepth: 2 },
      workload: { ioSize: 8 * KiB, count: 64, warmupBlocks: 0 },
    });
    expect(r.path).toContain('no protocol');
    expectSummary(r.firstWrite, 64);
    expectSummary(r.rewrite, 64);
    expect(sha256(at('base.raw'))).toBe(before);
    expect(statSync(at('base.raw')).mtimeMs).toBe(mtime);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('prints a table and a histogram per pass for people', async () => {
    const result = await ok(['bench', at('base.snap'), '--count', '10', '--dir', workDir('run-text')]);
    const out = result.stdout;
    expect(out).toMatch(/^\s+p50\s+p90\s+p99\s+max\s+mean\s+IOPS$/m);
    expect(out).toMatch(/^first write\s+\S+ [µm]?s\s/m);
    expect(out).toMatch(/^rewrite\s+\S+ [µm]?s\s/m);
    expect(out).toContain("cowdisk's server in a child process");
    expect(out).toContain('chain depth 2');
    expect(out).toContain('first write latency (10 writes)');
    expect(out).toContain('rewrite latency (10 writes)');
    // Histogram rows: "from .. to  ####  count  percent"; their counts add up to the pass.
    const rows = [...out.matchAll(/\.\.\s+\S+ [µm]?s\s+#*\s+(\d+)\s+[\d.]+%$/gm)].map((m) => Number(m[1]));
    expect(rows.reduce((a, b) => a + b, 0)).toBe(20);
  });

  it('stops on SIGINT: exit 130, the clone and the server are gone, the image untouched', async () => {
    const before = bigSparseImage();
    const dir = workDir('run-interrupted');
    const run = await benchUnderWay(dir);
    run.child.kill('SIGINT');
    expect(await run.exited).toBe(130);
    expect(run.stderr()).toContain('interrupted');
    expect(readdirSync(dir)).toEqual([]);
    expect(serverProcessesUnder(dir)).toEqual([]);
    expect(statSync(at('big.raw')).mtimeMs).toBe(before);
  });

  it('a second SIGINT exits at once and still removes the clone; the server follows', async () => {
    const before = bigSparseImage();
    const dir = workDir('run-interrupted-twice');
    const run = await benchUnderWay(dir);
    run.child.kill('SIGINT');
    // The second signal only once the first has been taken (two pending SIGINTs would merge into one).
    while (!run.stderr().includes('stopping the benchmark')) await new Promise((r) => setTimeout(r, 1));
    run.child.kill('SIGINT');
    expect(await run.exited).toBe(130);
    expect(readdirSync(dir)).toEqual([]);
    // The server ends when the bench's pipe to it closes, a moment after the bench exits.
    while (serverProcessesUnder(dir).length > 0) await new Promise((r) => setTimeout(r, 10));
    expect(statSync(at('big.raw')).mtimeMs).toBe(before);
  });

  it.each([
    [['--queue-depth', '0'], '--queue-depth'],
    [['--queue-depth', '1000'], '--queue-depth'],
    [['--count', '0'], '--count'],
    [['--count', '65'], 'use --count 64 or less'],
    [['--block-size-io', '1000'], 'multiple of 512'],
    [['--block-size-io', 'lots'], '--block-size-io'],
    [['--block-size-io', '8M'], 'does not fit'],
    [['--sub-blocks', '3'], 'sub-blocks'],
    [['--bogus'], 'unknown option'],
  ])('refuses %j with exit code 2 and leaves nothing behind', async (args, message) => {
    const dir = workDir(`run-bad-${args.join('').replace(/\W/g, '')}`);
    const result = await cowdisk(['bench', at('base.snap'), '--dir', dir, ...args]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(message);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('names a --dir that does not exist (exit code 1, a typed error, not a crash)', async () => {
    const missing = at('no-such-dir');
    const result = await cowdisk(['bench', at('base.snap'), '--dir', missing]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(ErrorCode.NOT_FOUND);
    expect(result.stderr).toContain(missing);
    expect(existsSync(missing)).toBe(false);
  });

  it('names a missing image (exit code 1)', async () => {
    const result = await cowdisk(['bench', at('nowhere.snap')]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(ErrorCode.NOT_FOUND);
  });
});

/** A 4 GiB sparse raw image, so that a run of many writes is still writing when a signal comes; returns its mtime. */
function bigSparseImage(): number {
  writeFileSync(at('big.raw'), '');
  truncateSync(at('big.raw'), 4096 * MiB);
  return statSync(at('big.raw')).mtimeMs;
}

/** Starts `cowdisk bench` on big.raw with its temporary files in dir, and waits until its server listens. */
async function benchUnderWay(dir: string) {
  const child = spawn(process.execPath, [path.join(REPO, 'bin/cowdisk'), 'bench', at('big.raw'), '--count', '60000', '--dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  // The socket appears once the server listens: the run is then under way.
  while (!readdirSync(dir).some((d) => existsSync(path.join(dir, d, 'nbd.sock')))) {
    if (child.exitCode !== null) throw new Error(`cowdisk bench exited with ${child.exitCode} before serving:\n${stderr}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return { child, exited, stderr: () => stderr };
}

/** PIDs of processes whose command line mentions `dir` (the bench's server child would). */
function serverProcessesUnder(dir: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(dir)) found.push(Number(entry));
    } catch {
      // The process ended while we looked.
    }
  }
  return found;
}

describe('the figures behind the report', () => {
  it('percentiles are nearest-rank over every sample, whatever the order they came in', () => {
    // 1 .. 1000 µs, shuffled deterministically (a stride coprime to 1000).
    const ns = Float64Array.from({ length: 1000 }, (_, i) => (((i * 377) % 1000) + 1) * 1000);
    const s = summarize(ns, 2);
    expect(s.latencyUs).toEqual({ p50: 500, p90: 900, p99: 990, max: 1000, mean: 500.5 });
    expect(s.iops).toBe(500);
    // The plot's CDF takes the same ranks: every percent, then 99.5%, 99.9% and the slowest.
    expect(s.cdf).toHaveLength(103);
    expect(s.cdf.slice(0, 2)).toEqual([[1, 0.001], [10, 0.01]]);
    expect(s.cdf.find(([, f]) => f === 0.5)).toEqual([500, 0.5]);
    expect(s.cdf.slice(-3)).toEqual([[995, 0.995], [999, 0.999], [1000, 1]]);
  });

  it('histogram buckets are log-scale with readable edges; an exact edge opens its bucket', () => {
    const us = [0.4, 1, 2.99, 3, 7, 10, 14.9, 1000, 1000.5, 2999];
    const s = summarize(Float64Array.from(us, (u) => u * 1000), 1);
    const edges = s.histogram.map((b) => b.fromUs);
    expect(edges.slice(0, 8)).toEqual([0, 1.5, 2, 3, 5, 7, 10, 15]);
    const where = (u: number) => s.histogram.find((b) => u >= b.fromUs && u < b.toUs);
    for (const u of us) expect(where(u)).toBeDefined();
    expect(where(3)!.fromUs).toBe(3);
    expect(where(2.99)!.fromUs).toBe(2);
    expect(where(1000)!.fromUs).toBe(1000);
    expect(where(2999)!.toUs).toBe(3000);
    expect(s.histogram.reduce((n, b) => n + b.count, 0)).toBe(us.length);
  });

  it('every measured write gets a block of its own, and warm-up writes never share one with them', () => {
    const disk = { size: 1 * MiB, blockSize: 64 * KiB, subBlockSize: 64 * KiB };
    const plan = planWrites(disk, 4 * KiB);
    expect(plan).toMatchObject({ count: 16, warmupBlocks: 0, offsetInBlock: 4 * KiB, stride: 64 * KiB, copyUpBytes: 60 * KiB });
    const small = planWrites(disk, 4 * KiB, 10);
    const blocks = [
      ...Array.from({ length: small.count }, (_, i) => measuredOffset(small, i)),
      ...Array.from({ length: small.warmupBlocks }, (_, i) => warmupOffset(small, i)),
    ].map((o) => Math.floor(o / disk.blockSize));
    expect(new Set(blocks).size).toBe(16);
    // An I/O larger than a block strides over whole blocks and starts at their beginning.
    expect(planWrites(disk, 96 * KiB)).toMatchObject({ offsetInBlock: 0, stride: 128 * KiB, slots: 8, copyUpBytes: 32 * KiB });
  });
});
