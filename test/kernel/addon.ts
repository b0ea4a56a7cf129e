/**
 * The addon for tests that exercise it: a test fails, saying how to build it, when it is missing
 * (never skips), because every machine that runs the suite builds it in `npm run setup`.
 */
import { native, nativeUnavailableReason, type NativeBinding } from '../../src/native.js';

export function addon(): NativeBinding {
  const binding = native();
  if (!binding) throw new Error(`${nativeUnavailableReason()} (\`npm run build:native\` builds it)`);
  return binding;
}
