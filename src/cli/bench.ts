/**
 * `cowdisk bench IMAGE`: first-write versus rewrite latency on a throw-away clone of IMAGE
 * (src/bench/runner.ts does the work; this file parses options and prints the result).
 *
 * Ctrl-C / SIGTERM stop the run between requests; the clone and the server are cleaned up and
 * the exit code is 130. A second signal exits at once, and the temporary directory still goes.
 */
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { BenchInterrupted, DEFAULT_COUNT, ioError, MAX_QUEUE_DEPTH, renderCdfSvg, runBench, WARMUP_REQUESTS, type BenchResult, type HistogramBucket, type LatencySummary } from '../index.js';
import { count, formatTable, printJson, printLines } from './output.js';
import { countOption, formatSize, sizeOption } from './size.js';

const INTERRUPTED_EXIT = 130;
const BAR_WIDTH = 40;

interface BenchCliOptions {
  blockSizeIo: number;
  queueDepth: number;
  count?: number;
  subBlocks?: number;
  dir?: string;
  engine?: boolean;
  json?: boolean;
  plot?: string;
}

export function register(program: Command): void {
  program
    .command('bench')
    .description('Measure first-write versus rewrite latency on a throw-away clone of an image.')
    .argument('<image>', 'a snapshot, raw image or overlay; opened read-only and never written')
    .option('--block-size-io <size>', 'bytes per write, a multiple of 512', sizeOption('--block-size-io'), 4096)
    .option('--queue-depth <n>', `writes in flight at once, 1 to ${MAX_QUEUE_DEPTH}`, countOption('--queue-depth', 1), 1)
    .option('--count <n>', `measured writes per pass (default ${DEFAULT_COUNT}, or fewer on a disk with fewer blocks)`, countOption('--count', 1))
    .option('--sub-blocks <n>', "copy-on-write units per block in the clone (default: the image's own, else 4K units); 1 copies whole blocks", countOption('--sub-blocks', 1))
    .option('--dir <path>', 'where to put the temporary clone and socket (default: the system temp dir); its file system is the one measured')
    .option('--engine', 'measure the engine alone: BlockDevice calls in this process, no NBD')
    .option('--json', 'print JSON for scripts')
    .option('--plot <file.svg>', 'also draw both passes\' latency distributions (CDF, log scale) as a self-contained SVG file')
    .addHelpText(
      'after',
      `
What is measured:
  The image is opened read-only; the writes go to a fresh overlay in a temporary directory,
  removed afterwards. For a snapshot or raw image that is a clone of it; an overlay cannot be a
  parent, so for one the clone stands on the overlay's own parent with the same geometry (the
  blocks the overlay holds are not part of the measurement).
  First writes: --count writes of --block-size-io bytes, one per block, 4 KiB into each block (at
  its start if the write would not fit after 4 KiB; a write larger than a block gets as many
  blocks as it spans), so each lands in a block the clone does not hold yet. Rewrites: the same
  offsets again. First, ${WARMUP_REQUESTS} unmeasured requests to other blocks warm up both
  processes (a cold server is several times slower while V8 compiles it); a FLUSH after each
  pass is timed apart.
  Latency is per request, from the call to its reply; IOPS is requests over the pass's wall time.

How:
  By default through NBD: cowdisk's server runs in a child process on the clone and this process
  is the client, over a Unix socket in the temporary directory (client and server in one process
  would share one event loop and distort each other). --engine skips the protocol and calls the
  engine directly in this process.

Examples:
  $ cowdisk bench base.snap
  $ cowdisk bench --queue-depth 16 --count 8000 base.snap
  $ cowdisk bench --engine --sub-blocks 1 --json base.snap | jq .firstWrite.latencyUs
  $ cowdisk bench --plot latency.svg base.snap`,
    )
    .action(async (image: string, options: BenchCliOptions) => {
      const controller = new AbortController();
      const onSignal = (signal: string): void => {
        if (controller.signal.aborted) process.exit(INTERRUPTED_EXIT);
        process.stderr.write(`cowdisk: ${signal}: stopping the benchmark and removing the clone\n`);
        controller.abort();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        const result = await runBench(image, {
          ioSize: options.blockSizeIo,
          queueDepth: options.queueDepth,
          count: options.count,
          subBlocks: options.subBlocks,
          dir: options.dir,
          engine: options.engine,
          signal: controller.signal,
        });
        if (options.plot !== undefined) writePlot(options.plot, result);
        if (options.json) printJson(result);
        else printLines(render(result));
      } catch (err) {
        if (!(err instanceof BenchInterrupted)) throw err;
        process.stderr.write(`cowdisk: bench ${err.message}\n`);
        process.exitCode = INTERRUPTED_EXIT;
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
}

/** First write against rewrite, one CDF each. */
function writePlot(file: string, r: BenchResult): void {
  const svg = renderCdfSvg(
    [
      { label: `first write (p50 ${formatUs(r.firstWrite.latencyUs.p50)})`, points: r.firstWrite.cdf },
      { label: `rewrite (p50 ${formatUs(r.rewrite.latencyUs.p50)})`, points: r.rewrite.cdf },
    ],
    {
      title: `cowdisk bench ${r.image}: ${r.workload.count} writes of ${formatSize(r.workload.ioSize)} per pass at queue depth ${r.workload.queueDepth}, ${r.mode === 'engine' ? 'the engine alone' : 'through NBD'}`,
    },
  );
  try {
    fs.writeFileSync(file, svg);
  } catch (err) {
    throw ioError(err, file, 'writing the plot');
  }
}

function render(r: BenchResult): string[] {
  const c = r.clone;
  const w = r.workload;
  const lines = [
    `cowdisk bench ${r.image} (${r.imageKind}, ${formatSize(c.virtualSize)})`,
    `  measured   ${r.path}`,
    `  clone      ${c.basis}`,
    `  geometry   ${formatSize(c.blockSize)} blocks, ${count(c.subBlocks, 'sub-block')} of ${formatSize(c.subBlockSize)}, chain depth ${c.chainDepth} (${c.chainDepth === 1 ? 'the clone alone' : `the clone and ${c.chainDepth - 1} below`})`,
    `  copy-up    ${copyUp(r)}`,
    `  writes     ${w.count} of ${formatSize(w.ioSize)} per pass at queue depth ${w.queueDepth}, ${formatSize(w.offsetInBlock)} into every ${strideText(r)}`,
    `  warm-up    ${w.warmupRequests} requests, unmeasured: ${w.warmupBlocks > 0 ? `first writes and rewrites of ${w.warmupBlocks} other blocks` : 'reads (the disk has no block to spare)'}`,
    '',
    ...formatTable(
      [
        ['', 'p50', 'p90', 'p99', 'max', 'mean', 'IOPS'],
        ...(
          [
            ['first write', r.firstWrite],
            ['rewrite', r.rewrite],
          ] as const
        ).map(([name, s]) => [name, ...(['p50', 'p90', 'p99', 'max', 'mean'] as const).map((k) => formatUs(s.latencyUs[k])), Math.round(s.iops).toLocaleString('en-US')]),
      ],
      [1, 2, 3, 4, 5, 6],
    ),
    `flush after the first writes ${formatMs(r.flushMs.afterFirstWrites)}, after the rewrites ${formatMs(r.flushMs.afterRewrites)}`,
  ];
  for (const [name, s] of [
    ['first write', r.firstWrite],
    ['rewrite', r.rewrite],
  ] as const) {
    lines.push('', `${name} latency (${s.count} writes)`, ...histogramLines(s));
  }
  return lines;
}

function copyUp(r: BenchResult): string {
  const bytes = r.workload.copyUpBytes;
  if (r.clone.parent === null) {
    return bytes === 0
      ? `none: each write covers whole ${formatSize(r.clone.subBlockSize)} sub-blocks, and the clone has no parent`
      : `none: the clone has no parent, so each first write fills ${formatSize(bytes)} of its sub-blocks with zeros`;
  }
  if (bytes === 0) return `none: each write covers whole ${formatSize(r.clone.subBlockSize)} sub-blocks, so a first write reads nothing from the parent`;
  return `each first write reads ${formatSize(bytes)} from the parent to fill the sub-blocks it only partly covers`;
}

function strideText(r: BenchResult): string {
  const { stride } = r.workload;
  return stride === r.clone.blockSize ? 'block' : `${formatSize(stride)} (${stride / r.clone.blockSize} blocks)`;
}

function histogramLines(s: LatencySummary): string[] {
  const most = Math.max(...s.histogram.map((b) => b.count));
  const rows = s.histogram.map((b: HistogramBucket) => {
    const bar = b.count === 0 ? '' : '#'.repeat(Math.max(1, Math.round((b.count / most) * BAR_WIDTH)));
    return [`  ${formatUs(b.fromUs)}`, '..', formatUs(b.toUs), bar.padEnd(BAR_WIDTH), String(b.count), `${((b.count / s.count) * 100).toFixed(1)}%`];
  });
  return formatTable(rows, [0, 2, 4, 5]);
}

/** Microseconds for people: 0.8 µs, 41.3 µs, 712 µs, 1.24 ms, 2.5 s. */
function formatUs(us: number): string {
  if (us < 100) return `${Number(us.toFixed(1))} µs`;
  if (us < 1000) return `${Math.round(us)} µs`;
  if (us < 1_000_000) return `${Number((us / 1000).toFixed(2))} ms`;
  return `${Number((us / 1_000_000).toFixed(2))} s`;
}

function formatMs(ms: number): string {
  return formatUs(ms * 1000);
}
