#!/usr/bin/env node
// @ts-check
/**
 * bench/remote: layers across machines, measured against a real registry on this machine
 * (docker-registry on 127.0.0.1, behind a forwarder that counts every byte). One run prints the
 * figures issue 12 sets targets for; the README reports them.
 *
 *   npm run build && node bench/remote.mjs            (1 GiB layer; needs root for the boot figure)
 *   node bench/remote.mjs --quick                     (64 MiB: a smoke test, not a measurement)
 */
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, statSync, writeSync, ftruncateSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cloneFromRegistry, cloneImage, importRaw, openImage, pullImage, pushImage } from '../dist/index.js';
import { openSealedFile } from '../dist/image/open-layer.js';
import { realFileSystem } from '../dist/io/real-file.js';
import { foreignCores, sampleCpu } from './compare/interference.mjs';
import { bootRead, bootUnavailable, makeExt4Image } from './remote/boot.mjs';
import { startCountingProxy, startRegistry } from './remote/registry.mjs';

const HELP = `Usage: node bench/remote.mjs [options]

Pushes a layer to a docker-registry on 127.0.0.1 and measures, through a byte-counting forwarder:
clone time and bytes; bytes moved by N random block reads against the stored size of those blocks
and their table pages; cold (fetched) and warm (cached) 4 KiB read latency against a local layer;
the fsync cost per fetched block; pull throughput; and the boot figure (an ext4 image cloned,
mounted through nbdfuse + loop, a set of files read).

Options:
  --size SIZE   the layer's disk (default 1G; --quick 64M), 3/4 random data, 1/4 zeros
  --reads N     random block reads for the bytes figure and the latencies (default 400)
  --quick       small and fast: a smoke test, not a measurement
  --no-boot     skip the boot figure (it needs root, nbdfuse, fuse3, e2fsprogs)
  --json        print the results as JSON
  --dir DIR     where the run's temporary directory goes (default ${tmpdir()})
  -h, --help    this text
`;

const KiB = 1024;
const MiB = 1024 * KiB;
const BLOCK = 64 * KiB;
/** Rounds of the warm and local reads, alternated. */
const ROUNDS = 20;
const COWDISK = fileURLToPath(new URL('../bin/cowdisk', import.meta.url));

/** @param {string} text */
function parseSize(text) {
  const m = /^(\d+)([KMG]?)$/i.exec(text);
  if (!m) throw new Error(`--size ${text}: a number with an optional K, M or G`);
  return Number(m[1]) * 1024 ** ' KMG'.indexOf((m[2] || ' ').toUpperCase());
}

/**
 * @param {string} path
 * @param {number} size
 * @param {(s: string) => void} say
 */
function makeBase(path, size, say) {
  say(`making a ${size / MiB} MiB raw disk (3/4 random, 1/4 zeros)`);
  const fd = openSync(path, 'w');
  ftruncateSync(fd, size);
  for (let at = 0; at < size; at += 4 * MiB) writeSync(fd, randomBytes(Math.min(3 * MiB, size - at)), 0, Math.min(3 * MiB, size - at), at);
  closeSync(fd);
}

/**
 * @param {number[]} values
 * @param {number} p
 */
function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/**
 * Microseconds of each 4 KiB read at `offsets`, one at a time.
 * @param {import('../dist/index.js').BlockDevice} device
 * @param {number[]} offsets
 */
async function latencies(device, offsets) {
  const buf = Buffer.alloc(4 * KiB);
  const out = [];
  for (const offset of offsets) {
    const t = performance.now();
    await device.read(buf, offset);
    out.push((performance.now() - t) * 1000);
  }
  return out;
}

