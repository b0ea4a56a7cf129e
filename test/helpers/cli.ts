/**
 * Runs the built `cowdisk` command line as a child process, the way a user does. It needs dist/
 * (`npm test` builds it first; a bare `npx vitest` after a change needs `npm run build`).
 */
import { spawn, type SpawnOptions } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
const BIN = `${REPO}bin/cowdisk`;

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Fails, saying what to run, when the CLI has not been built. */
export function requireBuilt(): void {
  if (!existsSync(`${REPO}dist/cli/main.js`)) {
    throw new Error('dist/ is not built: run `npm run build` (or `npm test`, which builds first)');
  }
}

export function cowdisk(args: string[], options: SpawnOptions = {}): Promise<CliResult> {
  requireBuilt();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}
