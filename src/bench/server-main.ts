/**
 * The NBD server half of `cowdisk bench`, run as a child process:
 *
 *   node dist/bench/server-main.js IMAGE SOCKET
 *
 * Why a process of its own: a client and a server in one Node process share one event loop, so
 * each request's time would include the other side's turn of the loop, and neither could run
 * while the other computes. Apart, they run on two cores as a real client and server do.
 *
 * It serves IMAGE (the bench's throw-away clone, opened writable) as the default export with the
 * same NbdServer `cowdisk serve` uses, prints "ready" on stdout once it listens, and stops
 * cleanly (in-flight requests finished, the image flushed and closed) on SIGTERM or when its
 * stdin closes. The stdin rule ties its life to the bench's: if the bench dies, even by SIGKILL,
 * the pipe closes and the server goes too. SIGINT is ignored: a Ctrl-C in the terminal reaches
 * the whole process group, and the bench, which owns the clone, decides when the server stops.
 */
import { openImage } from '../image/open.js';
import { useRangeSources } from '../image/range-source.js';
import { servingFileSystem } from '../io/real-file.js';
import { NbdServer } from '../nbd/index.js';
import { registryRangeSources } from '../ops/remote-source.js';

// A clone of a lazily cloned image fetches its missing blocks from their registry, as the CLI does.
useRangeSources(registryRangeSources);

async function main(imagePath: string, socket: string): Promise<void> {
  const image = await openImage(imagePath, { fs: servingFileSystem });
  const server = new NbdServer({ exports: [{ name: 'bench', device: image.device }] });
  let stopping: Promise<void> | undefined;
  const stop = (): void => {
    stopping ??= server.close().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`cowdisk bench server: closing failed: ${(err as Error)?.message ?? String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => undefined);
  process.on('SIGTERM', stop);
  process.stdin.on('end', stop).on('close', stop).resume();
  try {
    await server.listen({ socket });
  } catch (err) {
    await server.close().catch(() => undefined);
    throw err;
  }
  process.stdout.write('ready\n');
}

const [imagePath, socket] = process.argv.slice(2);
main(imagePath, socket).catch((err: unknown) => {
  process.stderr.write(`cowdisk bench server: ${(err as Error)?.message ?? String(err)}\n`);
  process.exit(1);
});
