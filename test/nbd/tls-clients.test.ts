/**
 * TLS with real clients: nbdinfo and nbdcopy (libnbd URIs), python3-libnbd, qemu-img and qemu-io
 * (`--object tls-creds-psk` / `tls-creds-x509`), against servers that require TLS: PSK over a Unix
 * socket, x509 over TCP on 127.0.0.1, and x509 with client certificates required. Keys and
 * certificates are made by psktool and certtool (test/helpers/nbd-tls.ts).
 *
 * The refusals (plaintext, a wrong key, a CA the client does not trust, a client certificate
 * missing or signed by another CA) each fail with the client's own error, are reported by the
 * server as a CowdiskError saying what went wrong, and cost that connection only: a client in
 * transmission on the same server is served before and after.
 *
 * fio has a file of its own (fio-tls.test.ts): its nbd engine needs a shim before libnbd will
 * read a URI's tls-psk-file.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { CowdiskError } from '../../src/errors.js';
import { cloneImage } from '../../src/ops/create.js';
import { openImage } from '../../src/image/open.js';
import { loadTlsCredentials, NbdServer, parsePskFile, type TlsSettings } from '../../src/nbd/index.js';
import { makeChain, MiB, type Chain } from '../helpers/nbd-images.js';
import { makeCa, makeClientDir, makePsk, makeServerDir, revoke } from '../helpers/nbd-tls.js';
import { python, run } from '../helpers/nbd-tools.js';
import { encode, INFO, OPT, RawClient, REP } from '../helpers/nbd-wire.js';

interface TlsServer {
  server: NbdServer;
  /** The socket path, or the TCP port on 127.0.0.1. */
  where: string | number;
  refusals: CowdiskError[];
  /** A client in transmission throughout (over TLS, the test's own wire client). */
  bystander: RawClient;
}

let chain: Chain;
let dir: string;
let pskFile: string;
let wrongPsk: string;
const clients: Record<string, string> = {};
let psk: TlsServer;
let x509: TlsServer;
let verify: TlsServer;
let handle = 1n;

