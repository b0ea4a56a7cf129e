/**
 * WWW-Authenticate parsing (RFC 9110 challenges as registries send them) and the merging of
 * token scopes into one cache key.
 */
import { describe, expect, test } from 'vitest';
import { mergeScopes } from '../../src/registry/auth.js';
import { parseChallenges } from '../../src/registry/challenge.js';

describe('parseChallenges', () => {
  test('a Bearer challenge as distribution sends it', () => {
    const header = 'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push repository:c:pull",error="insufficient_scope"';
    expect(parseChallenges(header)).toEqual([
      {
        scheme: 'bearer',
        params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:a/b:pull,push repository:c:pull', error: 'insufficient_scope' },
      },
    ]);
  });

  test('Basic, token values, escapes, spaces and several challenges in one header or many', () => {
    expect(parseChallenges('Basic realm="Registry Realm"')).toEqual([{ scheme: 'basic', params: { realm: 'Registry Realm' } }]);
    expect(parseChallenges('BASIC Realm=plain , charset="UTF-8"')).toEqual([{ scheme: 'basic', params: { realm: 'plain', charset: 'UTF-8' } }]);
    expect(parseChallenges('Bearer realm="a \\"q\\" b"')).toEqual([{ scheme: 'bearer', params: { realm: 'a "q" b' } }]);
    expect(parseChallenges('Negotiate, Basic realm="r"').map((c) => c.scheme)).toEqual(['negotiate', 'basic']);
    expect(parseChallenges(['Basic realm="r"', 'Bearer realm="t"']).map((c) => c.scheme)).toEqual(['basic', 'bearer']);
    expect(parseChallenges(undefined)).toEqual([]);
    expect(parseChallenges('')).toEqual([]);
  });
});

describe('mergeScopes', () => {
  test('actions on one resource merge; resources sort; duplicates vanish', () => {
    expect(mergeScopes(['repository:b:pull', 'repository:a:push', 'repository:a:pull', 'repository:b:pull'])).toEqual(['repository:a:pull,push', 'repository:b:pull']);
    expect(mergeScopes(['registry:catalog:*'])).toEqual(['registry:catalog:*']);
    expect(mergeScopes([])).toEqual([]);
  });
});
