// @ts-check
/**
 * The server's own CPU time, per request: user + system time of the server process (every
 * thread, the exited ones included: the kernel sums them per process in /proc/PID/stat) around
 * each measured pass, divided by the requests of the pass. A server that keeps a core spinning
 * between requests pays for it here, which latency alone never shows.
 *
 * "The server process" is the one that accepts on the job's socket, found through the socket
 * itself, not assumed to be the process the harness spawned: a tool started through a wrapper
 * (a shell, `env`, a script that execs nothing) would otherwise be measured as the wrapper's few
 * milliseconds. /proc/net/unix gives the inode of the listening socket bound to the path; the
 * server is the spawned process or the one of its descendants holding a descriptor to it.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { processJiffies } from './interference.mjs';

/** Clock ticks per second of /proc's CPU times (USER_HZ: 100 on every Linux build seen). */
const TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** A listening Unix socket has __SO_ACCEPTCON in /proc/net/unix's flags column. */
const SO_ACCEPTCON = 0x10000;

/**
 * CPU seconds (user + system, all threads) the process has used so far; null once it is gone.
 * @param {number} pid
 */
export function cpuSeconds(pid) {
  const jiffies = processJiffies(String(pid), false);
  return jiffies === null ? null : jiffies / TICKS;
}

/** The clock's resolution in seconds: a pass should last many of these. */
export const CPU_RESOLUTION_S = 1 / TICKS;

/**
 * The process, among `rootPid` and its descendants, that holds the socket listening on
 * `socketPath`.
 * @param {number} rootPid  the process the harness spawned
 * @param {string} socketPath
 * @returns {number}
 */
export function listeningPid(rootPid, socketPath) {
  const inode = listeningInode(socketPath);
  if (inode === null) throw new Error(`no process listens on ${socketPath} (not in /proc/net/unix)`);
  const candidates = [rootPid, ...descendants(rootPid)];
  const holder = candidates.find((pid) => holdsSocket(pid, inode));
  if (holder === undefined) throw new Error(`the socket ${socketPath} is held by none of ${candidates.join(', ')}: the server is not a process this harness started`);
  return holder;
}

/** @param {string} socketPath */
function listeningInode(socketPath) {
  for (const line of readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
    // Num RefCount Protocol Flags Type St Inode Path
    const f = line.trim().split(/\s+/);
    if (f.length >= 8 && f.slice(7).join(' ') === socketPath && (parseInt(f[3], 16) & SO_ACCEPTCON) !== 0) return f[6];
  }
  return null;
}

/** @param {number} pid @param {string} inode */
function holdsSocket(pid, inode) {
  const target = `socket:[${inode}]`;
  let fds;
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return false;
  }
  return fds.some((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`) === target;
    } catch {
      return false; // closed meanwhile
    }
  });
}

/**
 * Every live descendant of pid, nearest first.
 * @param {number} pid
 */
function descendants(pid) {
  /** @type {Map<number, number[]>} */
  const children = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let text;
    try {
      text = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue;
    }
    // pid (comm) state ppid ...: comm may hold spaces and parentheses, so count from the last ')'.
    const ppid = Number(text.slice(text.lastIndexOf(')') + 2).split(' ')[1]);
    children.set(ppid, [...(children.get(ppid) ?? []), Number(name)]);
  }
  const out = [];
  for (let queue = [pid]; queue.length; ) {
    const next = /** @type {number} */ (queue.shift());
    for (const child of children.get(next) ?? []) {
      out.push(child);
      queue.push(child);
    }
  }
  return out;
}
