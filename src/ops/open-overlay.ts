/**
 * Opening the overlay a modifying verb works on: for writing, which takes the overlay's lock, so
 * that a `serve`, an `attach` or another verb using it makes this one fail with LOCKED before
 * anything is touched (their in-memory state map would not see our changes, nor we theirs).
 */
import * as path from 'node:path';
import { CowdiskError, ErrorCode } from '../errors.js';
import type { FileSystem } from '../io/file.js';
import { type Image, openImage } from '../image/open.js';
import type { OverlayDevice } from '../image/overlay-device.js';

/** An image whose top is a writable overlay. */
export type OpenOverlay = Image & { readonly overlay: OverlayDevice };

/** Opens `file` for writing and checks it is an overlay; `verb` names the command in the error. */
export async function openOverlayForWriting(fs: FileSystem, file: string, verb: string): Promise<OpenOverlay> {
  const image = await openImage(path.resolve(file), { fs });
  if (!image.overlay) {
    await image.close();
    const what = image.kind === 'snapshot' ? 'a sealed snapshot layer, which is never modified' : 'a raw image';
    throw new CowdiskError(
      ErrorCode.INVALID_ARGUMENT,
      `\`cowdisk ${verb}\` works on a writable overlay; ${image.path} is ${what}. Clone it first (\`cowdisk clone ${file} NEW.cow\`).`,
      { path: image.path },
    );
  }
  return image as OpenOverlay;
}
