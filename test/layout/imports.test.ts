/**
 * The layering of src/, read from the imports themselves: nothing imports what stands above it.
 *
 *   errors.ts, native.ts ... used by anyone below the public face
 *   io/       the file interface                      knows no format
 *   format/   the on-disk formats                     knows no engine
 *   image/    the copy-on-write engine                knows no operation, protocol, CLI or kernel
 *   registry/ the OCI registry client                 knows no format or engine
 *   ops/      the operations on images (the verbs)    knows no protocol, CLI or kernel
 *   nbd/      the NBD server                          knows no operation, CLI or kernel
 *   fsdiff/   file-level diff (ext4, nbdfuse views)   above ops and the server
 *   kernel/   attach / detach                         above the server
 *   bench/    `cowdisk bench`                         above the server and the verbs
 *   cli/      the commands                            only the library's public face (index.ts)
 *
 * Every static import, re-export and dynamic import with a literal specifier counts.
 */
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = path.join(import.meta.dirname, '../../src');

/** For each part of src/, the parts it may import (besides itself). */
const ALLOWED: Record<string, readonly string[]> = {
  'errors.ts': [],
  'native.ts': ['errors.ts'],
  io: ['errors.ts', 'native.ts'],
  format: ['errors.ts', 'native.ts', 'io'],
  image: ['errors.ts', 'io', 'format'],
  registry: ['errors.ts', 'io'],
  ops: ['errors.ts', 'io', 'format', 'image', 'registry'],
  // native.ts for a socket option Node has no call for (the send buffer, connection.ts).
  nbd: ['errors.ts', 'native.ts', 'image'],
  fsdiff: ['errors.ts', 'io', 'image', 'ops', 'nbd'],
  kernel: ['errors.ts', 'native.ts', 'image', 'nbd'],
  bench: ['errors.ts', 'io', 'format', 'image', 'ops', 'nbd'],
  cli: ['index.ts'],
  'index.ts': ['*'],
};

/** The part of src/ a path (relative to src/) belongs to: its first folder, or the file itself. */
function partOf(rel: string): string {
  const parts = rel.split('/');
  return parts.length === 1 ? parts[0] : parts[0];
}

const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"]([^'"]+)['"]/g;

/** Every violation in `files` (path relative to src/ -> source text), as "file: imports target". */
export function violations(files: ReadonlyMap<string, string>): string[] {
  const out: string[] = [];
  for (const [rel, text] of files) {
    const from = partOf(rel);
    const allowed = ALLOWED[from];
    if (!allowed) {
      out.push(`${rel}: lies in ${from}, which has no place in the layering (add it to ALLOWED)`);
      continue;
    }
    for (const m of text.matchAll(SPECIFIER)) {
      const spec = m[1];
      if (!spec.startsWith('.')) continue;
      const target = path.posix.normalize(path.posix.join(path.posix.dirname(rel), spec)).replace(/\.js$/, '.ts');
      if (target.startsWith('..')) {
        out.push(`${rel}: imports ${spec}, outside src/`);
        continue;
      }
      const to = partOf(target);
      if (to === from || allowed.includes('*') || allowed.includes(to)) continue;
      out.push(`${rel}: imports ${spec} (${from} may not import ${to})`);
    }
  }
  return out;
}

function sources(): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name.endsWith('.ts')) files.set(path.relative(SRC, full).split(path.sep).join('/'), readFileSync(full, 'utf8'));
    }
  };
  walk(SRC);
  return files;
}

describe('the layering of src/', () => {
  it('no file imports what stands above it', () => {
    const files = sources();
    expect(files.size).toBeGreaterThan(50);
    expect(violations(files)).toEqual([]);
  });

  it('the check sees a forbidden arrow: the engine importing the NBD server, statically or dynamically', () => {
    const files = sources();
    files.set('image/spy.ts', "import { NbdServer } from '../nbd/server.js';\n");
    files.set('format/spy.ts', "const m = await import('../image/device.js');\n");
    files.set('io/spy.ts', "export type { ParentRef } from '../format/header.js';\n");
    files.set('cli/spy.ts', "import { openImage } from '../image/open.js';\n");
    expect(violations(files)).toEqual([
      'image/spy.ts: imports ../nbd/server.js (image may not import nbd)',
      'format/spy.ts: imports ../image/device.js (format may not import image)',
      'io/spy.ts: imports ../format/header.js (io may not import format)',
      'cli/spy.ts: imports ../image/open.js (cli may not import image)',
    ]);
  });
});
