#!/usr/bin/env node
// @ts-check
/**
 * bench/compare: the same fio jobs against cowdisk and its peers, on this machine, in one run.
 * docs/PERFORMANCE.md says what is measured and why; bench/compare/ holds the parts.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { plotModule, plots, renderHtml } from './compare/html.mjs';
import { JOB_IDS, measuredSize } from './compare/jobs.mjs';
import { renderText } from './compare/report.mjs';
import { targets } from './compare/targets.mjs';
import { TOOLS, compare, defaultDir } from './compare/run.mjs';
import { sealedTargets } from './compare/sealed.mjs';
import { stopAllServers } from './compare/server.mjs';
import { printTlsComparison } from './compare/tls.mjs';

const HELP = `Usage: node bench/compare.mjs [options]

Runs the same fio jobs (nbd ioengine, Unix sockets) against cowdisk, qemu-nbd (qcow2),
nbdkit's cow filter, nbdkit's file plugin (the floor) and nbdkit's null plugin, and prints
p50 / p99 latency, IOPS or MiB/s, the server's CPU time per request, and each tool's ratio to
the floor; a cold-start job measures each server's first requests. Progress goes to stderr.

Options:
  --reps N        repetitions; each figure is the median (default 3, --quick 1)
  --quick         smoke test: a 64 MiB base and small jobs (seconds, not a measurement)
  --json          print the results as JSON instead of tables
  --html FILE     also write the run as a self-contained HTML page: the tables and, per job,
                  every tool's latency distribution (needs the build: npm run build)
  --plots DIR     also write each job's latency distribution as DIR/JOB.svg (for a README)
  --tools LIST    comma-separated tool ids (default: all): ${TOOLS.map((t) => t.id).join(', ')}
  --jobs LIST     comma-separated job ids (default: all): ${JOB_IDS.join(', ')}
  --size SIZE     size of the random base, e.g. 1G, 256M (default 1G, --quick 64M)
  --no-chain      skip cowdisk's 16-deep versus 1-deep chain read variant
  --no-sealed     skip the reads through a sealed import of a compressible base (bench/compare/sealed.mjs)
  --dir DIR       where the run's temporary directory goes (default ${defaultDir})
  --wait-idle S   before each measurement, wait up to S seconds for other processes to use
                  under a quarter of a core (default 0: measure at once; the table says how
                  busy the machine was either way)
  --tls           instead: each of cowdisk, qemu-nbd and nbdkit's cow filter (--tools picks)
                  in plaintext and requiring TLS-PSK, 4 KiB QD16 and 1 MiB reads, TLS/plaintext,
                  and the server's CPU per request both ways
  -h, --help      this text

Example: node bench/compare.mjs --reps 5
`;

/** @param {string} text */
function parseSize(text) {
  const m = /^(\d+)([KMG]?)$/i.exec(text);
  if (!m) throw new Error(`--size ${text}: expected a number with an optional K, M or G suffix`);
  const bytes = Number(m[1]) * 1024 ** ' KMG'.indexOf((m[2] || ' ').toUpperCase());
  // The 1 MiB jobs need at least one MiB in the measured part of the disk (all but the warm-up's sixteenth).
  if (bytes % 2 ** 20 !== 0 || measuredSize(bytes) < 2 ** 20) throw new Error(`--size ${text}: must be a whole number of MiB, at least 2M`);
  return bytes;
}

/** @param {string | undefined} text */
const list = (text) => (text === undefined ? null : text.split(',').map((s) => s.trim()).filter(Boolean));

async function main() {
  const { values } = parseArgs({
    options: {
      reps: { type: 'string' },
      quick: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      html: { type: 'string' },
      plots: { type: 'string' },
      tools: { type: 'string' },
      jobs: { type: 'string' },
      size: { type: 'string' },
      'no-chain': { type: 'boolean', default: false },
      'no-sealed': { type: 'boolean', default: false },
      dir: { type: 'string', default: defaultDir },
      'wait-idle': { type: 'string', default: '0' },
      tls: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const quick = values.quick ?? false;
  const reps = values.reps === undefined ? (quick ? 1 : 3) : Number(values.reps);
  if (!Number.isInteger(reps) || reps < 1) throw new Error(`--reps ${values.reps}: expected a whole number, at least 1`);
  const jobs = list(values.jobs);
  const unknownJob = (jobs ?? []).find((j) => !JOB_IDS.includes(j));
  const waitIdle = Number(values['wait-idle']);
  if (!(waitIdle >= 0)) throw new Error(`--wait-idle ${values['wait-idle']}: expected a number of seconds`);
  if (unknownJob) throw new Error(`unknown job ${unknownJob}; the jobs are ${JOB_IDS.join(', ')}`);

  if (values.html !== undefined || values.plots !== undefined) await plotModule();

  // Ctrl-C: stop the servers we started (the fio in flight then fails), stop between
  // measurements, and let the run remove its temporary directory on the way out.
  const abort = new AbortController();
  const stopOnSignal = () => {
    process.exitCode = 130;
    abort.abort(new Error('interrupted'));
    void stopAllServers();
  };
  process.on('SIGINT', stopOnSignal);
  process.on('SIGTERM', stopOnSignal);

  const size = values.size === undefined ? (quick ? 64 * 2 ** 20 : 2 ** 30) : parseSize(values.size);
  const progress = (/** @type {string} */ line) => process.stderr.write(`compare: ${line}\n`);
  if (values.tls) {
    const tools = list(values.tools);
    return printTlsComparison({ reps, quick, size, tools, dir: values.dir ?? defaultDir, waitIdle, signal: abort.signal, json: values.json ?? false }, progress);
  }
  const result = await compare(
    {
      reps,
      quick,
      size,
      tools: list(values.tools),
      jobs,
      chain: !values['no-chain'],
      sealed: !values['no-sealed'],
      dir: values.dir ?? defaultDir,
      waitIdle,
      signal: abort.signal,
    },
    progress,
  );
  const command = ['node bench/compare.mjs', ...process.argv.slice(2)].join(' ');
  if (values.html !== undefined) {
    writeFileSync(values.html, await renderHtml(result, command));
    process.stderr.write(`compare: wrote ${values.html}\n`);
  }
  if (values.plots !== undefined) {
    mkdirSync(values.plots, { recursive: true });
    for (const plot of await plots(result)) writeFileSync(join(values.plots, `${plot.id.replace(/^job-/, '')}.svg`), plot.svg);
    process.stderr.write(`compare: wrote the plots to ${values.plots}\n`);
  }
  if (values.json) process.stdout.write(JSON.stringify({ command, ...result, targets: { cowdisk: targets(result), 'cowdisk-nopoll': targets(result, 'cowdisk-nopoll') }, sealedTargets: sealedTargets(result.sealed, result.chain) }, null, 2) + '\n');
  else process.stdout.write(renderText(result, command));
}

main().catch((err) => {
  if (process.exitCode === 130) {
    process.stderr.write('compare: interrupted; the servers are stopped and the temporary files removed\n');
    return;
  }
  process.stderr.write(`compare: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
