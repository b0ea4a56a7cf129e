/**
 * Starting and stopping the bench's NBD server child (server-main.ts) from the bench process.
 * The child is the same Node binary running the built server-main.js; it is stopped by its PID
 * with SIGTERM, and killed only if it has not finished closing the image in STOP_TIMEOUT_MS. A child
 * that neither listens nor exits within START_TIMEOUT_MS is killed, so the bench cannot hang there.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { CowdiskError, ErrorCode } from '../errors.js';

const STOP_TIMEOUT_MS = 30_000;
const START_TIMEOUT_MS = 60_000;

export interface StartOptions {
  /** The script the child runs (tests give one of their own); default the built server-main.js. */
  entry?: string;
  /** How long the child may take to listen (ms). */
  startTimeoutMs?: number;
}

export interface ServerProcess {
  readonly pid: number;
  /** Stops the server (it finishes in-flight requests and closes the image); fails if it did not exit cleanly. */
  stop(): Promise<void>;
}

/** Starts the server on `image`, listening on the Unix socket `socket`; resolves once it listens. */
export function startServerProcess(image: string, socket: string, options: StartOptions = {}): Promise<ServerProcess> {
  const entry = options.entry ?? fileURLToPath(new URL('./server-main.js', import.meta.url));
  const child = spawn(process.execPath, [entry, image, socket], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const failed = (what: string): CowdiskError =>
    new CowdiskError(ErrorCode.IO, `The benchmark's NBD server ${what}${stderr.trim() ? `: ${stderr.trim()}` : '.'}`);

  return new Promise((resolve, reject) => {
    let stdout = '';
    const limit = options.startTimeoutMs ?? START_TIMEOUT_MS;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, limit);
    child.once('error', (err) => {
      // A child that could not be spawned never exits: the start timer must not outlive it.
      clearTimeout(timer);
      reject(failed(`could not start (${err.message})`));
    });
    // Rejects only once the child is gone, whichever way it went.
    void exited.then((code) => {
      clearTimeout(timer);
      reject(failed(timedOut ? `did not start listening within ${limit / 1000} s, and was stopped` : `exited with ${code} before listening`));
    });
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
      if (stdout.includes('ready\n')) {
        clearTimeout(timer);
        resolve({
          pid: child.pid!,
          stop: async () => {
            const code = await stopChild(child, exited);
            if (code !== 0) throw failed(`exited with ${code} while closing the clone`);
          },
        });
      }
    });
  });
}

async function stopChild(child: ChildProcess, exited: Promise<number | null>): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return exited;
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), STOP_TIMEOUT_MS)));
  const outcome = await Promise.race([exited, late]);
  clearTimeout(timer);
  if (outcome !== 'late') return outcome;
  child.kill('SIGKILL');
  await exited;
  return null;
}
