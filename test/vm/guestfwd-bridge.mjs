// Run by QEMU's user-mode network (guestfwd=...-cmd:) once per TCP connection the guest opens to
// the forwarded address: QEMU hands that connection to this process as stdin/stdout, and this
// process splices it to the server on the host, so the guest reaches exactly one host endpoint.
// Usage: node guestfwd-bridge.mjs tcp 127.0.0.1 PORT | node guestfwd-bridge.mjs unix PATH
// stderr is the same socket as stdout here, so nothing may ever be printed.
import net from 'node:net';

const [kind, a, b] = process.argv.slice(2);
const upstream = kind === 'unix' ? net.connect(a) : net.connect(Number(b), a);

process.stdin.pipe(upstream);
upstream.pipe(process.stdout);
// Either side closing ends the connection: the guest gets EOF, or the server sees the guest go.
upstream.on('close', () => process.exit(0));
upstream.on('error', () => process.exit(1));
process.stdin.on('error', () => process.exit(1));
process.stdout.on('error', () => process.exit(1));
