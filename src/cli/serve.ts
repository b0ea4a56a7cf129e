/**
 * `cowdisk serve IMAGE [NAME=IMAGE ...]`: serve images over NBD until stopped. The server is
 * src/nbd; this file is the command line around it: which images under which names, where to
 * listen, what to print, and what the signals do.
 *
 * Names: `NAME=IMAGE` names an export; a bare `IMAGE` is named after its file (without the
 * extension). The first export is also the default export "", so `nbd+unix:///?socket=...`
 * reaches it without knowing its name.
 *
 * Output: stdout gets one NBD URI per line, the default export's first, then each export by name,
 * printed once the server listens (a script can wait for the first line). What is served, and how
 * to stop, goes to stderr.
 *
 * Stopping: the first SIGINT / SIGTERM stops accepting connections, lets every in-flight request
 * finish, flushes and closes every image (clearing its dirty flag), and exits 0. A second signal
 * while that runs exits at once with 1.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { CowdiskError, DEFAULT_POLL_US, ErrorCode, NbdServer, openImage, prefetch, type Image, type ListenOptions, type Prefetch } from '../index.js';
import { formatOption, type FormatCliValue } from './format-option.js';
import { count } from './output.js';
import { formatSize, parseCount, sizeOption } from './size.js';

interface ServeCliOptions {
  socket?: string;
  port?: string;
  /** bind, pollUs and handshakeTimeout are always set: their options have defaults. */
  bind: string;
  readOnly?: boolean;
  maxConnections?: string;
  format?: FormatCliValue;
  pollUs: string;
  handshakeTimeout: string;
  prefetch?: boolean;
  prefetchRate: number;
}

interface ExportArg {
  name: string;
  file: string;
}

export function register(program: Command): void {
  program
    .command('serve')
    .description('Serve images over NBD (a Unix socket by default) until Ctrl-C / SIGTERM.')
    .argument('<image>', 'the image to serve: an overlay, a snapshot or a raw file; also the default export')
    .argument('[exports...]', 'more exports, as NAME=IMAGE')
    .option('-s, --socket <path>', 'listen on this Unix socket (default: $XDG_RUNTIME_DIR/cowdisk-NAME.sock, else ./NAME.sock)')
    .option('-p, --port <n>', 'listen on this TCP port instead of a Unix socket (0 picks a free one)')
    .option('-b, --bind <address>', 'the address to listen on with --port', '127.0.0.1')
    .option('-r, --read-only', 'open every image read-only; clients get EPERM for writes')
    .option('--max-connections <n>', 'close connections beyond this many')
    .addOption(formatOption('every IMAGE'))
    .option('--handshake-timeout <seconds>', 'disconnect a client that has not finished negotiating in this long (0: no limit)', '10')
    .option(
      '--poll-us <n>',
      'after answering, keep polling for the next request up to this many microseconds (adapts to the client; 0 never polls: lowest CPU, higher latency)',
      String(DEFAULT_POLL_US),
    )
    .option('--prefetch', 'fill the layer cache with every lazily cloned layer beneath the images, in the background, clients first')
    .option('--prefetch-rate <size>', 'bytes per second --prefetch fetches at most', sizeOption('--prefetch-rate'), 16 * 1024 * 1024)
    .addHelpText(
      'after',
      `
Prints one NBD URI per line: the default export first, then each export by name.
Ctrl-C / SIGTERM stops accepting, finishes the requests in flight, flushes and closes every
image cleanly, and exits 0.

Examples:
  $ cowdisk serve vm1.cow
  nbd+unix:///?socket=/home/me/vm1.sock
  nbd+unix:///vm1?socket=/home/me/vm1.sock
  $ qemu-img info 'nbd+unix:///?socket=/home/me/vm1.sock'

  $ cowdisk serve --port 10809 --read-only base.snap web=web.cow db=db.cow
  $ nbdinfo --list nbd://127.0.0.1:10809`,
    )
    .action(async (image: string, more: string[], options: ServeCliOptions) => {
      const exportArgs = parseExports([image, ...more]);
      const listen = parseListen(options, exportArgs[0].name);
      const maxConnections = options.maxConnections === undefined ? undefined : parseCount(options.maxConnections, '--max-connections', 1);
      const pollMicros = parseCount(options.pollUs, '--poll-us', 0);
      const handshakeTimeout = parseCount(options.handshakeTimeout, '--handshake-timeout', 0) * 1000;
      const prefetchRate = options.prefetch ? options.prefetchRate : undefined;
      await serve(exportArgs, listen, { readOnly: options.readOnly ?? false, maxConnections, pollMicros, handshakeTimeout, format: options.format, prefetchRate });
    });
}

