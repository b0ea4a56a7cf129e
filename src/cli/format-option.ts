/**
 * `--format raw`, as qemu's `-f raw`: an image's kind is read from its headers, and a file that
 * carries cowdisk structures without a readable header is refused as a damaged image rather than
 * served as a raw disk (which would hand out its metadata as disk contents and write over it).
 * The rare raw disk that really holds such bytes is opened with this flag.
 */
import { Option } from 'commander';

export type FormatCliValue = 'raw' | undefined;

export function formatOption(what = 'IMAGE'): Option {
  return new Option('--format <format>', `take ${what} as a raw disk image whatever its bytes hold (only \`raw\`; by default the kind is read from the file)`).choices(['raw']);
}
