/**
 * `diff --files`: from changed blocks to changed files, on a disk that holds an ext2/3/4 file
 * system, printed as `docker diff` does: `A` (the path exists now, not before), `D` (the
 * reverse), `C` (it exists in both and its file changed).
 *
 * Any change a file system makes to a file changes its inode record: size, block map, and always
 * mtime or ctime (a rename too). So the changed blocks that lie in an inode table say exactly
 * which inodes changed: their records are compared between the two disks (leaving out the access
 * time, so a file that was only read is not a change). An inode in use only on the new disk was
 * added, only on the old one deleted; in use on both with the same generation, the same file
 * changed (a new generation means the number was reused by a new file). Changed data blocks
 * outside inode tables, whose owner `debugfs icheck` finds on each disk, add the files whose
 * contents were written below the file system (a raw write leaves the inode alone). Then `debugfs
 * ncheck` gives the paths, on the new disk for inodes in use there and on the old one for the
 * others, and a path deleted and added again is a change.
 *
 * Cost: inode records are read from the changed inode-table blocks only. `icheck` is asked about
 * the first block of each run of changed data blocks (a file written in one go is one run), at
 * most MAX_DATA_SAMPLES of them: the inode records already name every file changed through the
 * file system, and icheck's time grows with the blocks asked times the blocks in use. `ncheck`
 * walks the directories once per disk. Both run on a file view of the disk (file-view.ts), so
 * debugfs reads only what it needs. Special inodes (the journal, the root directory) are never
 * listed, as docker diff does not list "/".
 */
import { CowdiskError, ErrorCode } from '../errors.js';
import type { BlockDevice } from '../image/device.js';
import type { DiffRange, DiffSides } from '../ops/diff.js';
import { type Ext4Geometry, decodeInode, inodePaths, owningInodes, readExt4Geometry, readInode, recordsDiffer, sameGeometry } from './ext4.js';
import { type FileViews, viewAsFiles } from './file-view.js';

export type FileChangeKind = 'A' | 'C' | 'D';

export interface FileChange {
  kind: FileChangeKind;
  path: string;
}

const MAX_DATA_SAMPLES = 4096;
const PURPOSE = '`cowdisk diff --files`';

interface InodeVersions {
  old: Buffer;
  new: Buffer;
}

export async function diffFiles(sides: DiffSides, ranges: readonly DiffRange[]): Promise<FileChange[]> {
  const disk = sides.image.device;
  const geometry = await readExt4Geometry(disk);
  if (!geometry) {
    throw new CowdiskError(
      ErrorCode.UNSUPPORTED,
      `${sides.image.path} holds no ext2/3/4 file system at its start, so ${PURPOSE} cannot name files (a partitioned disk is not supported). \`cowdisk diff\` without --files lists the changed blocks.`,
      { path: sides.image.path },
    );
  }
  // With no file system below (an empty parent, or one made in this overlay), every file is new.
  const oldGeometry = sides.base && (await readExt4Geometry(sides.base));
  const oldDisk = oldGeometry ? sides.base : null;
  if (oldGeometry && !sameGeometry(geometry, oldGeometry)) {
    throw new CowdiskError(ErrorCode.UNSUPPORTED, `the file system on ${sides.image.path} was resized or made anew since ${sides.basePath}; ${PURPOSE} compares files only within one file system.`);
  }
  const { inodes, dataRuns } = await changedInodes(disk, oldDisk, geometry, ranges);
  const samples = sample(dataRuns.map((run) => run[0]), MAX_DATA_SAMPLES);
  if (inodes.size === 0 && samples.length === 0) return [];

  const views = await viewAsFiles(oldDisk ? [disk, oldDisk] : [disk], PURPOSE);
  try {
    const [newFile, oldFile] = views.files;
    const owners = await owningInodes(newFile, samples);
    if (oldFile) for (const ino of await owningInodes(oldFile, samples)) owners.add(ino);
    for (const ino of owners) {
      if (ino < geometry.firstInode || inodes.has(ino)) continue;
      inodes.set(ino, { new: await readInode(disk, geometry, ino), old: oldDisk ? await readInode(oldDisk, geometry, ino) : Buffer.alloc(geometry.inodeSize) });
    }
    return await classify(inodes, views, oldFile !== undefined);
  } finally {
    await views.close();
  }
}

