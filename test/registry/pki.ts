/**
 * A throw-away certificate authority made with openssl for one test file: a CA, and leaf
 * certificates it signs, for the registry's TLS (subjectAltName IP:127.0.0.1) and for the token
 * server's signing key (the registry trusts tokens whose `x5c` chain ends at its
 * `rootcertbundle`). EC P-256 keys: quick to make, and what ES256 tokens are signed with.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { run } from '../helpers/nbd-tools.js';
import { registryTool } from './tools.js';

export interface CertificateFiles {
  /** PEM certificate. */
  cert: string;
  /** PEM private key (unencrypted). */
  key: string;
}

export interface TestCa extends CertificateFiles {
  /** Issues a certificate for `name` (a CN), valid for 127.0.0.1 and localhost. */
  issue(name: string): Promise<CertificateFiles>;
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

export async function makeCa(dir: string, name = 'cowdisk test CA'): Promise<TestCa> {
  const openssl = registryTool('openssl');
  const slug = name.replace(/[^a-z0-9]+/gi, '-');
  const cert = path.join(dir, `${slug}.pem`);
  const key = path.join(dir, `${slug}.key`);
  await run(openssl, [
    'req', '-x509', ...EC, '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  let serial = 1;
  const issue = async (leaf: string): Promise<CertificateFiles> => {
    const base = path.join(dir, `${slug}-${leaf.replace(/[^a-z0-9]+/gi, '-')}`);
    const ext = `${base}.ext`;
    fs.writeFileSync(ext, 'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
    await run(openssl, ['req', ...EC, '-keyout', `${base}.key`, '-out', `${base}.csr`, '-subj', `/CN=${leaf}`]);
    await run(openssl, [
      'x509', '-req', '-in', `${base}.csr`, '-CA', cert, '-CAkey', key, '-set_serial', String(serial++),
      '-days', '2', '-extfile', ext, '-out', `${base}.pem`,
    ]);
    return { cert: `${base}.pem`, key: `${base}.key` };
  };
  return { cert, key, issue };
}

/** A PEM certificate's DER bytes in base64, as a JWT's `x5c` header carries them. */
export function x5cEntry(certFile: string): string {
  return new X509Certificate(fs.readFileSync(certFile)).raw.toString('base64');
}
