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
 *
 * TLS: nbdkit's options and defaults, so that habits carry over: `--tls off|on|require`, and
 * credentials alone mean `--tls on` (offered, not required). Each client refused for TLS reasons
 * gets a line on stderr saying why; the server carries on.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Option, type Command } from 'commander';
import { CowdiskError, DEFAULT_POLL_US, ErrorCode, loadTlsCredentials, NbdServer, openImage, prefetch, servingFileSystem, warmUpRequestPath, type Image, type ListenOptions, type Prefetch, type TlsCredentials, type TlsMode } from '../index.js';
import { formatOption, type FormatCliValue } from './format-option.js';
import { count } from './output.js';
import { formatSize, parseCount, sizeOption } from './size.js';

interface ServeCliOptions {
  socket?: string;
  socketMode?: string;
  port?: string;
  insecureNoTls?: boolean;
  /** bind, pollUs and handshakeTimeout are always set: their options have defaults. */
  bind: string;
  readOnly?: boolean;
  maxConnections?: string;
  format?: FormatCliValue;
  pollUs: string;
  handshakeTimeout: string;
  tls?: TlsMode;
  tlsCertificates?: string;
  tlsPsk?: string;
  tlsVerifyPeer?: boolean;
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
    .option('--socket-mode <octal>', 'permissions of the Unix socket (default 0600: only its owner can connect)')
    .option('-b, --bind <address>', 'the address to listen on with --port; beyond loopback only with --tls require or --insecure-no-tls', '127.0.0.1')
    .option('--insecure-no-tls', 'allow --bind beyond loopback without --tls require, on a network you trust')
    .option('-r, --read-only', 'open every image read-only; clients get EPERM for writes')
    .option('--max-connections <n>', 'close connections beyond this many')
    .addOption(formatOption('every IMAGE'))
    .option('--handshake-timeout <seconds>', 'disconnect a client that has not finished negotiating in this long (0: no limit)', '10')
    .option(
      '--poll-us <n>',
      'after answering, keep polling for the next request up to this many microseconds (adapts to the client; 0 never polls: lowest CPU, higher latency)',
      String(DEFAULT_POLL_US),
    )
    .addOption(
      new Option('--tls <mode>', 'off: refuse STARTTLS; on: offer TLS; require: nothing but TLS (default: on with credentials, else off)').choices(['off', 'on', 'require']),
    )
    .addOption(new Option('--tls-certificates <dir>', 'x509 credentials: a directory with ca-cert.pem, server-cert.pem, server-key.pem (as qemu-nbd, nbdkit)').conflicts('tlsPsk'))
    .option('--tls-psk <file>', 'pre-shared keys: identity:hexkey lines, as psktool -u NAME -p FILE writes them')
    .addOption(new Option('--tls-verify-peer', 'require a client certificate signed by ca-cert.pem (with --tls-certificates)').conflicts('tlsPsk'))
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
  $ nbdinfo --list nbd://127.0.0.1:10809

  $ cowdisk serve --port 10809 --bind 0.0.0.0 --tls require --tls-certificates /etc/pki/cowdisk vm1.cow
  $ nbdinfo 'nbds://server.example.com:10809/?tls-certificates=/etc/pki/libnbd'

