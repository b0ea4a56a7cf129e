// @ts-check
/**
 * The fio jobs every tool runs, identical for all of them.
 *
 * "One write per block" must hold for every tool at once, and the tools copy up in different
 * units: cowdisk and nbdkit's cow filter in 64 KiB blocks, qcow2 in 64 KiB clusters, qcow2 with
 * extended L2 entries allocates 128 KiB clusters (in 4 KiB subclusters). The write stride is
 * therefore the largest allocation unit among the tools in the run (never below 64 KiB): each
 * 4 KiB write lands in a block or cluster nobody has touched, for every tool, and all tools see
 * the same offsets. The rewrite jobs first replay that pass unmeasured on the fresh image, then
 * measure the same offsets again.
 *
 * Every job starts with the same unmeasured warm-up on its fresh server: 4 KiB random reads and
 * writes at depth 16 in the last sixteenth of the disk, which the measured passes never touch.
 * A server that compiles its request path on the fly (cowdisk runs on V8, whose JIT makes a
 * fresh process answer its first couple of thousand requests two to four times slower) would
 * otherwise pay that in whichever job came first; a long-running server never pays it, and the
 * C servers lose nothing by the same warm-up.
 *
 * Except in the cold-start job, which measures exactly that: a fresh server's first requests
 * with no warm-up (`attach` and `serve` usually start a fresh process per clone, and its first
 * requests are what a booting guest waits for), then the same kind of pass again after the
 * warm-up, on other offsets, so each tool's cold p50 compares with its own warm one.
 */

const KiB = 1024;
const MiB = 1024 * KiB;

/** @typedef {import('./fio.mjs').FioPass} FioPass */

/**
 * @typedef {object} Job
 * @property {string} id
 * @property {string} title
 * @property {'iops' | 'mibps'} rate  how the job's throughput is shown
 * @property {'p50' | 'rate' | 'cold'} headline  the figure the summary table shows for this job ('cold': p50 and its ratio to the warm pass's)
 * @property {string} short  the summary table's column heading
 * @property {boolean} [cold]  no warm-up before the measured pass (default: warm-up first)
 * @property {FioPass} [prepare]  run first, on the same fresh image and server, not measured
 * @property {FioPass} measure
 * @property {FioPass} [reference]  measured after the warm-up that follows `measure`, on the same server (the cold-start job's warm pass)
 */

export const JOB_IDS = ['write-first-qd1', 'rewrite-qd1', 'rewrite-qd16', 'randread-qd16', 'seqread-1m', 'seqwrite-1m', 'cold-start'];

/**
 * Requests in each of the cold-start job's passes, half writes and half reads (--quick: a
 * quarter): about as many as a fresh V8 process needs before its request path is compiled.
 */
export const COLD_REQUESTS = 2000;

/**
 * The sequential-write job waits this long before its measured pass, for every tool. Writing new
 * data takes new page-cache pages, and on a virtual machine with free page reporting (this one) a
 * page the guest freed goes back to the host after about 2 s and faults in again, in the host, on
 * its next first touch. So a tool that started writing within 2 s of the previous job deleting its
 * files got the previous job's pages, still backed, and ran up to 3x faster for that alone (nbdkit,
 * which starts at once, after cowdisk, which warms up first: docs/PERFORMANCE.md). After this wait
 * every tool writes into reported memory, as a long-running host would.
 */
export const SETTLE_MS = 3000;

/** The smallest stride the first-write job uses, whatever the tools' units. */
export const MIN_STRIDE = 64 * KiB;

/**
 * The part of the disk the measured passes use; the rest, at the end, is the warm-up's.
 * @param {number} size
 */
export function measuredSize(size) {
  return size - size / 16;
}

/**
 * @param {{ size: number, quick: boolean }} o
 * @returns {FioPass}
 */
export function warmupPass({ size, quick }) {
  return {
    name: 'warm-up', rw: 'randrw', bs: 4 * KiB, stride: 4 * KiB, iodepth: 16, ios: quick ? 1024 : 4096,
    offset: measuredSize(size), size,
  };
}

/**
 * @param {object} o
 * @param {number} o.size  bytes of the base (and of every export); the jobs use measuredSize()
 * @param {number} o.stride  bytes between first writes
 * @param {boolean} o.quick  smoke-test sizes: each job a fraction of a second
 * @returns {Job[]}
 */
