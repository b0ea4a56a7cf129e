// @ts-check
/**
 * One NBD server process for one job: started by us, listening on a Unix socket in the job's
 * temporary directory, stopped by its PID.
 *
 * "Ready" means a client can connect, not merely that the socket file exists: a server creates
 * the file at bind() and only accepts after listen(), so we poll until a connect() succeeds and
 * close that probe connection at once (every server here copes with a client that leaves during
 * the handshake). If the process exits first, its stderr is the error message.
 */
import { spawn } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { listeningPid } from './server-cpu.mjs';

/** A Unix socket path longer than this does not fit in sockaddr_un. */
const MAX_SOCKET_PATH = 107;
const READY_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 10_000;

/**
 * @typedef {object} Launch  How a tool starts its server on a given socket.
 * @property {string} command
 * @property {string[]} args
 * @property {Record<string, string>} [env]  added to the harness's environment
 * @property {string} [exportName]  the NBD export name to ask for ("" when omitted)
 */

/**
 * @typedef {object} RunningServer
 * @property {number} pid  the process that accepts on the socket (whose CPU time is the server's)
 * @property {string} uri  the NBD URI for fio and libnbd clients
 * @property {() => Promise<void>} stop
 */

/** Every server still running, so an interrupted run can stop exactly the ones it started. */
const running = new Set();

/**
 * @param {Launch} launch
 * @param {string} socketPath
 * @param {string} logDir  where the server's stderr goes
 * @returns {Promise<RunningServer>}
 */
export async function startServer(launch, socketPath, logDir) {
  if (socketPath.length > MAX_SOCKET_PATH) {
    throw new Error(`socket path ${socketPath} is longer than ${MAX_SOCKET_PATH} bytes; use a shorter --dir`);
  }
  const logPath = join(logDir, 'server.log');
  const log = openSync(logPath, 'w');
  const child = spawn(launch.command, launch.args, {
    stdio: ['ignore', log, log],
    env: { ...process.env, ...launch.env },
  });
  closeSync(log);
  /** @type {{ code: number | null, signal: string | null } | null} */
  let exited = null;
  const exit = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      running.delete(stop);
      resolve(undefined);
    });
  });
  child.on('error', () => {}); // spawn failures also arrive as 'exit'; the message is below
  const describe = () => `${launch.command} ${launch.args.join(' ')}`;

  async function stop() {
    if (exited === null && child.pid !== undefined) {
      process.kill(child.pid, 'SIGTERM');
      const timer = setTimeout(() => {
        if (exited === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
      }, STOP_TIMEOUT_MS);
      await exit;
      clearTimeout(timer);
    }
  }
  running.add(stop);

  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (exited !== null) {
      const { code, signal } = exited;
      throw new Error(
        `server exited (${signal ?? `code ${code}`}) before accepting connections: ${describe()}\n` +
          tail(logPath),
      );
    }
    if (await accepts(socketPath)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`server did not accept on ${socketPath} within ${READY_TIMEOUT_MS} ms: ${describe()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const name = encodeURIComponent(launch.exportName ?? '');
  let pid;
  try {
    pid = listeningPid(/** @type {number} */ (child.pid), socketPath);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    pid,
    uri: `nbd+unix:///${name}?socket=${socketPath}`,
    stop,
  };
}

/** Stops every server this process started and has not stopped yet (used on SIGINT). */
export async function stopAllServers() {
  await Promise.all([...running].map((stop) => stop()));
}

/** @param {string} socketPath */
function accepts(socketPath) {
  return new Promise((resolve) => {
    const socket = connect(socketPath);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** @param {string} path */
function tail(path) {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-20).join('\n');
  } catch {
    return '';
  }
}
