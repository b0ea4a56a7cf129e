/**
 * The registry client stands beside the verbs and below nothing of the engine: it may import
 * node's modules, undici, src/errors.ts and src/io/, and its own files, nothing else (so the
 * layer format can change under it, and it can be reused by any verb).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, test } from 'vitest';

const DIR = fileURLToPath(new URL('../../src/registry/', import.meta.url));
const ALLOWED = [/^node:/, /^undici$/, /^\.\/[\w-]+\.js$/, /^\.\.\/errors\.js$/, /^\.\.\/io\/[\w-]+\.js$/];

test('src/registry imports nothing from the engine, the server, the CLI or the kernel', () => {
  const files = fs.readdirSync(DIR).filter((f) => f.endsWith('.ts'));
  expect(files.length).toBeGreaterThan(5);
  const offending: string[] = [];
  for (const file of files) {
    const text = fs.readFileSync(path.join(DIR, file), 'utf8');
    for (const [, from] of text.matchAll(/^(?:import|export)[^'"]*?from\s+'([^']+)'/gm)) {
      if (!ALLOWED.some((re) => re.test(from))) offending.push(`${file}: ${from}`);
    }
  }
  expect(offending).toEqual([]);
});
