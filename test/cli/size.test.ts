import { describe, expect, it } from 'vitest';
import { formatSize, parseCount, parseSize } from '../../src/cli/size.js';
import { ErrorCode } from '../../src/errors.js';

describe('parseSize', () => {
  it.each([
    ['4096', 4096],
    ['64K', 64 * 1024],
    ['64k', 64 * 1024],
    ['10G', 10 * 1024 ** 3],
    ['2GiB', 2 * 1024 ** 3],
    ['1.5M', 1.5 * 1024 ** 2],
    ['512B', 512],
    ['1T', 1024 ** 4],
    [' 8M ', 8 * 1024 ** 2],
  ])('reads %j as %d bytes', (text, bytes) => {
    expect(parseSize(text, '--size')).toBe(bytes);
  });

  it.each(['', 'G', '10Q', '-1', '1e9', '0x100', '10 GB of disk', '1.3K', '99999999P'])('refuses %j with INVALID_ARGUMENT naming the option', (text) => {
    expect(() => parseSize(text, '--block-size')).toThrow(expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT, message: expect.stringContaining('--block-size') }));
  });
});

describe('parseCount', () => {
  it('reads whole numbers and refuses fractions, signs and words', () => {
    expect(parseCount('16', '--sub-blocks', 1)).toBe(16);
    for (const bad of ['0', '1.5', '-2', 'x', '']) {
      expect(() => parseCount(bad, '--sub-blocks', 1)).toThrow(expect.objectContaining({ code: ErrorCode.INVALID_ARGUMENT }));
    }
  });
});

describe('formatSize', () => {
  it.each([
    [0, '0 B'],
    [1023, '1023 B'],
    [64 * 1024, '64 KiB'],
    [1.5 * 1024 ** 3, '1.5 GiB'],
    [100 * 1024 ** 3, '100 GiB'],
    [1024 ** 2 - 1, '1 MiB'],
  ])('writes %d bytes as %j', (bytes, text) => {
    expect(formatSize(bytes)).toBe(text);
  });

  it('prints exact sizes that parse back to the same bytes', () => {
    for (const bytes of [4096, 65536, 3 * 1024 ** 3, 1.5 * 1024 ** 2]) expect(parseSize(formatSize(bytes).replace(' ', ''), 'x')).toBe(bytes);
  });
});
