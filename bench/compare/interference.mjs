// @ts-check
/**
 * How much of the machine something else used while a measurement ran.
 *
 * On a 2-core machine shared with other work, one busy neighbour turns a 40 µs request into
 * 80 µs, and the load average cannot tell (fio and the server load the machine by themselves).
 * So each measurement samples the kernel's CPU accounting (/proc/stat, including time stolen by
 * the hypervisor) before and after, subtracts what this process, its waited-for children (fio)
 * and the server under test used, and reports the rest in cores. Near 0: the figure is clean.
 */
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';

/**
 * @typedef {object} CpuSample
 * @property {number} busy  jiffies every CPU spent not idle (steal included)
 * @property {number} total  jiffies on every CPU
 * @property {number} own  jiffies of this process, its reaped children and the server
 */

/** @param {number} [serverPid]  the server under test, whose CPU time is ours */
export function sampleCpu(serverPid) {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already inside user)
  const [user, nice, system, idle, iowait, irq, softirq, steal] = f;
  const busy = user + nice + system + irq + softirq + steal;
  return { busy, total: busy + idle + iowait, own: (processJiffies('self', true) ?? 0) + (serverPid ? (processJiffies(String(serverPid), false) ?? 0) : 0) };
}

/**
 * Cores used by everything else between two samples.
 * @param {CpuSample} a
 * @param {CpuSample} b
 */
export function foreignCores(a, b) {
  const wall = (b.total - a.total) / cpus().length;
  if (wall <= 0) return 0;
  return Math.max(0, (b.busy - a.busy - (b.own - a.own)) / wall);
}

/**
 * Waits until everything else together uses less than `threshold` cores over half a second, or
 * `maxSeconds` have passed. Called between jobs, when nothing of ours is running.
 * @param {number} maxSeconds
 * @param {number} [threshold]
 * @returns {Promise<number>}  the seconds waited
 */
export async function waitForIdle(maxSeconds, threshold = 0.25) {
  const start = Date.now();
  for (;;) {
    const a = sampleCpu();
    await new Promise((resolve) => setTimeout(resolve, 500));
    if (foreignCores(a, sampleCpu()) < threshold) break;
    if (Date.now() - start > maxSeconds * 1000) break;
  }
  return (Date.now() - start) / 1000;
}

/**
 * utime + stime (and the reaped children's, for ourselves) from /proc/PID/stat, in clock ticks;
 * null once the process is gone.
 * @param {string} pid
 * @param {boolean} children
 * @returns {number | null}
 */
export function processJiffies(pid, children) {
  let text;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // Fields after the command name, which is in parentheses and may contain spaces:
  // state(0) ... utime(11) stime(12) cutime(13) cstime(14).
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ').map(Number);
  return f[11] + f[12] + (children ? f[13] + f[14] : 0);
}