/** Inodes whose records differ, from the changed inode-table blocks; and the other changed block runs. */
async function changedInodes(
  disk: BlockDevice,
  oldDisk: BlockDevice | null,
  g: Ext4Geometry,
  ranges: readonly DiffRange[],
): Promise<{ inodes: Map<number, InodeVersions>; dataRuns: Array<[number, number]> }> {
  const tables = g.inodeTables.map((start, group) => ({ start, group })).sort((a, b) => a.start - b.start);
  const inodes = new Map<number, InodeVersions>();
  const dataRuns: Array<[number, number]> = [];
  const perBlock = g.blockSize / g.inodeSize;
  const mine = Buffer.alloc(g.blockSize);
  const theirs = Buffer.alloc(g.blockSize);
  for (const [first, end] of blockRuns(ranges, g.blockSize)) {
    let block = first;
    while (block < end) {
      const table = tableAt(tables, block, g.tableBlocks);
      if (!table) {
        const next = nextTable(tables, block);
        const stop = Math.min(end, next ?? end);
        dataRuns.push([block, stop]);
        block = stop;
        continue;
      }
      await disk.read(mine, block * g.blockSize);
      if (oldDisk) await oldDisk.read(theirs, block * g.blockSize);
      for (let i = 0; i < perBlock; i++) {
        const ino = table.group * g.inodesPerGroup + (block - table.start) * perBlock + i + 1;
        const a = theirs.subarray(i * g.inodeSize, (i + 1) * g.inodeSize);
        const b = mine.subarray(i * g.inodeSize, (i + 1) * g.inodeSize);
        if (ino >= g.firstInode && recordsDiffer(a, b)) inodes.set(ino, { old: Buffer.from(a), new: Buffer.from(b) });
      }
      block++;
    }
  }
  return { inodes, dataRuns };
}

/** File-system block runs [first, end) touched by byte ranges, joined where they meet. */
function blockRuns(ranges: readonly DiffRange[], blockSize: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const r of ranges) {
    const first = Math.floor(r.offset / blockSize);
    const end = Math.ceil((r.offset + r.length) / blockSize);
    const last = out[out.length - 1];
    if (last && last[1] >= first) last[1] = Math.max(last[1], end);
    else out.push([first, end]);
  }
  return out;
}

type Table = { start: number; group: number };

/** The inode table containing `block`, if any (tables sorted by start). */
function tableAt(tables: readonly Table[], block: number, span: number): Table | undefined {
  let lo = 0;
  let hi = tables.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (tables[mid].start > block) hi = mid - 1;
    else if (tables[mid].start + span <= block) lo = mid + 1;
    else return tables[mid];
  }
  return undefined;
}

/** The start of the first inode table after `block`, if any. */
function nextTable(tables: readonly Table[], block: number): number | undefined {
  let lo = 0;
  let hi = tables.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (tables[mid].start > block) hi = mid;
    else lo = mid + 1;
  }
  return tables[lo]?.start;
}

/** At most `max` items, spread evenly. */
function sample(items: number[], max: number): number[] {
  if (items.length <= max) return items;
  return Array.from({ length: max }, (_, i) => items[Math.floor((i * items.length) / max)]);
}

async function classify(inodes: Map<number, InodeVersions>, views: FileViews, haveOld: boolean): Promise<FileChange[]> {
  const decoded = [...inodes].map(([ino, v]) => ({ ino, old: decodeInode(v.old), new: decodeInode(v.new) }));
  const newPaths = await inodePaths(views.files[0], decoded.filter((d) => d.new.inUse).map((d) => d.ino));
  const oldPaths = haveOld ? await inodePaths(views.files[1], decoded.filter((d) => d.old.inUse).map((d) => d.ino)) : new Map<number, string[]>();
  const byPath = new Map<string, Set<FileChangeKind>>();
  const mark = (path: string, kind: FileChangeKind) => byPath.set(path, (byPath.get(path) ?? new Set()).add(kind));
  for (const d of decoded) {
    const now = d.new.inUse ? (newPaths.get(d.ino) ?? []) : [];
    const before = d.old.inUse ? (oldPaths.get(d.ino) ?? []) : [];
    const sameFile = d.old.inUse && d.new.inUse && d.old.generation === d.new.generation && d.old.type === d.new.type;
    for (const p of now) mark(p, sameFile && before.includes(p) ? 'C' : 'A');
    for (const p of before) if (!(sameFile && now.includes(p))) mark(p, 'D');
  }
  const out: FileChange[] = [];
  for (const [path, kinds] of byPath) {
    // Deleted and added again (a file replaced by a new one of the same name): changed.
    const kind: FileChangeKind = kinds.has('C') || (kinds.has('A') && kinds.has('D')) ? 'C' : kinds.has('A') ? 'A' : 'D';
    out.push({ kind, path });
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
