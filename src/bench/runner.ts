/**
 * `cowdisk bench`: the latency of first writes against rewrites, on a throw-away clone.
 *
 * The user's image is only ever opened read-only (which writes nothing, not even the dirty
 * mark). What is written is a fresh overlay in a temporary directory, removed at the end
 * whatever happens:
 * - a snapshot layer or raw image: a clone of it, as `cowdisk clone` makes;
 * - an overlay: it cannot be a parent (it may still change), so the bench makes a fresh overlay
 *   on the overlay's own parent chain, with its geometry (block size, sub-blocks); with no
 *   parent, an empty overlay of the same size. That measures the same copy-up path from the same
 *   layers; the blocks the overlay itself holds are not part of it, which the report says.
 *
 * The measurement, with the plan from workload.ts:
 *   warm-up (WARMUP_REQUESTS: first writes, then rewrites, of blocks past the measured ones), FLUSH;
 *   first-write pass: `count` writes, each to a block never written;  FLUSH (timed);
 *   rewrite pass: the same offsets again, different bytes;            FLUSH (timed);
 *   read back the first and last offsets and compare (the writes did land).
 * Each pass keeps `queueDepth` requests in flight: a completion issues the next. A request's
 * latency runs from just before it is handed to the client (or the engine) to the moment its
 * promise resolves, as an application sees it.
 *
 * Two ways to reach the clone:
 * - through NBD (the default): the real server (src/nbd) in a child process (server-main.ts),
 *   cowdisk's client (src/bench/nbd-client.ts) in this one, over a Unix socket in the temporary
 *   directory. Two processes, because one event loop shared by client and server would charge
 *   each request with the other side's work;
 * - `engine`: BlockDevice calls on the clone in this process, no protocol, which shows what the
 *   engine costs and, by difference, what the protocol and the second process add.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CowdiskError, ErrorCode, ioError } from '../errors.js';
import { defaultSubBlocks } from '../format/constants.js';
import { cloneImage, createImage } from '../ops/create.js';
import { describeImage, type ImageDescription } from '../ops/info.js';
import { openImage, type ImageKind } from '../image/open.js';
import { servingFileSystem } from '../io/real-file.js';
import { NbdClient } from './nbd-client.js';
import { summarize, type LatencySummary } from './latency.js';
import { startServerProcess, type ServerProcess } from './server-process.js';
import { measuredOffset, planWrites, warmupOffset, type WritePlan } from './workload.js';

/** Requests in flight at most: what the server reads ahead on one connection. */
export const MAX_QUEUE_DEPTH = 256;
/** sun_path is 108 bytes with its NUL. */
const MAX_SOCKET_PATH = 107;

export interface BenchOptions {
  /** Bytes per write. */
  ioSize: number;
  queueDepth: number;
  /** Measured writes per pass (default: DEFAULT_COUNT, or as many as the disk has blocks for). */
  count?: number;
  /** Measure BlockDevice calls in this process instead of going through NBD. */
  engine?: boolean;
  /** Sub-blocks per block for the clone (default: the image's own for an overlay, else cowdisk's default). */
  subBlocks?: number;
  /** Where the temporary directory goes (default: the system's). */
  dir?: string;
  /** Stops between requests; the run then fails with BenchInterrupted after cleaning up. */
  signal?: AbortSignal;
}

export interface CloneContext {
  /** The clone's path (gone by the time the result is returned). */
  path: string;
  /** What the clone stands on: the image itself, or for an overlay image its parent (null: none). */
  parent: string | null;
  /** How the clone relates to the image, in a sentence. */
  basis: string;
  virtualSize: number;
  blockSize: number;
  subBlocks: number;
  subBlockSize: number;
  /** Layers a read goes through, the clone included. */
  chainDepth: number;
}

export interface BenchResult {
  image: string;
  imageKind: ImageKind;
  mode: 'nbd' | 'engine';
  /** What served the requests and what sent them. */
  path: string;
  clone: CloneContext;
  workload: Omit<WritePlan, 'slots'> & { queueDepth: number };
  firstWrite: LatencySummary;
  rewrite: LatencySummary;
  /** FLUSH after each pass: the cost of making it durable, not part of the passes' latencies. */
  flushMs: { afterFirstWrites: number; afterRewrites: number };
}