export function buildJobs(o) {
  const { stride, quick } = o;
  const size = measuredSize(o.size);
  const firstWrites = Math.floor(size / stride);
  const pattern = `4 KiB every ${stride / KiB} KiB`;
  /** @type {(name: string, iodepth: number, loops?: number) => FioPass} */
  const sparseWrites = (name, iodepth, loops = 1) => ({
    name, rw: 'write', bs: 4 * KiB, stride, iodepth, ios: firstWrites, loops, size,
  });
  const seqIos = Math.floor(size / MiB);
  // The cold pass and the warm one each get half the measured part, so no write of the warm
  // pass lands where the cold one wrote (which would make some of them cheaper rewrites).
  const half = Math.floor(size / 2 / MiB) * MiB;
  const coldIos = quick ? COLD_REQUESTS / 4 : COLD_REQUESTS;
  /** @type {(name: string, offset: number, end: number, seed: number) => FioPass} */
  const mixed = (name, offset, end, seed) => ({ name, rw: 'randrw', bs: 4 * KiB, stride: 4 * KiB, iodepth: 1, ios: coldIos, offset, size: end, seed });
  return [
    {
      id: 'write-first-qd1',
      headline: 'p50',
      short: 'first write QD1, p50',
      title: `First write, QD1 (${pattern}, ${firstWrites} writes, each to an untouched block)`,
      rate: 'iops',
      measure: sparseWrites('write-first-qd1', 1),
    },
    {
      id: 'rewrite-qd1',
      headline: 'p50',
      short: 'rewrite QD1, p50',
      title: `Rewrite, QD1 (the same ${firstWrites} offsets again)`,
      rate: 'iops',
      prepare: sparseWrites('prepare', 1),
      measure: sparseWrites('rewrite-qd1', 1),
    },
    {
      id: 'rewrite-qd16',
      headline: 'rate',
      short: 'rewrite QD16',
      title: `Rewrite, QD16 (the same offsets, ${quick ? 1 : 4} passes)`,
      rate: 'iops',
      prepare: sparseWrites('prepare', 1),
      measure: sparseWrites('rewrite-qd16', 16, quick ? 1 : 4),
    },
    {
      id: 'randread-qd16',
      headline: 'rate',
      short: 'random read QD16',
      title: 'Random 4 KiB read through the overlay to the base, QD16',
      rate: 'iops',
      measure: {
        name: 'randread-qd16', rw: 'randread', bs: 4 * KiB, stride: 4 * KiB, iodepth: 16,
        ios: Math.min(Math.floor(size / (4 * KiB)), quick ? 4096 : 65536), size,
      },
    },
    {
      id: 'seqread-1m',
      headline: 'rate',
      short: '1 MiB seq. read',
      title: `Sequential 1 MiB read through the overlay to the base, QD4 (${seqIos} MiB)`,
      rate: 'mibps',
      measure: { name: 'seqread-1m', rw: 'read', bs: MiB, stride: MiB, iodepth: 4, ios: seqIos, size },
    },
    {
      id: 'seqwrite-1m',
      headline: 'rate',
      short: '1 MiB seq. write',
      title: `Sequential 1 MiB write to a fresh overlay, QD4 (${seqIos} MiB, whole blocks)`,
      rate: 'mibps',
      measure: { name: 'seqwrite-1m', rw: 'write', bs: MiB, stride: MiB, iodepth: 4, ios: seqIos, size, settleMs: SETTLE_MS },
    },
    {
      id: 'cold-start',
      headline: 'cold',
      short: 'cold start QD1, p50 × warm',
      title: `Cold start, QD1: a fresh server's first ${coldIos} requests (4 KiB, random, half writes, half reads), no warm-up; then the same after the warm-up`,
      rate: 'iops',
      cold: true,
      measure: mixed('cold-start', 0, half, 1),
      reference: mixed('warm-start', half, 2 * half, 2),
    },
  ];
}

/**
 * The chain-depth variant (cowdisk only): random reads at QD16 through a chain, the same pass
 * at every depth so the depths compare directly.
 * @param {{ size: number, quick: boolean }} o
 * @returns {FioPass}
 */
export function chainReadPass(o) {
  const { quick } = o;
  const size = measuredSize(o.size);
  return {
    name: 'randread-chain-qd16', rw: 'randread', bs: 4 * KiB, stride: 4 * KiB, iodepth: 16,
    ios: Math.min(Math.floor(size / (4 * KiB)), quick ? 4096 : 65536), size,
  };
}
