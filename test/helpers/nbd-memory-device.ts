/**
 * A BlockDevice held in memory, with a chain of layers, for the NBD server's tests: small,
 * deterministic, and able to say which layer serves each block (so `cowdisk:layer` can be checked
 * without the engine). It is a model, not the engine: per block, each layer has nothing, data, or
 * a zero state; the top layer (index 0) takes writes with copy-up of partial blocks.
 *
 * `delay` makes every operation wait that many milliseconds times a pseudo-random factor, so that
 * pipelined requests really complete out of order; `hold` stops every operation until released.
 */
import type { BlockDevice, Capabilities, Extent, LayerInfo, WriteOptions, ZeroOptions } from '../../src/image/device.js';
import { CowdiskError, ErrorCode } from '../../src/errors.js';

type BlockState = Buffer | 'zero';

export interface MemoryDeviceOptions {
  size: number;
  blockSize?: number;
  /** Number of layers in the chain (default 1: a single writable overlay). */
  layers?: number;
  readOnly?: boolean;
  /** Overrides of the default capabilities. */
  capabilities?: Partial<Capabilities>;
  /** Maximum random delay per operation, in milliseconds (default 0: answer in the same tick). */
  delay?: number;
}

export class MemoryDevice implements BlockDevice {
  readonly size: number;
  readonly blockSize: number;
  readonly capabilities: Capabilities;
  readonly chain: LayerInfo[];
  /** layers[0] is the top layer. */
  readonly layers: Map<number, BlockState>[];
  flushes = 0;
  closed = false;
  /** Operations the device has started, in order (for tests about what reached the device). */
  readonly log: string[] = [];
  private readonly delay: number;
  private seed = 12345;
  private gate: Promise<void> | undefined;

  constructor(options: MemoryDeviceOptions) {
    this.size = options.size;
    this.blockSize = options.blockSize ?? 64 * 1024;
    const writable = !options.readOnly;
    this.capabilities = {
      writable,
      flush: writable,
      fua: true,
      trim: true,
      zero: true,
      fastZero: true,
      extents: true,
      multiConn: true,
      ...options.capabilities,
    };
    const n = options.layers ?? 1;
    this.layers = Array.from({ length: n }, () => new Map<number, BlockState>());
    this.chain = this.layers.map((_, i) => ({
      kind: i === 0 ? 'overlay' : 'snapshot',
      path: `/memory/layer${i}`,
      identity: `memory:${i}`,
    }));
    this.delay = options.delay ?? 0;
  }

  /** Stores data directly in layer `layer` (a test's way to build a parent). */
  fill(layer: number, offset: number, data: Buffer): void {
    for (let pos = offset; pos < offset + data.length; ) {
      const block = Math.floor(pos / this.blockSize);
      const inBlock = pos - block * this.blockSize;
      const n = Math.min(this.blockSize - inBlock, offset + data.length - pos);
      const current = this.layers[layer].get(block);
      const buf = Buffer.isBuffer(current) ? current : Buffer.alloc(this.blockSize);
      data.copy(buf, inBlock, pos - offset, pos - offset + n);
      this.layers[layer].set(block, buf);
      pos += n;
    }
  }

  /** Marks whole blocks of layer `layer` as zero (a whiteout). */
  zeroBlocks(layer: number, firstBlock: number, count: number): void {
    for (let b = firstBlock; b < firstBlock + count; b++) this.layers[layer].set(b, 'zero');
  }

  /** Makes every operation wait until the returned function is called. */
  hold(): () => void {
    let release!: () => void;
    this.gate = new Promise((resolve) => (release = resolve));
    return () => {
      this.gate = undefined;
      release();
    };
  }

  /** The disk's content (all of it by default), the way a reader sees it. */
  contents(offset = 0, length = this.size - offset): Buffer {
    const out = Buffer.alloc(length);
    this.readSync(out, offset);
    return out;
  }

  async read(buf: Buffer, offset: number): Promise<void> {
    await this.wait('read', offset, buf.length);
    this.readSync(buf, offset);
  }

  async write(buf: Buffer, offset: number, options?: WriteOptions): Promise<void> {
    await this.wait(options?.fua ? 'write+fua' : 'write', offset, buf.length);
    this.checkWrite(offset, buf.length);
    this.writeSync(buf, offset);
  }