async function serve(image: string, readOnly: boolean, settings: TlsSettings, where: string | number): Promise<TlsServer> {
  const { device } = await openImage(image, { readOnly, sharedLock: readOnly });
  const refusals: CowdiskError[] = [];
  const server = new NbdServer({ exports: [{ name: 'disk', device, readOnly }], tls: loadTlsCredentials(settings), onClientRefused: (e) => void refusals.push(e) });
  const [uri] = await server.listen(typeof where === 'string' ? { socket: where } : { port: 0, host: '127.0.0.1' });
  const bound = typeof where === 'string' ? where : Number(/:(\d+)\//.exec(uri)![1]);
  return { server, where: bound, refusals, bystander: await bystanderOf(bound, settings) };
}

/** Negotiates over TLS (PSK alice, or the good client certificate) into transmission. */
async function bystanderOf(where: string | number, settings: TlsSettings): Promise<RawClient> {
  const plain = await RawClient.greeted(where);
  await plain.write(encode.clientFlags(1));
  await plain.write(encode.option(OPT.STARTTLS));
  expect((await plain.optionReply()).type).toBe(REP.ACK);
  const key = () => parsePskFile(fs.readFileSync(pskFile, 'utf8'), pskFile).get('alice')!;
  const c = await plain.startTls(
    settings.pskFile
      ? { pskCallback: () => ({ identity: 'alice', psk: key() }), ciphers: 'TLS_AES_128_GCM_SHA256', checkServerIdentity: () => undefined }
      : {
          ca: fs.readFileSync(path.join(clients.good, 'ca-cert.pem')),
          cert: fs.readFileSync(path.join(clients.good, 'client-cert.pem')),
          key: fs.readFileSync(path.join(clients.good, 'client-key.pem')),
          servername: 'localhost',
        },
  );
  await c.write(encode.option(OPT.GO, encode.infoRequest('disk', [INFO.NAME])));
  expect((await c.optionReplies()).pop()?.type).toBe(REP.ACK);
  return c;
}

async function stillServed(s: TlsServer): Promise<void> {
  expect((await s.bystander.readAt(handle++, 0, 4096)).equals(chain.contents.subarray(0, 4096))).toBe(true);
}

/** The refusal the server reports for the last client, once its connection is gone. */
async function lastRefusal(s: TlsServer): Promise<CowdiskError | undefined> {
  for (let i = 0; i < 200 && (s.server.connectionCount > 1 || s.refusals.length === 0); i++) await new Promise((r) => setTimeout(r, 10));
  return s.refusals.pop();
}

const pskUri = (identity = 'alice', file = pskFile): string => `nbds+unix://${identity}@/disk?socket=${psk.where}&tls-psk-file=${file}`;
const x509Uri = (s: TlsServer, client: string): string => `nbds://127.0.0.1:${s.where}/disk?tls-certificates=${clients[client]}`;
const qemuPsk = ['--object', `tls-creds-psk,id=tls0,dir=${'PSKDIR'},username=alice,endpoint=client`];
const qemuOpts = (s: TlsServer): string =>
  typeof s.where === 'string'
    ? `driver=nbd,server.type=unix,server.path=${s.where},export=disk,tls-creds=tls0`
    : `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${s.where},export=disk,tls-creds=tls0`;
const qemuX509 = (client: string): string[] => ['--object', `tls-creds-x509,id=tls0,dir=${clients[client]},endpoint=client`];

beforeAll(async () => {
  chain = await makeChain({ size: 8 * MiB });
  dir = chain.dir;
  pskFile = await makePsk(path.join(dir, 'psk'), ['alice']);
  wrongPsk = await makePsk(path.join(dir, 'wrong'), ['alice']);
  qemuPsk[1] = qemuPsk[1].replace('PSKDIR', path.dirname(pskFile));
  const ca = await makeCa(path.join(dir, 'ca'));
  const other = await makeCa(path.join(dir, 'other'), 'some other CA');
  const certificates = await makeServerDir(ca, path.join(dir, 'server'));
  clients.good = await makeClientDir(path.join(dir, 'c-good'), ca, ca);
  clients.nocert = await makeClientDir(path.join(dir, 'c-nocert'), ca);
  // Another CA under our CA's very name: GnuTLS offers its certificate (the names match), and only
  // the signature tells it apart.
  const impostor = await makeCa(path.join(dir, 'impostor'));
  clients.foreign = await makeClientDir(path.join(dir, 'c-foreign'), ca, impostor);
  clients.distrust = await makeClientDir(path.join(dir, 'c-distrust'), other);
  clients.revoked = await makeClientDir(path.join(dir, 'c-revoked'), ca, ca);
  await revoke(ca, path.join(clients.revoked, 'client-cert.pem'), certificates);
  const second = path.join(dir, 'second.cow');
  await cloneImage(chain.snapshot, second);
  psk = await serve(chain.overlay, false, { mode: 'require', pskFile }, path.join(dir, 'psk.sock'));
  x509 = await serve(chain.snapshot, true, { mode: 'require', certificates }, 0);
  verify = await serve(second, false, { mode: 'require', certificates, verifyPeer: true }, 0);
});
afterAll(async () => {
  for (const s of [psk, x509, verify]) {
    s?.bystander.close();
    await s?.server.close();
  }
  fs.rmSync(chain.dir, { recursive: true, force: true });
});

describe('PSK over a Unix socket', () => {
  test('nbdinfo (nbds+unix://alice@/...&tls-psk-file=) negotiates TLS and sees the export', async () => {
    const info = JSON.parse((await run('nbdinfo', ['--json', pskUri()])).stdout);
    expect(info.TLS).toBe(true);
    expect(info.exports[0]['export-size']).toBe(chain.size);
  });

  test('nbdcopy reads the whole disk through TLS byte for byte', async () => {
    const out = path.join(dir, 'psk-copy.raw');
    await run('nbdcopy', [pskUri(), out]);
    expect(fs.readFileSync(out).equals(chain.contents)).toBe(true);
  });

  test('python3-libnbd: set_tls(TLS_REQUIRE) with set_tls_psk_file; get_tls_negotiated; 16 writes and reads in flight come back intact', async () => {
    const { stdout } = await python(
      `import nbd, sys, hashlib, os
h = nbd.NBD()
h.set_tls(nbd.TLS_REQUIRE); h.set_tls_username('alice'); h.set_tls_psk_file(sys.argv[2]); h.set_export_name('disk')
h.connect_unix(sys.argv[1])
data = os.urandom(16 * 65536)
cookies = [h.aio_pwrite(data[i * 65536:(i + 1) * 65536], 4 * 1048576 + i * 65536) for i in range(16)]
while h.aio_in_flight() > 0: h.poll(-1)
for c in cookies: h.aio_command_completed(c)
bufs = [nbd.Buffer(65536) for i in range(16)]
for i, b in enumerate(bufs): h.aio_pread(b, 4 * 1048576 + i * 65536)
while h.aio_in_flight() > 0: h.poll(-1)
back = b''.join(b.to_bytearray() for b in bufs)
print(h.get_tls_negotiated(), back == data)`,
      [psk.where as string, pskFile],
    );
    expect(stdout.trim()).toBe('True True');
    await stillServed(psk);
  });

  test('qemu-io with --object tls-creds-psk writes and reads a pattern back; qemu-img info sees the size', async () => {
    const io = await run('qemu-io', [...qemuPsk, '--image-opts', qemuOpts(psk), '-c', `write -P 0x5a ${6 * MiB} 65536`, '-c', `read -P 0x5a ${6 * MiB} 65536`]);
    expect(io.stdout).toMatch(/wrote 65536\/65536 bytes/);
    expect(io.stdout).toMatch(/read 65536\/65536 bytes/);
    expect(io.stdout + io.stderr).not.toMatch(/Pattern verification failed/);
    const info = await run('qemu-img', ['info', '--output=json', ...qemuPsk, '--image-opts', qemuOpts(psk)]);
    expect(JSON.parse(info.stdout)['virtual-size']).toBe(chain.size);
  });
});

describe('x509 over TCP on 127.0.0.1', () => {
  test('nbdinfo (nbds://127.0.0.1:PORT/?tls-certificates=DIR) verifies the server and negotiates TLS', async () => {
    const info = JSON.parse((await run('nbdinfo', ['--json', x509Uri(x509, 'nocert')])).stdout);
    expect(info.TLS).toBe(true);
    expect(info.exports[0].is_read_only).toBe(true);
  });

  test('qemu-img convert with --object tls-creds-x509 copies the chain byte for byte', async () => {
    const out = path.join(dir, 'x509-copy.raw');
    await run('qemu-img', ['convert', ...qemuX509('nocert'), '--image-opts', qemuOpts(x509), '-O', 'raw', out]);
    expect(fs.readFileSync(out).equals(chain.contents)).toBe(true);
    await stillServed(x509);
  });

  test('python3-libnbd with set_tls_certificates over connect_tcp', async () => {
    const { stdout } = await python(
      `import nbd, sys
h = nbd.NBD(); h.set_tls(nbd.TLS_REQUIRE); h.set_tls_certificates(sys.argv[2]); h.set_export_name('disk')
h.connect_tcp('127.0.0.1', sys.argv[1])
print(h.get_tls_negotiated(), h.get_size(), h.pread(512, 0)[:8] == bytes.fromhex(sys.argv[3]))`,
      [String(x509.where), clients.nocert, chain.contents.subarray(0, 8).toString('hex')],
    );
    expect(stdout.trim()).toBe(`True ${chain.size} True`);
  });

  test('--tls-verify-peer: a client certificate signed by the CA is accepted', async () => {
    const info = JSON.parse((await run('nbdinfo', ['--json', x509Uri(verify, 'good')])).stdout);
    expect(info.TLS).toBe(true);
    expect(verify.refusals).toEqual([]);
  });
});

describe("refused clients get their client's error, the server says why, and everyone else is served", () => {
  test('plaintext against --tls require: qemu-img is told TLS is required; python3-libnbd fails to connect', async () => {
    const qemu = await run('qemu-img', ['info', `nbd+unix:///disk?socket=${psk.where}`], { allowFailure: true });
    expect(qemu.code).not.toBe(0);
    expect(qemu.stderr).toMatch(/TLS negotiation required/);
    expect(qemu.stderr).toMatch(/server reported: .*requires TLS/);
    expect((await lastRefusal(psk))?.code).toBe('COWDISK_E_TLS_REQUIRED');
    const py = await python(
      `import nbd, sys
h = nbd.NBD(); h.set_tls(nbd.TLS_DISABLE); h.set_export_name('disk')
try:
    h.connect_unix(sys.argv[1]); print('connected')
except nbd.Error as e:
    print('refused')`,
      [psk.where as string],
    );
    expect(py.stdout.trim()).toBe('refused');
    expect((await lastRefusal(psk))?.code).toBe('COWDISK_E_TLS_REQUIRED');
    await stillServed(psk);
  });

  test('a wrong PSK: the TLS handshake fails on the client; the server names the identity whose key is wrong', async () => {
    const r = await run('nbdinfo', [pskUri('alice', wrongPsk)], { allowFailure: true });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/gnutls_handshake: .*TLS fatal alert/);
    expect(await lastRefusal(psk)).toMatchObject({ code: 'COWDISK_E_TLS_HANDSHAKE', message: expect.stringMatching(/key for PSK identity "alice" is not the one in the PSK file/) });
    await stillServed(psk);
  });

  test('an identity the PSK file does not hold', async () => {
    const bob = await makePsk(path.join(dir, 'bob'), ['bob']);
    const r = await run('nbdinfo', [pskUri('bob', bob)], { allowFailure: true });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/gnutls_handshake/);
    expect(await lastRefusal(psk)).toMatchObject({ code: 'COWDISK_E_TLS_HANDSHAKE', message: expect.stringMatching(/identity "bob", which is not in the PSK file/) });
    await stillServed(psk);
  });

  test('a client that trusts another CA rejects the server certificate (nbdinfo and qemu-img)', async () => {
    const r = await run('nbdinfo', [x509Uri(x509, 'distrust')], { allowFailure: true });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/certificate verification/);
    expect(await lastRefusal(x509)).toMatchObject({ code: 'COWDISK_E_TLS_HANDSHAKE', message: expect.stringMatching(/does not trust this server's certificate/) });
    const q = await run('qemu-img', ['info', ...qemuX509('distrust'), '--image-opts', qemuOpts(x509)], { allowFailure: true });
    expect(q.code).not.toBe(0);
    expect(q.stderr).toMatch(/certificate hasn't got a known issuer/);
    // QEMU checks the certificate only after its TLS handshake is done, and then just hangs up:
    // to the server that is a client leaving during negotiation, with nothing to report.
    await stillServed(x509);
  });

  test('--tls-verify-peer: a client without a certificate is refused in the handshake', async () => {
    const r = await run('nbdinfo', [x509Uri(verify, 'nocert')], { allowFailure: true });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/TLS fatal alert/);
    expect(await lastRefusal(verify)).toMatchObject({ code: 'COWDISK_E_TLS_HANDSHAKE', message: expect.stringMatching(/sent no certificate/) });
    await stillServed(verify);
  });

  test('--tls-verify-peer: a client certificate revoked in ca-crl.pem is refused', async () => {
    const r = await run('nbdinfo', [x509Uri(verify, 'revoked')], { allowFailure: true });
    expect(r.code).not.toBe(0);
    expect(await lastRefusal(verify)).toMatchObject({ code: 'COWDISK_E_TLS_HANDSHAKE', message: expect.stringMatching(/certificate is not accepted \(CERT_REVOKED\)/) });
    await stillServed(verify);
  });

  test('--tls-verify-peer: a client certificate signed by another CA of the same name is refused', async () => {
    const r = await run('nbdinfo', [x509Uri(verify, 'foreign')], { allowFailure: true });
    expect(r.code).not.toBe(0);
    expect(await lastRefusal(verify)).toMatchObject({ code: 'COWDISK_E_TLS_HANDSHAKE', message: expect.stringMatching(/certificate is not accepted .*signed by ca-cert\.pem/) });
    await stillServed(verify);
  });
});
