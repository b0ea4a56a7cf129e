/**
 * The JavaScript face of cowdisk's N-API addon (native/). Nothing else in cowdisk touches the
 * binding: callers ask `native()` and get either the typed binding or null when the addon was not
 * built (no compiler at install time, say). Everything but `attach` works without it; the features
 * that need it say why they are unavailable through `nativeUnavailableReason()`.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

export interface NativeBinding {
  /** fallocate(PUNCH_HOLE | KEEP_SIZE); false when the file system does not support it. */
  punchHole(fd: number, offset: number, length: number): boolean;
}

const BINDING_PATH = fileURLToPath(new URL('../native/build/Release/cowdisk_native.node', import.meta.url));

let loaded: NativeBinding | null | undefined;
let failure: string | undefined;

export function native(): NativeBinding | null {
  if (loaded !== undefined) return loaded;
  try {
    loaded = createRequire(import.meta.url)(BINDING_PATH) as NativeBinding;
  } catch (err) {
    loaded = null;
    failure = `the native addon is not built (${BINDING_PATH}: ${(err as Error).message.split('\n')[0]}); run \`npm run setup\``;
  }
  return loaded;
}

/** Why `native()` returned null, as a sentence for an error message. */
export function nativeUnavailableReason(): string | undefined {
  native();
  return failure;
}
