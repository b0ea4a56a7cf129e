/**
 * A device that hands every operation to another device: the base for devices that change only a
 * few operations and pass the rest on, as nbdkit's filters pass to `next`. A subclass overrides
 * what it changes (a read-only view refuses writes and leaves closing to the owner; a test's
 * counter counts reads) and inherits the rest.
 */
import type { BlockDevice, Capabilities, Extent, LayerInfo, WriteOptions, ZeroOptions } from './device.js';

export class PassThroughDevice implements BlockDevice {
  constructor(protected readonly inner: BlockDevice) {}

  get size(): number {
    return this.inner.size;
  }

  get blockSize(): number {
    return this.inner.blockSize;
  }

  get capabilities(): Capabilities {
    return this.inner.capabilities;
  }

  get chain(): readonly LayerInfo[] {
    return this.inner.chain;
  }

  read(buf: Buffer, offset: number): Promise<void> {
    return this.inner.read(buf, offset);
  }

  readNow(buf: Buffer, offset: number): boolean {
    return this.inner.readNow?.(buf, offset) ?? false;
  }

  write(buf: Buffer, offset: number, options?: WriteOptions): Promise<void> {
    return this.inner.write(buf, offset, options);
  }

  zero(offset: number, length: number, options?: ZeroOptions): Promise<void> {
    return this.inner.zero(offset, length, options);
  }

  trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    return this.inner.trim(offset, length, options);
  }

  flush(): Promise<void> {
    return this.inner.flush();
  }

  extents(offset: number, length: number): Promise<Extent[]> {
    return this.inner.extents(offset, length);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
