/**
 * Content digests as registries write them: `sha256:` and 64 lower-case hex digits (the OCI
 * image spec's descriptor grammar, restricted to the one algorithm cowdisk uses). Every blob and
 * manifest cowdisk receives is checked against the digest it was asked by before it is used.
 */
import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { CowdiskError, ErrorCode } from '../errors.js';

const DIGEST = /^sha256:[a-f0-9]{64}$/;

export function isDigest(text: string): boolean {
  return DIGEST.test(text);
}

export function sha256Digest(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** The error for bytes that are not the ones their digest names. */
export function digestMismatch(what: string, expected: string, actual: string): CowdiskError {
  return new CowdiskError(
    ErrorCode.CORRUPT,
    `${what}: the bytes received hash to ${actual}, not ${expected}; they were damaged in the registry or on the way. Nothing was used; try again, and if it persists the registry's copy is bad.`,
  );
}

/**
 * Passes bytes through while hashing them, and fails the stream at its end when the bytes do not
 * hash to `expected` or are not `size` long, so a consumer that reads to the end never mistakes
 * a damaged blob for a good one.
 */
export class VerifyingStream extends Transform {
  private readonly hash = createHash('sha256');
  private received = 0;

  constructor(
    private readonly what: string,
    private readonly expected: string,
    private readonly size: number | undefined,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.hash.update(chunk);
    this.received += chunk.length;
    if (this.size !== undefined && this.received > this.size) {
      done(new CowdiskError(ErrorCode.CORRUPT, `${this.what}: the registry sent more than the ${this.size} bytes it announced.`));
      return;
    }
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    if (this.size !== undefined && this.received !== this.size) {
      done(new CowdiskError(ErrorCode.CORRUPT, `${this.what}: the registry sent ${this.received} of ${this.size} bytes.`));
      return;
    }
    const actual = `sha256:${this.hash.digest('hex')}`;
    done(actual === this.expected ? null : digestMismatch(this.what, this.expected, actual));
  }
}