  $ psktool -u alice -p keys.psk
  $ cowdisk serve --tls require --tls-psk keys.psk --socket vm1.sock vm1.cow
  $ nbdinfo 'nbds+unix://alice@/?socket=vm1.sock&tls-psk-file=keys.psk'`,
    )
    .action(async (image: string, more: string[], options: ServeCliOptions) => {
      const exportArgs = parseExports([image, ...more]);
      const listen = parseListen(options, exportArgs[0].name);
      const maxConnections = options.maxConnections === undefined ? undefined : parseCount(options.maxConnections, '--max-connections', 1);
      const pollMicros = parseCount(options.pollUs, '--poll-us', 0);
      const handshakeTimeout = parseCount(options.handshakeTimeout, '--handshake-timeout', 0) * 1000;
      const tls = parseTls(options);
      const prefetchRate = options.prefetch ? options.prefetchRate : undefined;
      await serve(exportArgs, listen, { readOnly: options.readOnly ?? false, maxConnections, pollMicros, handshakeTimeout, tls, format: options.format, prefetchRate });
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
    if (options.socketMode !== undefined) throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, '--socket-mode goes with a Unix socket, not --port.');
    const port = parseCount(options.port, '--port', 0);
    if (port > 65535) throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `--port must be at most 65535, not ${port}.`);
    return { port, host: options.bind, insecure: options.insecureNoTls ?? false };
  }
  if (options.bind !== '127.0.0.1' || options.insecureNoTls) {
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, '--bind and --insecure-no-tls go with --port; a Unix socket has no address.');
  }
  const mode = options.socketMode === undefined ? undefined : parseMode(options.socketMode);
  if (options.socket !== undefined) return { socket: path.resolve(options.socket), mode };
  const runtime = process.env.XDG_RUNTIME_DIR;
  if (runtime && fs.existsSync(runtime)) return { socket: path.join(runtime, `cowdisk-${firstName}.sock`), mode };
  return { socket: path.resolve(`${firstName}.sock`), mode };
}

/** An octal mode such as 0660 or 660: permission bits only. */
function parseMode(text: string): number {
  if (!/^0?[0-7]{3}$/.test(text)) {
    throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, `--socket-mode ${text}: expected octal permission bits such as 0600 or 0660.`);
  }
  return Number.parseInt(text, 8);
}

/** The TLS credentials the options ask for, loaded and checked; undefined for --tls off. */
function parseTls(options: ServeCliOptions): TlsCredentials | undefined {
  const given = options.tlsCertificates !== undefined || options.tlsPsk !== undefined;
  const mode = options.tls ?? (given ? 'on' : 'off');
  if (mode === 'off') {
    if (options.tls === 'off' && (given || options.tlsVerifyPeer)) {
      throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, '--tls off with TLS credentials or --tls-verify-peer: drop them, or use --tls on or --tls require.');
    }
    if (options.tlsVerifyPeer) throw new CowdiskError(ErrorCode.INVALID_ARGUMENT, '--tls-verify-peer goes with --tls-certificates DIR.');
    return undefined;
  }
  return loadTlsCredentials({ mode, certificates: options.tlsCertificates, pskFile: options.tlsPsk, verifyPeer: options.tlsVerifyPeer });
}

interface ServeSettings {
  readOnly: boolean;
  maxConnections: number | undefined;
  pollMicros: number;
  /** Milliseconds; 0: no limit. */
  handshakeTimeout: number;
  tls: TlsCredentials | undefined;
  format: FormatCliValue;
  /** Bytes per second for --prefetch; undefined: no prefetch. */
  prefetchRate: number | undefined;
}

async function serve(exportArgs: ExportArg[], listen: ListenOptions, { readOnly, maxConnections, pollMicros, handshakeTimeout, tls, format, prefetchRate }: ServeSettings): Promise<void> {
  const images: Image[] = [];
  try {
    for (const e of exportArgs) images.push(await openImage(e.file, { fs: servingFileSystem, readOnly, sharedLock: readOnly, format }));
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
    // Every cowdisk image is a chain, and QEMU's tools ask for its depths under this name.
    allocationDepth: true,
    tls,
    onClientRefused: (error) => process.stderr.write(`cowdisk: ${error.message} [${error.code}]\n`),
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
      // A fresh process would answer its first requests several times slower (bench/warm-up.ts).
      await warmUpRequestPath({ pollMicros });
      await server.listen(listen);
    } catch (err) {
      await server.close().catch(() => {});
      throw err;
    }
    const uris = [server.uris('')[0], ...exportArgs.map((e) => server.uris(e.name)[0])];
    process.stdout.write(`${uris.join('\n')}\n`);
    const names = exportArgs.map((e, i) => `${e.name}${i === 0 ? ' (default)' : ''}`).join(', ');
    const security = tls ? `, TLS ${tls.mode === 'require' ? 'required' : 'offered'} (${tls.description})` : '';
    process.stderr.write(`cowdisk: serving ${names} on ${server.addresses()[0]}${readOnly ? ', read-only' : ''}${security}; Ctrl-C stops\n`);
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
