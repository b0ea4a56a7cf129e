/**
 * A file that appears whole or not at all, the way every image cowdisk makes gets its name: the
 * bytes go to a temporary name beside the target, are synced, the file gets its permission bits,
 * and only then takes the target's name, after which the directory is synced. A crash at any
 * instant leaves no file, or a whole one (and perhaps a temporary file nothing refers to).
 *
 * A new file never takes the name of one that exists, not even one that appeared while it was
 * being written (FileSystem.publish). `replace` is for the one case that must: the atomic switch
 * of an overlay to its emptied successor (`snapshot`, `commit`), whose old file the caller holds.
 */
import * as path from 'node:path';
import { CowdiskError, ErrorCode, isCowdiskError } from '../errors.js';
import type { BlockFile, FileSystem } from './file.js';

export interface NewFileOptions {
  /** Rename over an existing target instead of refusing it. */
  replace?: boolean;
  /** What the temporary name says it is: `TARGET.<tag>-<pid>` (default "partial"). */
  tag?: string;
}

export class NewFile {
  private constructor(
    private readonly fs: FileSystem,
    /** Where the file will be published (absolute). */
    readonly path: string,
    /** Where it is written meanwhile. */
    readonly tmpPath: string,
    /** The temporary file, open for writing. */
    readonly file: BlockFile,
    private readonly replace: boolean,
  ) {}

  static async create(fs: FileSystem, target: string, options: NewFileOptions = {}): Promise<NewFile> {
    const abs = path.resolve(target);
    if (!options.replace && (await fs.exists(abs))) {
      throw new CowdiskError(ErrorCode.EXISTS, `${abs} already exists; choose another name or remove it first.`, { path: abs });
    }
    const tmpPath = `${abs}.${options.tag ?? 'partial'}-${process.pid}`;
    // A leftover from a crashed run of this same process id is garbage: nothing refers to it.
    if (await fs.exists(tmpPath)) await fs.unlink(tmpPath);
    const file = await fs.create(tmpPath, { exclusive: false });
    return new NewFile(fs, abs, tmpPath, file, options.replace ?? false);
  }

  /**
   * Syncs and closes the file, gives it `mode` (exactly, no umask) when asked, and publishes it
   * under its name. On any failure the temporary file is removed and the target is untouched.
   */
  async publish(options: { mode?: number } = {}): Promise<void> {
    try {
      await this.file.sync();
      await this.file.close();
      if (options.mode !== undefined) await this.fs.chmod(this.tmpPath, options.mode);
      if (this.replace) await this.fs.rename(this.tmpPath, this.path);
      else await this.fs.publish(this.tmpPath, this.path);
    } catch (err) {
      await this.discard();
      if (isCowdiskError(err, ErrorCode.EXISTS)) {
        throw new CowdiskError(ErrorCode.EXISTS, `${this.path} appeared while it was being written; the new file was discarded.`, { path: this.path, cause: err });
      }
      throw err;
    }
    await this.fs.syncDir(path.dirname(this.path));
  }

  /** Gives up: closes and removes the temporary file (errors are ignored: there is nothing to keep). */
  async discard(): Promise<void> {
    await this.file.close().catch(() => undefined);
    await this.fs.unlink(this.tmpPath).catch(() => undefined);
  }
}
