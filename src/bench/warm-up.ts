/**
 * Compiles the request path before the first real client arrives.
 *
 * Why: `serve` and `attach` usually start a fresh process per clone, and a fresh V8 process runs
 * its request path in the interpreter until the JIT has seen it often enough to compile it: its
 * first couple of thousand requests took two to four times as long as later ones (docs/
 * PERFORMANCE.md, the cold-start job). A guest booting on a fresh server is exactly that client.
 *
 * How: before listening, the server process runs real NBD traffic through the real code, on a
 * throw-away clone of a small sparse raw base in a private temporary directory, served by an
 * NbdServer on a Unix socket there and driven by cowdisk's own client (nbd-client.ts, which is
 * why this lives beside it). The mix is what a disk sees first: first writes and rewrites of
 * 4 KiB, reads through to the base and of written blocks, at queue depth 1 and 16. The functions
 * are the same ones the real exports then run, so their type feedback and compiled code carry
 * over. Real files, not memory ones: measured, a warm-up on a MemoryFileSystem left the engine's
 * file calls to be recompiled for the real class. Nothing of the user's is touched, and the
 * directory (a 4 MiB base and its clone) is gone before `serve` listens.
 *
 * Cost: about half a second of start-up here (docs/PERFORMANCE.md), never more than
 * WARM_UP_BUDGET_MS.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { debuglog } from 'node:util';
import { cloneImage } from '../ops/create.js';
import { openImage } from '../image/open.js';
import { servingFileSystem } from '../io/real-file.js';
import { NbdServer } from '../nbd/index.js';
import { NbdClient } from './nbd-client.js';

const debug = debuglog('cowdisk');
const KiB = 1024;
const MiB = 1024 * KiB;
/** The throw-away disk: 64 blocks of 64 KiB, 1024 sub-blocks of 4 KiB to write for the first time. */
const DISK = 4 * MiB;
const IO = 4 * KiB;
/** Requests per round; V8 compiles a function after it has run a few hundred to a few thousand times. */
const ROUND = 512;

/**
 * The most start-up time the warm-up may take (ms): it stops between rounds once past it. Here it
 * needs about half of it; on a much slower machine (a guest under emulation) it does less rather
 * than hold the server back for minutes.
 */
export const WARM_UP_BUDGET_MS = 1000;

export interface WarmUpOptions {
  /** The polling window the real server will use, so the poller is compiled on its real path too. */
  pollMicros?: number;
  /** Where the temporary socket goes (default the system's temporary directory). */
  dir?: string;
  /** Start-up time it may take (default WARM_UP_BUDGET_MS). */
  budgetMs?: number;
}

/**
 * Runs the warm-up traffic and cleans up after it. Best effort: it only makes the first requests
 * faster, so a warm-up that cannot run (no writable temporary directory, say) must not stop the
 * server; it resolves false then, and says why under NODE_DEBUG=cowdisk.
 */
export async function warmUpRequestPath(options: WarmUpOptions = {}): Promise<boolean> {
  try {
    await warmUp(options);
    return true;
  } catch (err) {
    debug('request-path warm-up skipped: %s', (err as Error)?.message ?? String(err));
    return false;
  }
}

async function warmUp(options: WarmUpOptions): Promise<void> {
  const deadline = performance.now() + (options.budgetMs ?? WARM_UP_BUDGET_MS);
  const dir = fs.mkdtempSync(path.join(options.dir ?? os.tmpdir(), 'cowdisk-warm-up-'));
  try {
    // A sparse base: its bytes do not matter to the code paths, and writing them would cost
    // seconds on a slow machine.
    fs.writeFileSync(path.join(dir, 'base.raw'), '');
    fs.truncateSync(path.join(dir, 'base.raw'), DISK);
    await cloneImage(path.join(dir, 'base.raw'), path.join(dir, 'clone.cow'));
    await serveAndDrive(path.join(dir, 'clone.cow'), path.join(dir, 'nbd.sock'), options.pollMicros, deadline);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function serveAndDrive(image: string, socket: string, pollMicros: number | undefined, deadline: number): Promise<void> {
  const server = new NbdServer({ exports: [{ name: '', device: (await openImage(image, { fs: servingFileSystem })).device }], pollMicros });
  try {
    await server.listen({ socket });
    const client = await NbdClient.connect(socket);
    try {
      await traffic(client, deadline);
    } finally {
      await client.close();
    }
  } finally {
    await server.close(); // which closes the image
  }
}

async function traffic(client: NbdClient, deadline: number): Promise<void> {
  const data = randomBytes(IO);
  const sink = Buffer.allocUnsafe(IO);
  const slots = DISK / IO;
  // Offsets spread over the disk, each sub-block once per pass (an odd stride visits them all).
  const at = (i: number): number => ((i * 1031) % slots) * IO;
  let next = 0;
  const round = async (depth: number, request: (offset: number) => Promise<void>): Promise<void> => {
    const end = next + ROUND;
    const worker = async (): Promise<void> => {
      while (next < end) await request(at(next++));
    };
    await Promise.all(Array.from({ length: depth }, worker));
  };
  const read = (offset: number): Promise<void> => client.read(sink, offset);
  const write = (offset: number): Promise<void> => client.write(data, offset);
  // Through to the base, first writes, first writes and rewrites, reads of both kinds of sub-block.
  for (const depth of [1, 16]) {
    for (const request of [read, write, write, read]) {
      if (performance.now() > deadline) return;
      await round(depth, request);
    }
  }
}