function parseExports(args: string[]): ExportArg[] {
  const out: ExportArg[] = [];
  for (const arg of args) {
    const eq = arg.indexOf('=');
    // A path that exists is a path, even with an '=' in it.
    const named = eq > 0 && !fs.existsSync(arg);
    const file = path.resolve(named ? arg.slice(eq + 1) : arg);
    const name = named ? arg.slice(0, eq) : path.basename(file, path.extname(file));
    if (out.some((e) => e.name === name)) {
      throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `Two exports are named "${name}"; name them apart with NAME=IMAGE.`);
    }
    out.push({ name, file });
  }
  return out;
}

function parseListen(options: ServeCliOptions, firstName: string): ListenOptions {
  if (options.port !== undefined) {
    if (options.socket !== undefined) throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, 'Use either --socket or --port, not both.');
    const port = parseCount(options.port, '--port', 0);
    if (port > 65535) throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `--port must be at most 65535, not ${port}.`);
    return { port, host: options.bind };
  }
  if (options.bind !== '127.0.0.1') {
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, '--bind goes with --port; a Unix socket has no address.');
  }
  if (options.socket !== undefined) return { socket: path.resolve(options.socket) };
  const runtime = process.env.XDG_RUNTIME_DIR;
  if (runtime && fs.existsSync(runtime)) return { socket: path.join(runtime, `cowdisk-${firstName}.sock`) };
  return { socket: path.resolve(`${firstName}.sock`) };
}

interface ServeSettings {
  readOnly: boolean;
  maxConnections: number | undefined;
  pollMicros: number;
  /** Milliseconds; 0: no limit. */
  handshakeTimeout: number;
  format: FormatCliValue;
  /** Bytes per second for --prefetch; undefined: no prefetch. */
  prefetchRate: number | undefined;
}

async function serve(exportArgs: ExportArg[], listen: ListenOptions, { readOnly, maxConnections, pollMicros, handshakeTimeout, format, prefetchRate }: ServeSettings): Promise<void> {
  const images: Image[] = [];
  try {
    for (const e of exportArgs) images.push(await openImage(e.file, { readOnly, sharedLock: readOnly, format }));
  } catch (err) {
    await Promise.allSettled(images.map((i) => i.close()));
    throw err;
  }
  const server = new NbdServer({
    exports: images.map((image, i) => ({
      name: exportArgs[i].name,
      device: image.device,
      readOnly,
      description: `${image.kind} ${image.path} (${count(image.device.chain.length, 'layer')})`,
    })),
    maxConnections,
    pollMicros,
    handshakeTimeout,
  });
  // Signals are caught before listening, so a client that connects at once can never see the
  // process die without closing its images.
  let stopping: Promise<void> | undefined;
  let prefetching: Prefetch | undefined;
  let stop!: (signal: string) => void;
  const stopped = new Promise<void>((resolve, reject) => {
    stop = (signal) => {
      if (stopping) {
        process.stderr.write(`cowdisk: ${signal} again; exiting without waiting for in-flight requests\n`);
        process.exit(1);
      }
      process.stderr.write(`cowdisk: ${signal}: finishing in-flight requests and closing the images\n`);
      stopping = (prefetching?.stop() ?? Promise.resolve()).then(() => server.close());
      stopping.then(resolve, reject);
    };
  });
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  try {
    try {
      await server.listen(listen);
    } catch (err) {
      await server.close().catch(() => {});
      throw err;
    }
    const uris = [server.uris('')[0], ...exportArgs.map((e) => server.uris(e.name)[0])];
    process.stdout.write(`${uris.join('\n')}\n`);
    const names = exportArgs.map((e, i) => `${e.name}${i === 0 ? ' (default)' : ''}`).join(', ');
    process.stderr.write(`cowdisk: serving ${names} on ${server.addresses()[0]}${readOnly ? ', read-only' : ''}; Ctrl-C stops\n`);
    if (prefetchRate !== undefined) prefetching = startPrefetch(images, prefetchRate);
    await stopped;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
  process.stderr.write('cowdisk: stopped; every image closed cleanly\n');
}

/** --prefetch: fills the cache in the background, saying on stderr when a layer is whole or a fill failed. */
function startPrefetch(images: Image[], rate: number): Prefetch {
  const say = (text: string) => process.stderr.write(`cowdisk: prefetch: ${text}\n`);
  const started = prefetch(images, {
    rate,
    onWhole: (layer) => say(`${layer.identity} is whole in the cache (${layer.path})`),
    onError: (layer, err, retryMs) => say(`${layer.identity}: ${(err as Error).message}; trying again in ${Math.round(retryMs / 1000)} s`),
  });
  say(started.layers === 0 ? 'no lazily cloned layer to fill' : `filling ${count(started.layers, 'lazily cloned layer')} at up to ${formatSize(rate)}/s`);
  void started.done.then((whole) => whole && started.layers > 0 && say('every lazily cloned layer is whole in the cache'));
  return started;
}