/** The run was stopped through its AbortSignal; the temporary files are gone. */
export class BenchInterrupted extends Error {
  constructor() {
    super('interrupted; the temporary clone is removed and the image is untouched');
    this.name = 'BenchInterrupted';
  }
}

/** What a pass writes to: an NbdClient or a BlockDevice. */
interface Target {
  write(buf: Buffer, offset: number): Promise<void>;
  read(buf: Buffer, offset: number): Promise<void>;
  flush(): Promise<void>;
}

export async function runBench(image: string, options: BenchOptions): Promise<BenchResult> {
  if (!Number.isInteger(options.queueDepth) || options.queueDepth < 1 || options.queueDepth > MAX_QUEUE_DEPTH) {
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `--queue-depth ${options.queueDepth} must be from 1 to ${MAX_QUEUE_DEPTH}.`);
  }
  // Opening read-only checks the whole chain (a changed parent fails here) and writes nothing.
  const source = await describeImage(image);
  const dir = makeTempDir(path.resolve(options.dir ?? os.tmpdir()));
  const socket = path.join(dir, 'nbd.sock');
  const clonePath = path.join(dir, 'clone.cow');
  // If the process exits before the cleanup below has run (a second Ctrl-C, see cli/bench.ts),
  // the directory still goes; the server child ends on its own when our pipe to it closes.
  const removeDir = (): void => fs.rmSync(dir, { recursive: true, force: true });
  process.on('exit', removeDir);
  let server: ServerProcess | undefined;
  let target: (Target & { close(): Promise<void> }) | undefined;
  let result: BenchResult | undefined;
  let failure: unknown;
  try {
    if (!options.engine && Buffer.byteLength(socket) > MAX_SOCKET_PATH) {
      throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `The socket path ${socket} is longer than a Unix socket allows; use a shorter --dir.`);
    }
    const clone = await makeClone(source, clonePath, options.subBlocks);
    const plan = planWrites({ size: clone.virtualSize, blockSize: clone.blockSize, subBlockSize: clone.subBlockSize }, options.ioSize, options.count);
    if (options.engine) {
      target = (await openImage(clonePath, { fs: servingFileSystem })).device;
    } else {
      server = await startServerProcess(clonePath, socket);
      target = await NbdClient.connect(socket);
    }
    const measured = await measure(target, plan, options.queueDepth, options.signal);
    result = {
      image: source.path,
      imageKind: source.kind,
      mode: options.engine ? 'engine' : 'nbd',
      path: options.engine
        ? 'the engine alone: BlockDevice calls in this process, no protocol'
        : "NBD over a Unix socket: cowdisk's server in a child process, cowdisk's client in this one",
      clone,
      workload: {
        ioSize: plan.ioSize,
        count: plan.count,
        warmupBlocks: plan.warmupBlocks,
        warmupRequests: plan.warmupRequests,
        offsetInBlock: plan.offsetInBlock,
        stride: plan.stride,
        copyUpBytes: plan.copyUpBytes,
        queueDepth: options.queueDepth,
      },
      ...measured,
    };
  } catch (err) {
    failure = err;
  }
  // Every cleanup step runs even if one fails; a cleanup failure is reported only if the run itself succeeded.
  const cleanup: (() => Promise<void>)[] = [];
  if (target) cleanup.push(() => target!.close());
  if (server) cleanup.push(() => server!.stop());
  cleanup.push(async () => removeDir());
  for (const step of cleanup) {
    try {
      await step();
    } catch (err) {
      failure ??= err;
    }
  }
  process.off('exit', removeDir);
  if (failure !== undefined) throw failure;
  return result!;
}

/** The run's temporary directory under `parent`; a --dir that is missing or not writable is the user's to fix, not a crash. */
function makeTempDir(parent: string): string {
  try {
    return fs.mkdtempSync(path.join(parent, 'cowdisk-bench-'));
  } catch (err) {
    throw ioError(err, parent, "making the benchmark's temporary directory in --dir");
  }
}

