#!/usr/bin/env node
// Does a deep chain read as fast as a shallow one? A 64-deep chain made the way users make one
// (clone, write, `snapshot`, 63 times over a base), against the same disk flattened into a single
// layer under a fresh clone (1-deep), and against the 63 layers committed into one over the base
// (2-deep: the same blocks come from the base or from one other file, where the 64-deep chain
// spreads them over 64 files). All three read the same bytes.
//
//   npm run build && node bench/chain-depth.mjs [--quick]
//
// Cases, each on both chains:
// - random 4 KiB reads, warm: the chain has resolved which layer serves each block (the steady
//   state of a running VM);
// - sequential 1 MiB reads, warm;
// - cold: open the chain and read one 4 KiB block in each 1024-block page, so every page is
//   resolved once (what a VM's first seconds cost). Opening 65 files costs more than opening 2;
//   this case shows how much.
// docs/LIFECYCLE.md quotes the figures.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import b from 'benny';
import { cloneImage, commitOverlay, flattenImage, importRaw, openImage, snapshotOverlay } from '../dist/index.js';

const quick = process.argv.includes('--quick');
const MiB = 1024 * 1024;
const BLOCK = 64 * 1024;
const SIZE = (quick ? 64 : 256) * MiB;
const DEPTH = 64;
const dir = mkdtempSync(join(tmpdir(), 'cowdisk-chain-'));

// The base: half random, half zeros, sealed.
const raw = Buffer.alloc(SIZE);
for (let at = 0; at < SIZE; at += 2 * MiB) randomBytes(MiB).copy(raw, at);
writeFileSync(join(dir, 'base.raw'), raw);
await importRaw(join(dir, 'base.raw'), join(dir, 'base.snap'));

// 63 rounds of "write 16 random blocks, snapshot": base + 63 layers + the overlay.
const deep = join(dir, 'deep.cow');
await cloneImage(join(dir, 'base.snap'), deep);
for (let round = 1; round < DEPTH; round++) {
  const image = await openImage(deep);
  for (let i = 0; i < 16; i++) await image.write(randomBytes(BLOCK), Math.floor(Math.random() * (SIZE / BLOCK)) * BLOCK);
  await image.close();
  await snapshotOverlay(deep, join(dir, `layer-${round}.snap`));
}
await flattenImage(deep, join(dir, 'flat.snap'));
const shallow = join(dir, 'shallow.cow');
await cloneImage(join(dir, 'flat.snap'), shallow);

const merged = join(dir, 'merged.cow');
await cloneImage(join(dir, `layer-${DEPTH - 1}.snap`), merged);
await commitOverlay(merged, { into: join(dir, 'layer-1.snap'), output: join(dir, 'merged.snap') });

const files = { '1-deep': shallow, '2-deep': merged, '64-deep': deep };
const chains = {};
for (const [name, file] of Object.entries(files)) chains[name] = await openImage(file, { readOnly: true });
if (chains['64-deep'].chain.length !== DEPTH + 1) throw new Error(`the deep chain has ${chains['64-deep'].chain.length} layers`);
const reference = Buffer.alloc(SIZE);
const other = Buffer.alloc(SIZE);
await chains['64-deep'].read(reference, 0);
for (const image of Object.values(chains)) {
  await image.read(other, 0);
  if (!other.equals(reference)) throw new Error('the chains do not read the same disk');
}

const small = Buffer.alloc(4096);
const big = Buffer.alloc(MiB);
const offsets = Array.from({ length: 4096 }, () => Math.floor(Math.random() * (SIZE / 4096)) * 4096);
const us = (result) => `  ${result.name}: ${(1e6 / result.ops).toFixed(2)} µs/op (±${result.margin}%)`;
const options = b.configure({ cases: { maxTime: quick ? 0.5 : 3, minSamples: 5 } });

let n = 0;
await b.suite(
  'random 4 KiB reads, warm',
  options,
  ...Object.entries(chains).map(([name, image]) => b.add(name, async () => image.read(small, offsets[n++ & 4095]))),
  b.cycle(us),
  b.complete(),
);

let seq = 0;
await b.suite(
  'sequential 1 MiB reads, warm',
  options,
  ...Object.entries(chains).map(([name, image]) => b.add(name, async () => image.read(big, (seq++ * MiB) % SIZE))),
  b.cycle(us),
  b.complete(),
);

const pages = SIZE / BLOCK / 1024;
await b.suite(
  `cold: open the chain, read one block in each of its ${pages} resolution pages, close`,
  options,
  ...Object.entries(files).map(([name, file]) =>
    b.add(name, async () => {
      const image = await openImage(file, { readOnly: true });
      for (let p = 0; p < pages; p++) await image.read(small, p * 1024 * BLOCK);
      await image.close();
    }),
  ),
  b.cycle((result) => `  ${result.name}: ${(1e3 / result.ops).toFixed(2)} ms/op (±${result.margin}%)`),
  b.complete(),
);

for (const image of Object.values(chains)) await image.close();
rmSync(dir, { recursive: true, force: true });