  async zero(offset: number, length: number, options?: ZeroOptions): Promise<void> {
    await this.wait(`zero${options?.noHole ? '+nohole' : ''}${options?.fastZero ? '+fast' : ''}${options?.fua ? '+fua' : ''}`, offset, length);
    this.checkWrite(offset, length);
    this.zeroSync(offset, length, options?.noHole === true);
  }

  async trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    await this.wait(options?.fua ? 'trim+fua' : 'trim', offset, length);
    this.checkWrite(offset, length);
    this.zeroSync(offset, length, false);
  }

  async flush(): Promise<void> {
    await this.wait('flush', 0, 0);
    this.flushes++;
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    await this.wait('extents', offset, length);
    this.checkOpen();
    const out: Extent[] = [];
    for (let pos = offset; pos < offset + length; ) {
      const block = Math.floor(pos / this.blockSize);
      const end = Math.min((block + 1) * this.blockSize, offset + length);
      const { layer, state } = this.lookup(block);
      const kind: Extent['kind'] = state === undefined ? 'hole' : state === 'zero' ? 'zero' : 'data';
      const last = out[out.length - 1];
      if (last && last.kind === kind && last.layer === layer) last.length += end - pos;
      else out.push({ offset: pos, length: end - pos, kind, layer });
      pos = end;
    }
    return out;
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private lookup(block: number): { layer: number; state: BlockState | undefined } {
    for (let i = 0; i < this.layers.length; i++) {
      const state = this.layers[i].get(block);
      if (state !== undefined) return { layer: i, state };
    }
    return { layer: -1, state: undefined };
  }

  private readSync(buf: Buffer, offset: number): void {
    for (let pos = offset; pos < offset + buf.length; ) {
      const block = Math.floor(pos / this.blockSize);
      const inBlock = pos - block * this.blockSize;
      const n = Math.min(this.blockSize - inBlock, offset + buf.length - pos);
      const { state } = this.lookup(block);
      if (Buffer.isBuffer(state)) state.copy(buf, pos - offset, inBlock, inBlock + n);
      else buf.fill(0, pos - offset, pos - offset + n);
      pos += n;
    }
  }

  private writeSync(data: Buffer, offset: number): void {
    for (let pos = offset; pos < offset + data.length; ) {
      const block = Math.floor(pos / this.blockSize);
      const inBlock = pos - block * this.blockSize;
      const n = Math.min(this.blockSize - inBlock, offset + data.length - pos);
      let buf = this.layers[0].get(block);
      if (!Buffer.isBuffer(buf)) {
        // Copy-up: the block's current content from wherever it is served.
        buf = Buffer.alloc(this.blockSize);
        this.readSync(buf, block * this.blockSize);
        this.layers[0].set(block, buf);
      }
      data.copy(buf, inBlock, pos - offset, pos - offset + n);
      pos += n;
    }
  }

  private zeroSync(offset: number, length: number, noHole: boolean): void {
    for (let pos = offset; pos < offset + length; ) {
      const block = Math.floor(pos / this.blockSize);
      const inBlock = pos - block * this.blockSize;
      const n = Math.min(this.blockSize - inBlock, offset + length - pos);
      if (n === this.blockSize && !noHole) this.layers[0].set(block, 'zero');
      else this.writeSync(Buffer.alloc(n), pos);
      pos += n;
    }
  }

  private checkOpen(): void {
    if (this.closed) throw new CowdiskError(ErrorCode.CLOSED, 'memory device is closed');
  }

  private checkWrite(offset: number, length: number): void {
    this.checkOpen();
    if (!this.capabilities.writable) throw new CowdiskError(ErrorCode.READ_ONLY, 'memory device is read-only');
    if (offset + length > this.size) throw new CowdiskError(ErrorCode.OUT_OF_RANGE, 'past the end');
  }

  private async wait(op: string, offset: number, length: number): Promise<void> {
    this.log.push(`${op} ${offset} ${length}`);
    if (this.gate) await this.gate;
    if (this.delay > 0) {
      this.seed = (this.seed * 1103515245 + 12345) & 0x7fffffff;
      await new Promise((r) => setTimeout(r, (this.seed % 1000) / 1000 * this.delay));
    }
  }
}
