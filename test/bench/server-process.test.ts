/**
 * The bench's server child: a child that never starts listening is stopped after the start time
 * limit (the bench must not hang on it), and its failure names what happened.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { startServerProcess } from '../../src/bench/server-process.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

function scratch(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cowdisk-bench-start-'));
  dirs.push(dir);
  return dir;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('a server that never listens is stopped after the start limit, and the error says so', async () => {
  const dir = scratch();
  const pidFile = path.join(dir, 'pid');
  // Stands in for a server hung before listening: records its pid, says nothing, never exits.
  const entry = path.join(dir, 'hang.mjs');
  fs.writeFileSync(entry, `import { writeFileSync } from 'node:fs';\nwriteFileSync(${JSON.stringify(pidFile)}, String(process.pid));\nsetInterval(() => {}, 1000);\n`);
  const err = await startServerProcess('unused.cow', path.join(dir, 's.sock'), { entry, startTimeoutMs: 3000 }).catch((e: unknown) => e);
  expect(err).toMatchObject({ code: ErrorCode.IO, message: expect.stringMatching(/did not start listening within 3 s, and was stopped/) });
  const pid = Number(fs.readFileSync(pidFile, 'utf8'));
  expect(pid).toBeGreaterThan(0);
  expect(alive(pid)).toBe(false);
});

test('a server that exits before listening is reported with its exit code and what it printed', async () => {
  const dir = scratch();
  const entry = path.join(dir, 'fail.mjs');
  fs.writeFileSync(entry, `process.stderr.write('cannot open the clone');\nprocess.exit(3);\n`);
  const err = await startServerProcess('unused.cow', path.join(dir, 's.sock'), { entry, startTimeoutMs: 30_000 }).catch((e: unknown) => e);
  expect(err).toMatchObject({ code: ErrorCode.IO, message: expect.stringMatching(/exited with 3 before listening: cannot open the clone/) });
});
