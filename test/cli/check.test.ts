import { readFileSync, utimesSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { startServe } from '../helpers/nbd-cli.js';
import { run } from '../helpers/nbd-tools.js';
import { REPO } from '../helpers/cli.js';
import { KiB, cowdisk, flipByte, json, ok, scratchDir, writeRaw } from './fixtures.js';

const { at } = scratchDir();
const B = 64 * KiB;
let raw: Buffer;

beforeAll(async () => {
  raw = writeRaw(at('base.raw'), 'rtrzzrtz');
  await ok(['import', at('base.raw'), at('base.snap')]);
});

/** A copy of base.snap with one byte flipped inside the stored bytes of block `block`. */
async function damagedCopy(name: string, block: number): Promise<string> {
  const snap = readFileSync(at('base.snap'));
  // A block of random bytes is stored as is: find it by content, not by trusting the writer.
  const where = snap.indexOf(raw.subarray(block * B, (block + 1) * B));
  expect(where).toBeGreaterThan(0);
  await run('/bin/cp', [at('base.snap'), at(name)]);
  flipByte(at(name), where + 1000);
  return at(name);
}

/** An overlay left as a crash leaves it: written, flushed, never closed (the process exits). */
async function crashedOverlay(name: string): Promise<string> {
  await ok(['clone', at('base.snap'), at(name)]);
  const script = `const m = await import(process.argv[1]); const i = (await m.openImage(process.argv[2])).device;
    await i.write(Buffer.alloc(8192, 1), 4096); await i.flush(); process.exit(0);`;
  await run(process.execPath, ['--input-type=module', '-e', script, `${REPO}dist/index.js`, at(name)]);
  return at(name);
}

describe('cowdisk check', () => {
  it('passes an intact snapshot (exit code 0) after verifying every stored block', async () => {
    const { stdout } = await ok(['check', at('base.snap')]);
    expect(stdout).toBe(`${at('base.snap')}: no problems found (1 layer, 5 stored blocks verified, 320 KiB).\n`);
  });

  it('names the damaged block of a snapshot and exits 3', async () => {
    const bad = await damagedCopy('bad.snap', 2);
    const result = await cowdisk(['check', bad]);
    expect(result.code).toBe(3);
    expect(result.stdout).toContain(`error: ${bad}: block 2 (disk bytes ${2 * B}..${3 * B - 1}) does not match its SHA-256 digest [${ErrorCode.CORRUPT}]`);
    expect(result.stdout).toMatch(/1 error, 0 warnings\.\n$/);
  });

  it('--json reports each problem with severity, code, file and block', async () => {
    const bad = await damagedCopy('bad-json.snap', 0);
    const result = await cowdisk(['check', '--json', bad]);
    expect(result.code).toBe(3);
    const report = JSON.parse(result.stdout);
    expect(report).toMatchObject({ image: bad, ok: false, repaired: [], stats: { layers: 1, blocksVerified: 5 } });
    expect(report.problems).toEqual([{ severity: 'error', code: ErrorCode.CORRUPT, message: expect.stringContaining('SHA-256'), path: bad, block: 0 }]);
  });

  it('checks the layers below an overlay too', async () => {
    const bad = await damagedCopy('under.snap', 5);
    await ok(['clone', bad, at('over-bad.cow')]);
    const result = await cowdisk(['check', '--json', at('over-bad.cow')]);
    expect(result.code).toBe(3);
    expect(JSON.parse(result.stdout).problems).toMatchObject([{ path: bad, block: 5 }]);
  });

  it('reports a parent changed since the clone was made (exit code 3)', async () => {
    await run('/bin/cp', [at('base.raw'), at('moving.raw')]);
    await ok(['clone', at('moving.raw'), at('moving.cow')]);
    utimesSync(at('moving.raw'), new Date(), new Date(Date.now() + 5000));
    const result = await cowdisk(['check', '--json', at('moving.cow')]);
    expect(result.code).toBe(3);
    expect(JSON.parse(result.stdout).problems).toMatchObject([{ severity: 'error', code: ErrorCode.PARENT_CHANGED, path: at('moving.raw') }]);
  });

  it('warns about an overlay that was not closed cleanly (exit code 0), and --repair clears the mark', async () => {
    const crashed = await crashedOverlay('crashed.cow');
    expect((await json(['info', crashed])).dirty).toBe(true);
    const warned = await ok(['check', crashed]);
    expect(warned.stdout).toMatch(/^warning: .*was not closed cleanly.*\[COWDISK_W_DIRTY\]\n.*: 0 errors, 1 warning\.\n$/);
    const repaired = await ok(['check', '--repair', crashed]);
    expect(repaired.stdout).toContain('repaired: the not-closed-cleanly mark was cleared.');
    expect((await json(['info', crashed])).dirty).toBe(false);
    expect((await ok(['check', crashed])).stdout).toContain('no problems found (2 layers');
  });

  it('refuses --repair while the overlay is served: COWDISK_E_LOCKED, exit code 1, not "damage found"', async () => {
    await ok(['clone', at('base.snap'), at('busy.cow')]);
    const server = await startServe(['--socket', at('busy.sock'), at('busy.cow')]);
    try {
      const result = await cowdisk(['check', '--repair', at('busy.cow')]);
      expect(result.code).toBe(1);
      expect(result.stderr).toContain(ErrorCode.LOCKED);
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });

  it('names a file that does not exist (exit code 1)', async () => {
    const result = await cowdisk(['check', at('ghost.snap')]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`${at('ghost.snap')}: no such file`);
  });

  it('--help shows an example and the exit codes', async () => {
    const { stdout } = await ok(['check', '--help']);
    expect(stdout).toContain('Examples:\n  $ cowdisk check base.snap');
    expect(stdout).toContain('3 when any was');
  });
});
