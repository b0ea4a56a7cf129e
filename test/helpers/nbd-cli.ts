/**
 * Runs `cowdisk serve` as a child process, the way a user does, for the tests about the command
 * itself (its output, signals, exit code). It needs dist/ (`npm test` builds it first; a bare
 * `npx vitest` after a change needs `npm run build`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { REPO, requireBuilt } from './cli.js';

export interface ServeProcess {
  child: ChildProcess;
  /** The URIs printed on stdout: the default export's first. */
  uris: string[];
  stderr(): string;
  /** Sends a signal and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Starts `cowdisk serve ARGS` and resolves once it prints its URIs (the default export's, then one
 * per export: `exports` of them); rejects if it exits first.
 */
export function startServe(args: string[], options: { exports?: number; cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<ServeProcess> {
  requireBuilt();
  const child = spawn(process.execPath, [`${REPO}bin/cowdisk`, 'serve', ...args], {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  return new Promise((resolve, reject) => {
    const expected = 1 + (options.exports ?? 1);
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
      const lines = stdout.split('\n').filter(Boolean);
      if (lines.length >= expected) {
        resolve({
          child,
          uris: lines,
          stderr: () => stderr,
          stop: (signal = 'SIGTERM') => {
            child.kill(signal);
            return exited;
          },
        });
      }
    });
    void exited.then((code) => reject(new Error(`cowdisk serve exited with ${code} before listening:\n${stderr}`)));
  });
}