async function makeClone(source: ImageDescription, clonePath: string, subBlocksOption: number | undefined): Promise<CloneContext> {
  const subBlocks = subBlocksOption ?? source.subBlocks ?? defaultSubBlocks(source.blockSize);
  let parent: string | null;
  let basis: string;
  if (source.kind !== 'overlay') {
    parent = source.path;
    basis = `a fresh overlay cloned from the ${source.kind === 'raw' ? 'raw image' : 'snapshot'}`;
    await cloneImage(source.path, clonePath, { blockSize: source.blockSize, subBlocks });
  } else if (source.parent) {
    parent = source.parent.path;
    basis = `the image is an overlay, so a fresh overlay on its parent (${parent}) with its geometry; the blocks the overlay holds are not part of it`;
    await cloneImage(parent, clonePath, { blockSize: source.blockSize, subBlocks });
  } else {
    parent = null;
    basis = 'the image is an overlay with no parent, so an empty overlay with its geometry';
    await createImage(clonePath, { size: source.virtualSize, blockSize: source.blockSize, subBlocks });
  }
  const made = await describeImage(clonePath);
  return {
    path: made.path,
    parent,
    basis,
    virtualSize: made.virtualSize,
    blockSize: made.blockSize,
    subBlocks: made.subBlocks!,
    subBlockSize: made.blockSize / made.subBlocks!,
    chainDepth: made.depth,
  };
}

async function measure(
  target: Target,
  plan: WritePlan,
  depth: number,
  signal: AbortSignal | undefined,
): Promise<Pick<BenchResult, 'firstWrite' | 'rewrite' | 'flushMs'>> {
  const first = randomBytes(plan.ioSize);
  const again = randomBytes(plan.ioSize);
  const at = (i: number): number => measuredOffset(plan, i);
  const warm = plan.warmupBlocks;
  if (warm > 0) {
    await pass(warm, depth, signal, (i) => target.write(first, warmupOffset(plan, i)));
    await pass(plan.warmupRequests - warm, depth, signal, (i) => target.write(again, warmupOffset(plan, i % warm)));
  } else {
    const sink = Buffer.alloc(plan.ioSize);
    await pass(plan.warmupRequests, depth, signal, (i) => target.read(sink, at(i % plan.count)));
  }
  await target.flush();

  const firstWrites = await pass(plan.count, depth, signal, (i) => target.write(first, at(i)));
  const afterFirstWrites = await timed(() => target.flush());
  const rewrites = await pass(plan.count, depth, signal, (i) => target.write(again, at(i)));
  const afterRewrites = await timed(() => target.flush());

  const back = Buffer.alloc(plan.ioSize);
  for (const i of new Set([0, plan.count - 1])) {
    await target.read(back, at(i));
    if (!back.equals(again)) {
      throw new CowdiskError(ErrorCode.IO, `Reading back the write at offset ${at(i)} gave different bytes; the measurement is not valid.`);
    }
  }
  return {
    firstWrite: summarize(firstWrites.latencies, firstWrites.seconds),
    rewrite: summarize(rewrites.latencies, rewrites.seconds),
    flushMs: { afterFirstWrites, afterRewrites },
  };
}

async function timed(run: () => Promise<void>): Promise<number> {
  const start = process.hrtime.bigint();
  await run();
  return Number(process.hrtime.bigint() - start) / 1e6;
}

interface PassTiming {
  /** Nanoseconds per request, in issue order. */
  latencies: Float64Array;
  seconds: number;
}

/**
 * Runs request(0 .. n-1), keeping `depth` in flight: each completion issues the next. Settles
 * only when nothing is in flight any more, so a failure or an interruption never leaves a
 * request behind.
 */
function pass(n: number, depth: number, signal: AbortSignal | undefined, request: (i: number) => Promise<void>): Promise<PassTiming> {
  const latencies = new Float64Array(n);
  return new Promise((resolve, reject) => {
    let issued = 0;
    let settled = 0;
    let failure: unknown;
    const start = process.hrtime.bigint();
    const finish = (): void => {
      if (failure !== undefined) reject(failure);
      else if (signal?.aborted) reject(new BenchInterrupted());
      else resolve({ latencies, seconds: Number(process.hrtime.bigint() - start) / 1e9 });
    };
    const issue = (): void => {
      const i = issued++;
      const t0 = process.hrtime.bigint();
      request(i).then(
        () => {
          latencies[i] = Number(process.hrtime.bigint() - t0);
          settled++;
          if (failure === undefined && !signal?.aborted && issued < n) issue();
          else if (settled === issued) finish();
        },
        (err: unknown) => {
          failure ??= err;
          settled++;
          if (settled === issued) finish();
        },
      );
    };
    if (n <= 0 || signal?.aborted) {
      finish();
      return;
    }
    for (let k = 0; k < Math.min(depth, n); k++) issue();
  });
}
