/**
 * Loading TLS credentials: psktool's files and qemu-nbd's / nbdkit's certificate directory, made
 * by psktool and certtool. Every mistake is COWDISK_E_TLS_CREDENTIALS at start-up, with a message
 * that names the file and what it should hold.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { loadTlsCredentials, parsePskFile } from '../../src/nbd/index.js';
import { tempDir } from '../helpers/nbd-images.js';
import { makeCa, makePsk, makeServerDir } from '../helpers/nbd-tls.js';

let dir: string;
let server: string;
beforeAll(async () => {
  dir = tempDir();
  server = await makeServerDir(await makeCa(path.join(dir, 'ca')), path.join(dir, 'server'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const CODE = { code: 'COWDISK_E_TLS_CREDENTIALS' };

describe('PSK files', () => {
  test("psktool's file: one key per identity, 32 bytes each", async () => {
    const file = await makePsk(path.join(dir, 'two'), ['alice', 'bob']);
    const keys = parsePskFile(fs.readFileSync(file, 'utf8'), file);
    expect([...keys.keys()]).toEqual(['alice', 'bob']);
    expect([...keys.values()].map((k) => k.length)).toEqual([32, 32]);
    expect(keys.get('alice')!.equals(keys.get('bob')!)).toBe(false);
    expect(loadTlsCredentials({ mode: 'require', pskFile: file })).toMatchObject({ kind: 'psk', description: `2 PSK identities in ${file}` });
  });

  test.each([
    ['a line without a colon', 'alice\n', /line 1 is not "identity:hexkey"/],
    ['a key that is not hex', 'alice:zz11\n', /line 1 is not "identity:hexkey"/],
    ['an odd number of hex digits', '\nalice:abc\n', /line 2 is not/],
    ['an empty identity', ':abcd\n', /line 1 is not/],
    ['the same identity twice', 'alice:abcd\nalice:ef01\n', /line 2: identity "alice" appears twice/],
    ['no identities at all', '\n\n', /holds no identities; add one with: psktool/],
  ])('%s is refused, with the line', (_what, text, message) => {
    expect(() => parsePskFile(text, 'keys.psk')).toThrow(expect.objectContaining({ ...CODE, message: expect.stringMatching(message) }));
  });

  test('a missing file says how to make one', () => {
    const file = path.join(dir, 'nope.psk');
    expect(() => loadTlsCredentials({ mode: 'on', pskFile: file })).toThrow(expect.objectContaining({ ...CODE, message: expect.stringMatching(/psktool -u NAME -p/) }));
  });
});

describe('certificate directories', () => {
  test('ca-cert.pem, server-cert.pem and server-key.pem load; ca-crl.pem may be absent', () => {
    expect(loadTlsCredentials({ mode: 'require', certificates: server, verifyPeer: true })).toMatchObject({ kind: 'x509', verifyPeer: true, mode: 'require' });
  });

  test('a missing file is named, with the layout expected', () => {
    const partial = path.join(dir, 'partial');
    fs.mkdirSync(partial);
    fs.copyFileSync(path.join(server, 'ca-cert.pem'), path.join(partial, 'ca-cert.pem'));
    fs.copyFileSync(path.join(server, 'server-cert.pem'), path.join(partial, 'server-cert.pem'));
    expect(() => loadTlsCredentials({ mode: 'require', certificates: partial })).toThrow(
      expect.objectContaining({ ...CODE, path: path.join(partial, 'server-key.pem'), message: expect.stringMatching(/server-key\.pem cannot be read \(ENOENT\).*ca-cert\.pem, server-cert\.pem and server-key\.pem/) }),
    );
  });

  test("a key that is not the certificate's is refused before anything listens", async () => {
    const other = await makeServerDir(await makeCa(path.join(dir, 'ca2')), path.join(dir, 'server2'));
    const mixed = path.join(dir, 'mixed');
    fs.mkdirSync(mixed);
    for (const f of ['ca-cert.pem', 'server-cert.pem']) fs.copyFileSync(path.join(server, f), path.join(mixed, f));
    fs.copyFileSync(path.join(other, 'server-key.pem'), path.join(mixed, 'server-key.pem'));
    expect(() => loadTlsCredentials({ mode: 'on', certificates: mixed })).toThrow(expect.objectContaining({ ...CODE, message: expect.stringMatching(/not usable .*must be the private key of server-cert\.pem/) }));
  });
});

describe('combinations', () => {
  test('both kinds at once, --tls-verify-peer with a PSK, and neither are refused', async () => {
    const file = await makePsk(path.join(dir, 'one'), ['alice']);
    expect(() => loadTlsCredentials({ mode: 'on', pskFile: file, certificates: server })).toThrow(expect.objectContaining({ ...CODE, message: expect.stringMatching(/either --tls-certificates or --tls-psk/) }));
    expect(() => loadTlsCredentials({ mode: 'on', pskFile: file, verifyPeer: true })).toThrow(expect.objectContaining({ ...CODE, message: expect.stringMatching(/--tls-verify-peer checks client certificates/) }));
    expect(() => loadTlsCredentials({ mode: 'require' })).toThrow(expect.objectContaining({ ...CODE, message: expect.stringMatching(/--tls require needs credentials/) }));
  });
});
