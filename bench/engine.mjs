#!/usr/bin/env node
// Micro-benchmarks of the engine alone (no NBD): import throughput, and the latency of a 4 KiB
// first write (copy-on-write into a block not yet in the overlay) against a 4 KiB rewrite (in
// place), with 4 KiB sub-blocks (the default) and with whole-block copy-up (--sub-blocks 1).
//
//   npm run build && node bench/engine.mjs
//
// Files live in a temporary directory on the same file system as the OS temp dir.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import b from 'benny';
import { cloneImage, importRaw, openImage } from '../dist/index.js';

const dir = mkdtempSync(join(tmpdir(), 'cowdisk-bench-'));
const MiB = 1024 * 1024;

// A 64 MiB raw image: three quarters random (incompressible), one quarter zeros.
const rawPath = join(dir, 'base.raw');
const raw = Buffer.alloc(64 * MiB);
for (let at = 0; at < raw.length; at += 4 * MiB) randomBytes(3 * MiB).copy(raw, at);
writeFileSync(rawPath, raw);

let imports = 0;
await b.suite(
  'import (64 MiB raw, 3/4 random, 1/4 zero)',
  b.add('import', async () => {
    await importRaw(rawPath, join(dir, `import-${imports++}.cow`));
  }),
  b.cycle((result) => `  ${result.name}: ${(result.ops * 64).toFixed(0)} MiB/s (${result.ops.toFixed(2)} imports/s ±${result.margin}%)`),
  b.complete(),
);

// The write cases clone a large sparse raw base so that every first write meets a block never
// written before (wrapping around would turn first writes into rewrites). Parent reads of a
// sparse base come from holes; the data-bearing copy-up cost is the import case's territory.
const bigBase = join(dir, 'big.raw');
writeFileSync(bigBase, '');
truncateSync(bigBase, 512 * 1024 * MiB);

async function writeCases(label, subBlocks, unaligned) {
  const overlayPath = join(dir, `vm-${subBlocks}-${unaligned}.cow`);
  await cloneImage(bigBase, overlayPath, { subBlocks });
  const image = await openImage(overlayPath);
  const length = unaligned ? 2048 : 4096;
  const inBlock = unaligned ? 4096 + 1024 : 4096;
  const data = randomBytes(length);
  const blocks = image.size / image.blockSize;
  let next = 0;
  let again = 0;
  await b.suite(
    `${unaligned ? '2 KiB writes inside a 4 KiB sub-block' : '4 KiB writes'}, ${label}`,
    b.configure({ cases: { maxTime: 1, minSamples: 5 } }),
    b.add('first write (copy-on-write)', async () => {
      await image.write(data, next++ * image.blockSize + inBlock);
    }),
    // Rewrites cycle over the blocks the first-write case wrote.
    b.add('rewrite (in place)', async () => {
      await image.write(data, (again++ % next) * image.blockSize + inBlock);
    }),
    b.cycle((result) => `  ${result.name}: ${(1e6 / result.ops).toFixed(1)} µs/op (${Math.round(result.ops)} ops/s ±${result.margin}%)`),
    b.complete(),
  );
  if (next > blocks) throw new Error(`the first-write case wrapped around (${next} writes, ${blocks} blocks): make the base larger`);
  await image.close();
}

await writeCases('4 KiB sub-blocks (default)', 16, false);
await writeCases('4 KiB sub-blocks (default)', 16, true);
await writeCases('whole-block copy-up (--sub-blocks 1)', 1, false);

rmSync(dir, { recursive: true, force: true });
