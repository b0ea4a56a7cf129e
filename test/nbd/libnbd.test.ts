/**
 * python3-libnbd against served images: the error codes a client gets for bad requests (with
 * libnbd's own checks off, so the server is the one judging), 64 requests in flight at once, two
 * connections sharing one image, and the structured-reply features seen through libnbd's API.
 */
import * as fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { makeChain, serveImages, type Chain } from '../helpers/nbd-images.js';
import type { TestServer } from '../helpers/nbd-server.js';
import { python } from '../helpers/nbd-tools.js';

let chain: Chain;
let srv: TestServer;

beforeAll(async () => {
  chain = await makeChain();
  srv = await serveImages([
    { name: 'disk', file: chain.overlay },
    { name: 'ro', file: chain.snapshot, readOnly: true },
  ]);
});
afterAll(async () => {
  await srv.close();
  fs.rmSync(chain.dir, { recursive: true, force: true });
});

/** Runs a script with `h` connected to URI (argv[1]) and `out` printed as JSON at the end. */
async function withHandle(uri: string, body: string): Promise<Record<string, unknown>> {
  const script = `
import json, sys, nbd
def errno_of(f):
    try:
        f()
        return 0
    except nbd.Error as e:
        return e.errnum
out = {}
h = nbd.NBD()
h.set_strict_mode(0)
h.connect_uri(sys.argv[1])
${body}
print(json.dumps(out))
`;
  const { stdout } = await python(script, [uri]);
  return JSON.parse(stdout) as Record<string, unknown>;
}

describe('error codes (strict mode off)', () => {
  test('past the end: reads, trims and caches are EINVAL, writes and zeroes ENOSPC', async () => {
    const out = await withHandle(
      srv.uri('disk'),
      `
size = h.get_size()
out['read'] = errno_of(lambda: h.pread(4096, size - 512))
out['trim'] = errno_of(lambda: h.trim(4096, size))
out['cache'] = errno_of(lambda: h.cache(4096, size))
out['write'] = errno_of(lambda: h.pwrite(b'x' * 4096, size - 512))
out['zero'] = errno_of(lambda: h.zero(4096, size))
`,
    );
    expect(out).toEqual({ read: 22, trim: 22, cache: 22, write: 28, zero: 28 });
  });

  test('unaligned requests from a client that asked for block sizes are EINVAL', async () => {
    const out = await withHandle(
      srv.uri('disk'),
      `
out['minimum'] = h.get_block_size(nbd.SIZE_MINIMUM)
out['read'] = errno_of(lambda: h.pread(512, 100))
out['write'] = errno_of(lambda: h.pwrite(b'x' * 100, 0))
out['aligned'] = errno_of(lambda: h.pread(512, 512))
`,
    );
    expect(out).toEqual({ minimum: 512, read: 22, write: 22, aligned: 0 });
  });

  test('writes, trims and zeroes on a read-only export are EPERM; reads work', async () => {
    const out = await withHandle(
      srv.uri('ro'),
      `
out['read_only'] = h.is_read_only()
out['write'] = errno_of(lambda: h.pwrite(b'x' * 4096, 0))
out['trim'] = errno_of(lambda: h.trim(4096, 0))
out['zero'] = errno_of(lambda: h.zero(4096, 0))
out['read'] = errno_of(lambda: h.pread(4096, 0))
`,
    );
    expect(out).toEqual({ read_only: true, write: 1, trim: 1, zero: 1, read: 0 });
  });
});

describe('concurrency', () => {
  test('64 requests in flight at once all complete with the right data', async () => {
    const out = await withHandle(
      srv.uri('disk'),
      `
N = 64
writes = [h.aio_pwrite(bytes([i + 1]) * 8192, (64 + i) * 65536 + 4096) for i in range(N)]
out['writes_in_flight'] = h.aio_in_flight()
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in writes:
    h.aio_command_completed(c)
bufs = [nbd.Buffer(8192) for i in range(N)]
reads = [h.aio_pread(bufs[i], (64 + i) * 65536 + 4096) for i in range(N)]
out['reads_in_flight'] = h.aio_in_flight()
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in reads:
    h.aio_command_completed(c)
out['correct'] = sum(1 for i in range(N) if bytes(bufs[i].to_bytearray()) == bytes([i + 1]) * 8192)
`,
    );
    expect(out).toEqual({ writes_in_flight: 64, reads_in_flight: 64, correct: 64 });
  });

  test("two connections see each other's flushed writes (CAN_MULTI_CONN)", async () => {
    const out = await withHandle(
      srv.uri('disk'),
      `
h2 = nbd.NBD()
h2.connect_uri(sys.argv[1])
out['multi_conn'] = h.can_multi_conn() and h2.can_multi_conn()
h.pwrite(b'A' * 4096, 200 * 65536)
h.flush()
out['second_sees_first'] = h2.pread(4096, 200 * 65536) == b'A' * 4096
h2.pwrite(b'B' * 4096, 201 * 65536)
h2.flush()
out['first_sees_second'] = h.pread(4096, 201 * 65536) == b'B' * 4096
h2.shutdown()
`,
    );
    expect(out).toEqual({ multi_conn: true, second_sees_first: true, first_sees_second: true });
  });
});

describe('structured replies through libnbd', () => {
  test('pread_structured gets data chunks and hole chunks that cover the read exactly', async () => {
    const out = await withHandle(
      srv.uri('ro'),
      `
chunks = []
def chunk(buf, offset, status, err):
    chunks.append([offset, len(buf), 'data' if status == nbd.READ_DATA else 'hole'])
    return 0
data = h.pread_structured(8 * 65536, 0, chunk)
out['chunks'] = sorted(chunks)
out['length'] = len(data)
`,
    );
    expect(out).toEqual({
      chunks: [
        [0, 4 * 65536, 'data'],
        [4 * 65536, 4 * 65536, 'hole'],
      ],
      length: 8 * 65536,
    });
  });

  test('block_status with REQ_ONE answers one extent per context; cache and fast zero succeed', async () => {
    const out = await withHandle(
      srv.uri('disk'),
      `
h2 = nbd.NBD()
h2.add_meta_context('base:allocation')
h2.add_meta_context('cowdisk:layer')
h2.connect_uri(sys.argv[1])
seen = {}
def extent(meta, offset, entries, err):
    seen[meta] = entries
    return 0
h2.block_status(65536 * 8, 0, extent, nbd.CMD_FLAG_REQ_ONE)
out['extents'] = seen
out['cache'] = errno_of(lambda: h2.cache(65536, 0))
out['fast_zero'] = errno_of(lambda: h2.zero(65536, 300 * 65536, nbd.CMD_FLAG_FAST_ZERO))
`,
    );
    expect(out).toEqual({
      extents: { 'base:allocation': [4 * 65536, 0], 'cowdisk:layer': [8 * 65536, 2] },
      cache: 0,
      fast_zero: 0,
    });
  });
});
