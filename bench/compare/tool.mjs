// @ts-check
/**
 * What a tool under comparison is. A tool knows three things: whether it can run here, how to
 * make a fresh writable image over the shared base in a job's directory, and the command line
 * of its NBD server on a given socket. The harness does everything else (sockets, start,
 * readiness, fio, stop by PID, cleanup), so cowdisk (cowdisk.mjs) plugs in exactly like its
 * peers (peers.mjs).
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** @typedef {import('./server.mjs').Launch} Launch */

/**
 * @typedef {object} RunContext  What every tool shares within one run.
 * @property {string} dir  the run's temporary directory
 * @property {string} base  the random-data raw base, read-only for everyone
 * @property {number} size  its size in bytes
 */

/**
 * @typedef {object} Tool
 * @property {string} id  stable name for --tools and the JSON output
 * @property {string} label  the row label in the table
 * @property {'cow' | 'floor' | 'protocol'} role  'floor': no copy-on-write; 'protocol': no storage
 * @property {number} unit  bytes a first write allocates or copies up (0: none)
 * @property {() => string | null} unavailable  why it cannot run here, or null
 * @property {() => string} version
 * @property {(run: RunContext) => Promise<void>} [prepare]  once per run, before any job
 * @property {(run: RunContext, dir: string) => Promise<Launch>} fresh  a fresh image in dir, and its server
 */

/** @param {string} name */
export function onPath(name) {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/**
 * @param {string[]} programs
 * @param {string} pkg  the Debian package that provides them
 */
export function missingPrograms(programs, pkg) {
  const missing = programs.filter((p) => !onPath(p));
  return missing.length ? `${missing.join(', ')} not found: install the Debian package ${pkg} (npm run setup does)` : null;
}

/** @param {string} command @param {string[]} args */
export function firstLine(command, args) {
  const r = spawnSync(command, args, { encoding: 'utf8' });
  return (r.stdout || r.stderr || '').split('\n')[0].trim();
}

/**
 * Runs a preparation command to completion; its failure is the run's failure.
 * @param {string} command @param {string[]} args
 */
export function runChecked(command, args) {
  const r = spawnSync(command, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${r.stderr || r.error || `exit ${r.status}`}`);
  return r.stdout;
}
