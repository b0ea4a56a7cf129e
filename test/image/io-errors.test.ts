/**
 * I/O errors that are not a crash: the disk refuses some operation (EIO on a write, a sync, a
 * punch), the request fails with a typed error, and the image carries on. fast-check draws a
 * workload and which file operations fail. Afterwards, with errors off, one flush that succeeds
 * must make every answered request durable, and a request that failed may have happened or not,
 * byte by byte, but must not disturb anything else: after a power cut, the disk reads as
 * test/helpers/model.ts's CrashModel allows, with failed requests counted as issued, never
 * answered. A close that fails gives the device up: what it answered since its last successful
 * flush may be lost (its in-memory map is), as with a failed fsync.
 */
import fc from 'fast-check';
import { expect, test } from 'vitest';
import { CowdiskError, ErrorCode } from '../../src/errors.js';
import { MemoryFileSystem } from '../../src/io/memory-file.js';
import { type Image, openImage } from '../../src/image/open.js';
import { buildChain, pattern } from '../helpers/engine-chain.js';
import { CrashModel } from '../helpers/model.js';

const BS = 65536;
const SIZE = 5 * BS;

const stepArb = fc.record({
  kind: fc.constantFrom('write', 'write', 'write', 'zero', 'trim', 'flush', 'reopen'),
  offset: fc.integer({ min: 0, max: SIZE - 1 }),
  length: fc.integer({ min: 1, max: 2 * BS }),
  seed: fc.nat(),
});

test('after failed requests, a flush that succeeds makes every answered one durable and nothing else is disturbed', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(stepArb, { minLength: 1, maxLength: 25 }),
      fc.uniqueArray(fc.integer({ min: 1, max: 400 }), { maxLength: 12 }),
      fc.constantFrom(1, 16),
      async (steps, failing, subBlocks) => {
        const fs = new MemoryFileSystem();
        const chain = await buildChain(fs, '/e', { depth: 3, base: 'snapshot', size: SIZE, blockSize: BS, subBlocks, seed: 41 });
        const model = new CrashModel(chain.content);
        const fail = new Set(failing);
        let counted = 0;
        fs.inject = (op) => (op.op !== 'open' && op.op !== 'create' && fail.has(++counted) ? Object.assign(new Error('medium error'), { code: 'EIO' }) : undefined);
        let dev: Image | undefined;
        const attempt = async (work: () => Promise<void>): Promise<boolean> => {
          try {
            await work();
            return true;
          } catch (err) {
            if (!(err instanceof CowdiskError) || err.code !== ErrorCode.IO) throw err;
            return false;
          }
        };
        for (const step of steps) {
          if (!dev) {
            await attempt(async () => {
              dev = (await openImage(chain.overlay, { fs })).device;
            });
            if (!dev) continue;
          }
          const d: Image = dev;
          const length = Math.min(step.length, SIZE - step.offset);
          if (step.kind === 'flush') {
            if (await attempt(() => d.flush())) model.flushed();
          } else if (step.kind === 'reopen') {
            dev = undefined;
            if (await attempt(() => d.close())) model.flushed();
            else model.abandoned();
          } else {
            const data = step.kind === 'write' ? pattern(step.seed, length) : Buffer.alloc(length);
            model.issue(step.offset, data);
            const ok = await attempt(() => (step.kind === 'write' ? d.write(data, step.offset) : d[step.kind as 'zero' | 'trim'](step.offset, length)));
            if (ok) model.answered(step.offset, data);
            else model.failed(step.offset, data);
          }
        }
        fs.inject = undefined;
        if (dev) {
          await (dev as Image).flush();
          model.flushed();
          await (dev as Image).close();
        }
        fs.crash();
        const image = (await openImage(chain.overlay, { fs })).device;
        const back = Buffer.alloc(SIZE);
        await image.read(back, 0);
        const violation = model.violation(back);
        if (violation) expect.fail(violation);
        await image.close();
      },
    ),
    { numRuns: 60 },
  );
});
