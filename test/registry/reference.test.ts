/**
 * REF parsing: every part of `[oci://]HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]`, the defaults, and
 * a typed error that names the wrong part; and the scheme chosen for a registry.
 */
import { describe, expect, test } from 'vitest';
import { formatReference, manifestReference, parseReference, registryOrigins } from '../../src/registry/reference.js';

const DIGEST = `sha256:${'ab'.repeat(32)}`;

describe('parseReference', () => {
  test.each([
    ['localhost:5000/disks/base', { registry: 'localhost:5000', hostname: 'localhost', port: 5000, repository: 'disks/base', tag: 'latest', digest: undefined }],
    ['oci://ghcr.io/acme/base:v1.2', { registry: 'ghcr.io', hostname: 'ghcr.io', port: undefined, repository: 'acme/base', tag: 'v1.2', digest: undefined }],
    [`127.0.0.1:5000/base@${DIGEST}`, { registry: '127.0.0.1:5000', hostname: '127.0.0.1', port: 5000, repository: 'base', tag: undefined, digest: DIGEST }],
    [`[::1]:5000/a/b/c:t@${DIGEST}`, { registry: '[::1]:5000', hostname: '::1', port: 5000, repository: 'a/b/c', tag: 't', digest: DIGEST }],
    ['[fe80::1]/x', { registry: '[fe80::1]', hostname: 'fe80::1', port: undefined, repository: 'x', tag: 'latest', digest: undefined }],
    ['registry/a.b_c__d---e/f:_T-1.x', { registry: 'registry', hostname: 'registry', port: undefined, repository: 'a.b_c__d---e/f', tag: '_T-1.x', digest: undefined }],
  ])('%s', (text, expected) => {
    expect(parseReference(text)).toEqual(expected);
  });

  test.each([
    ['base', /no HOST\//],
    ['/base', /no HOST\//],
    ['http://localhost:5000/base', /only scheme allowed is oci:\/\//],
    ['localhost:0/base', /'0' is not a port/],
    ['localhost:65536/base', /'65536' is not a port/],
    ['localhost:x/base', /'x' is not a port/],
    ['[::1/base', /never closes it/],
    ['[::1]x/base', /text after the IPv6 address/],
    ['[zz]/base', /'zz' is not an IPv6 address/],
    ['-bad-.com/base', /not a host name/],
    ['localhost/Base', /'Base' is not a repository name/],
    ['localhost/a//b', /not a repository name/],
    ['localhost/a/', /not a repository name/],
    ['localhost/a-/b', /not a repository name/],
    ['localhost/a:.tag', /'.tag' is not a tag/],
    [`localhost/a:${'t'.repeat(129)}`, /is not a tag/],
    ['localhost/a@sha256:abc', /'sha256:abc' is not a digest/],
    [`localhost/a@sha512:${'ab'.repeat(64)}`, /is not a digest/],
    [`localhost/${'a'.repeat(250)}`, /longer than 255/],
  ])('%s is refused: %s', (text, why) => {
    expect(() => parseReference(text)).toThrow(expect.objectContaining({ code: 'COWDISK_E_INVALID_ARGUMENT', message: expect.stringMatching(why) }));
  });

  test('what is fetched, and how it is written back', () => {
    expect(manifestReference(parseReference('h/r'))).toBe('latest');
    expect(manifestReference(parseReference(`h/r:v1@${DIGEST}`))).toBe(DIGEST);
    expect(formatReference(parseReference('oci://h:1/r'))).toBe('h:1/r:latest');
    expect(formatReference(parseReference(`h/r@${DIGEST}`))).toBe(`h/r@${DIGEST}`);
  });
});

describe('registryOrigins', () => {
  test('HTTPS for a registry elsewhere; plain HTTP when asked', () => {
    expect(registryOrigins('ghcr.io')).toEqual(['https://ghcr.io']);
    expect(registryOrigins('registry.lan:5000', { plainHttp: true })).toEqual(['http://registry.lan:5000']);
  });

  test.each(['localhost:5000', '127.0.0.1:5000', '[::1]:5000', 'LOCALHOST'])('%s: HTTPS if it speaks it, else plain HTTP', (host) => {
    expect(registryOrigins(host)).toEqual([`https://${host}`, `http://${host}`]);
  });

  test("Docker Hub's name is not its API host", () => {
    expect(registryOrigins('docker.io')).toEqual(['https://registry-1.docker.io']);
  });
});