async function main() {
  const { values } = parseArgs({
    options: {
      size: { type: 'string' },
      reads: { type: 'string' },
      quick: { type: 'boolean', default: false },
      'no-boot': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      dir: { type: 'string', default: tmpdir() },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return void process.stdout.write(HELP);
  const size = parseSize(values.size ?? (values.quick ? '64M' : '1G'));
  const reads = Number(values.reads ?? (values.quick ? 100 : 400));
  const bootWhy = values['no-boot'] ? 'skipped (--no-boot)' : bootUnavailable();
  const began = performance.now();
  const say = (/** @type {string} */ s) => process.stderr.write(`bench/remote: [${((performance.now() - began) / 1000).toFixed(1)} s] ${s}\n`);
  const dir = mkdtempSync(join(values.dir, 'cowdisk-bench-remote-'));
  const registry = await startRegistry(join(dir, 'registry'));
  const proxy = await startCountingProxy(registry.port);
  const access = { dockerConfigDir: join(dir, 'no-docker') };
  const cpuStart = sampleCpu();
  const load = { start: loadavg()[0], end: 0, cores: cpus().length, foreignCores: 0 };
  /** @type {Record<string, any>} */
  const result = { size, blockSize: BLOCK, reads, load };
  try {
    const raw = join(dir, 'base.raw');
    makeBase(raw, size, say);
    const base = join(dir, 'base.snap');
    await importRaw(raw, base);
    rmSync(raw);
    const ref = `${proxy.host}/bench/base:v1`;
    say('pushing');
    let t = performance.now();
    await pushImage(base, ref, access);
    result.push = { seconds: (performance.now() - t) / 1000, bytes: statSync(base).size };

    say('cloning');
    // Clone: only metadata moves.
    const clones = [];
    for (let rep = 0; rep < 3; rep++) {
      proxy.reset();
      t = performance.now();
      await cloneFromRegistry(ref, join(dir, `clone${rep}.cow`), { ...access, cache: join(dir, `cache-clone${rep}`) });
      clones.push({ ms: performance.now() - t, bytes: proxy.counts.bytes, requests: proxy.counts.requests });
    }
    clones.sort((a, b) => a.ms - b.ms);
    result.clone = { ...clones[1], layerBytes: statSync(base).size };

    // N random block reads: bytes moved against what those blocks and their tables store.
    const sealed = await openSealedFile(realFileSystem, base);
    const picks = [];
    const seen = new Set();
    while (picks.length < reads) {
      const block = Math.floor(Math.random() * sealed.blocks);
      if (seen.has(block) || !(await sealed.storedRange(block))) continue;
      seen.add(block);
      picks.push(block);
    }
    let stored = 0;
    const pages = new Set();
    for (const b of picks) {
      stored += /** @type {{length: number}} */ (await sealed.storedRange(b)).length;
      for (const r of sealed.tableRanges(b, 1)) pages.add(`${r.index}:${r.length}`);
    }
    const tables = [...pages].reduce((sum, p) => sum + Number(p.split(':')[1]), 0);
    await sealed.close();
    const offsets = picks.map((b) => b * BLOCK + Math.floor((Math.random() * BLOCK) / (4 * KiB)) * 4 * KiB);
    const cache = join(dir, 'cache');
    const lazy = join(dir, 'lazy.cow');
    await cloneFromRegistry(ref, lazy, { ...access, cache });
    const image = await openImage(lazy, { readOnly: true });
    proxy.reset();
    say('cold reads');
    const cold = await latencies(image.device, offsets);
    say('warm and local reads');
    const remote = image.layers[0].remote;
    if (!remote) throw new Error('the clone did not open as a remote layer');
    const stats = remote.stats();
    result.randomReads = { blocks: picks.length, bytesMoved: proxy.counts.bytes, storedBytes: stored, tableBytes: tables, ratio: proxy.counts.bytes / (stored + tables), requests: proxy.counts.ranges };
    result.fsync = { syncs: stats.syncs, ms: stats.syncMs, perFetchedPieceMs: stats.syncMs / Math.max(1, stats.pieces) };
    // Warm against local: the same reads, in alternating rounds (the machine's noise hits both).
    const localClone = join(dir, 'local.cow');
    await cloneImage(base, localClone);
    const local = await openImage(localClone, { readOnly: true });
    await latencies(local.device, offsets);
    const rounds = { warm: /** @type {number[]} */ ([]), local: /** @type {number[]} */ ([]) };
    for (let round = 0; round < ROUNDS; round++) {
      const order = /** @type {Array<'warm' | 'local'>} */ (round % 2 === 0 ? ['warm', 'local'] : ['local', 'warm']);
      for (const which of order) rounds[which].push(...(await latencies(which === 'warm' ? image.device : local.device, offsets)));
    }
    await image.close();

    say('pulling');
    proxy.reset();
    t = performance.now();
    await pullImage(ref, join(dir, 'pulled', 'base.snap'), { ...access, cache: join(dir, 'cache-pull') });
    result.pull = { seconds: (performance.now() - t) / 1000, bytes: proxy.counts.bytes };
    // The lazy clone's cache filled whole by a pull: the layer is ordinary now.
    await pullImage(ref, join(dir, 'pulled-into-cache', 'base.snap'), { ...access, cache });
    const whole = await openImage(lazy, { readOnly: true });
    const wholeLat = [];
    const localAgain = [];
    for (let round = 0; round < ROUNDS; round++) {
      wholeLat.push(...(await latencies(whole.device, offsets)));
      localAgain.push(...(await latencies(local.device, offsets)));
    }
    await whole.close();
    await local.close();
    const summary = (/** @type {number[]} */ v) => ({ p50: percentile(v, 50), p99: percentile(v, 99) });
    result.latencyUs = { cold: summary(cold), warm: summary(rounds.warm), whole: summary(wholeLat), local: summary(rounds.local) };
    result.latencyUs.warmOverLocal = result.latencyUs.warm.p50 / result.latencyUs.local.p50;
    result.latencyUs.wholeOverLocal = result.latencyUs.whole.p50 / percentile(localAgain, 50);

    if (bootWhy) result.boot = { skipped: bootWhy };
    else {
      say('boot: making an ext4 image');
      const bootSize = values.quick ? 256 * MiB : size;
      const { raw: bootRaw, files } = await makeExt4Image(dir, bootSize);
      const bootSnap = join(dir, 'boot.snap');
      await importRaw(bootRaw, bootSnap);
      rmSync(bootRaw);
      const bootRef = `${proxy.host}/bench/boot:v1`;
      await pushImage(bootSnap, bootRef, access);
      const bootClone = join(dir, 'boot.cow');
      await cloneFromRegistry(bootRef, bootClone, { ...access, cache: join(dir, 'cache-boot') });
      // A boot reads a few percent of its image: every 25th file here.
      const chosen = files.filter((_, i) => i % 25 === 0);
      proxy.reset();
      say(`boot: reading ${chosen.length} of ${files.length} files through nbdfuse + loop`);
      const readBytes = await bootRead(COWDISK, bootClone, dir, chosen);
      result.boot = { imageBytes: bootSize, storedBytes: statSync(bootSnap).size, files: chosen.length, readBytes, bytesMoved: proxy.counts.bytes };
    }
  } finally {
    await proxy.close();
    await registry.stop();
    rmSync(dir, { recursive: true, force: true });
    load.end = loadavg()[0];
    load.foreignCores = foreignCores(cpuStart, sampleCpu());
  }
  process.stdout.write(values.json ? `${JSON.stringify(result, null, 2)}\n` : render(result));
}

/** @param {Record<string, any>} r */
function render(r) {
  const mib = (/** @type {number} */ b) => `${(b / MiB).toFixed(2)} MiB`;
  const kib = (/** @type {number} */ b) => `${(b / KiB).toFixed(1)} KiB`;
  const us = (/** @type {number} */ v) => `${v.toFixed(v < 100 ? 1 : 0)} µs`;
  const lines = [
    `layer: ${mib(r.size)} disk in 64 KiB blocks, ${mib(r.push.bytes)} stored; pushed in ${r.push.seconds.toFixed(1)} s`,
    `clone: ${r.clone.ms.toFixed(0)} ms, ${kib(r.clone.bytes)} moved in ${r.clone.requests} requests (median of 3)`,
    `${r.randomReads.blocks} random block reads: ${mib(r.randomReads.bytesMoved)} moved in ${r.randomReads.requests} range requests, for ${mib(r.randomReads.storedBytes)} stored + ${kib(r.randomReads.tableBytes)} of table pages: ${r.randomReads.ratio.toFixed(3)}x`,
    `fdatasync before marks: ${r.fsync.syncs} syncs, ${r.fsync.perFetchedPieceMs.toFixed(2)} ms per fetched piece`,
    `4 KiB reads, p50 / p99: cold ${us(r.latencyUs.cold.p50)} / ${us(r.latencyUs.cold.p99)}; warm (cached) ${us(r.latencyUs.warm.p50)} / ${us(r.latencyUs.warm.p99)}; whole ${us(r.latencyUs.whole.p50)} / ${us(r.latencyUs.whole.p99)}; local layer ${us(r.latencyUs.local.p50)} / ${us(r.latencyUs.local.p99)}`,
    `  warm / local p50: ${r.latencyUs.warmOverLocal.toFixed(2)}x; whole / local p50: ${r.latencyUs.wholeOverLocal.toFixed(2)}x`,
    `pull: ${r.pull.seconds.toFixed(1)} s, ${mib(r.pull.bytes)} moved, ${(r.pull.bytes / MiB / r.pull.seconds).toFixed(0)} MiB/s`,
    r.boot.skipped
      ? `boot: ${r.boot.skipped}`
      : `boot: ${r.boot.files} files (${mib(r.boot.readBytes)}) read from a ${mib(r.boot.imageBytes)} ext4 image (${mib(r.boot.storedBytes)} stored): ${mib(r.boot.bytesMoved)} moved (${((100 * r.boot.bytesMoved) / r.boot.imageBytes).toFixed(1)}% of the image)`,
    `machine: ${r.load.cores} cores, load average ${r.load.start.toFixed(2)} at start, ${r.load.end.toFixed(2)} at end; processes other than this one (the registry and server children included) used ${r.load.foreignCores.toFixed(2)} cores on average`,
  ];
  return `${lines.join('\n')}\n`;
}

main().catch((err) => {
  process.stderr.write(`bench/remote: ${err?.stack ?? err}\n`);
  process.exitCode = 1;
});
