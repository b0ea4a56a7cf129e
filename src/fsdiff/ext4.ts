/**
 * Just enough of ext2/3/4 to say which files a set of changed disk blocks belongs to.
 *
 * Read directly from the disk: the superblock (geometry), the group descriptors (where each
 * group's inode table is) and inode records (in use or not, generation, type). Those tell, for a
 * changed block of an inode table, exactly which inodes changed, by comparing the records of the
 * two disks. Asked of e2fsprogs' `debugfs` (run on a file view of each disk): `icheck` (which
 * inode owns a data block) and `ncheck` (the paths of an inode). Field offsets are those of the
 * kernel's fs/ext4/ext4.h (struct ext4_super_block, ext4_group_desc, ext4_inode).
 */
import { CowdiskError, ErrorCode } from '../errors.js';
import type { BlockDevice } from '../image/device.js';
import { findProgram, runProgram } from './file-view.js';

const SUPERBLOCK_OFFSET = 1024;
const EXT_MAGIC = 0xef53;
const INCOMPAT_64BIT = 0x80;

export interface Ext4Geometry {
  blockSize: number;
  blocksCount: number;
  inodesPerGroup: number;
  inodeSize: number;
  /** The first inode that is an ordinary file or directory (11 in every file system mkfs makes). */
  firstInode: number;
  /** First block of each group's inode table. */
  inodeTables: number[];
  /** Blocks each inode table spans. */
  tableBlocks: number;
}

/** The geometry of the ext2/3/4 file system at the start of `device`, or null when there is none. */
export async function readExt4Geometry(device: BlockDevice): Promise<Ext4Geometry | null> {
  if (device.size < SUPERBLOCK_OFFSET + 1024) return null;
  const sb = Buffer.alloc(1024);
  await device.read(sb, SUPERBLOCK_OFFSET);
  if (sb.readUInt16LE(56) !== EXT_MAGIC) return null;
  const logBlockSize = sb.readUInt32LE(24);
  if (logBlockSize > 6) return null;
  const blockSize = 1024 << logBlockSize;
  const is64 = (sb.readUInt32LE(96) & INCOMPAT_64BIT) !== 0;
  const blocksCount = sb.readUInt32LE(4) + (is64 ? sb.readUInt32LE(0x150) * 2 ** 32 : 0);
  const firstDataBlock = sb.readUInt32LE(20);
  const blocksPerGroup = sb.readUInt32LE(32);
  const inodesPerGroup = sb.readUInt32LE(40);
  const revision = sb.readUInt32LE(76);
  const inodeSize = revision >= 1 ? sb.readUInt16LE(88) : 128;
  const firstInode = revision >= 1 ? sb.readUInt32LE(84) : 11;
  const descSize = is64 ? Math.max(32, sb.readUInt16LE(0xfe)) : 32;
  if (blocksPerGroup === 0 || inodesPerGroup === 0 || inodeSize < 128 || blocksCount * blockSize > device.size) return null;
  const groups = Math.ceil((blocksCount - firstDataBlock) / blocksPerGroup);
  const gdt = Buffer.alloc(groups * descSize);
  await device.read(gdt, (firstDataBlock + 1) * blockSize);
  const inodeTables: number[] = [];
  for (let g = 0; g < groups; g++) {
    const at = g * descSize;
    inodeTables.push(gdt.readUInt32LE(at + 8) + (descSize >= 64 ? gdt.readUInt32LE(at + 0x28) * 2 ** 32 : 0));
  }
  return { blockSize, blocksCount, inodesPerGroup, inodeSize, firstInode, inodeTables, tableBlocks: Math.ceil((inodesPerGroup * inodeSize) / blockSize) };
}

export function sameGeometry(a: Ext4Geometry, b: Ext4Geometry): boolean {
  return (
    a.blockSize === b.blockSize &&
    a.blocksCount === b.blocksCount &&
    a.inodesPerGroup === b.inodesPerGroup &&
    a.inodeSize === b.inodeSize &&
    a.inodeTables.length === b.inodeTables.length &&
    a.inodeTables.every((t, i) => t === b.inodeTables[i])
  );
}

export interface InodeRecord {
  inUse: boolean;
  generation: number;
  /** The file type bits of i_mode (directory, regular file, symlink, ...). */
  type: number;
}

export function decodeInode(record: Buffer): InodeRecord {
  const mode = record.readUInt16LE(0);
  return { inUse: mode !== 0 && record.readUInt16LE(0x1a) > 0, generation: record.readUInt32LE(0x64), type: mode & 0xf000 };
}

/**
 * Whether two versions of an inode record differ in more than what reading the file changes:
 * the access time (and its extra bits) and the checksum that covers it are left out, so a file
 * that was only read is not reported as changed.
 */
export function recordsDiffer(a: Buffer, b: Buffer): boolean {
  if (a.equals(b)) return false;
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  const extra = x.length > 128 ? x.readUInt16LE(0x80) : 0;
  const ignored: Array<[number, number]> = [
    [0x08, 4],
    [0x7c, 2],
  ];
  if (128 + extra >= 0x84) ignored.push([0x82, 2]);
  if (128 + extra >= 0x90) ignored.push([0x8c, 4]);
  for (const [at, length] of ignored) {
    x.fill(0, at, at + length);
    y.fill(0, at, at + length);
  }
  return !x.equals(y);
}

/** Reads inode `ino`'s record from `device`. */
export async function readInode(device: BlockDevice, geometry: Ext4Geometry, ino: number): Promise<Buffer> {
  const group = Math.floor((ino - 1) / geometry.inodesPerGroup);
  const index = (ino - 1) % geometry.inodesPerGroup;
  const record = Buffer.alloc(geometry.inodeSize);
  await device.read(record, geometry.inodeTables[group] * geometry.blockSize + index * geometry.inodeSize);
  return record;
}

const PURPOSE = '`cowdisk diff --files`';
/** Arguments per debugfs command line, so that no line grows past what its parser takes. */
const PER_COMMAND = 200;

/** Runs `command` over every item of `items` against the file system in `file`: one debugfs, commands on stdin. */
async function debugfs(file: string, command: string, items: readonly number[]): Promise<string> {
  const program = findProgram('debugfs', 'e2fsprogs', PURPOSE);
  let script = '';
  for (let i = 0; i < items.length; i += PER_COMMAND) script += `${command} ${items.slice(i, i + PER_COMMAND).join(' ')}\n`;
  // -c: catastrophic mode, which skips reading the bitmaps that neither request needs.
  const result = await runProgram(program, ['-c', '-f', '-', file], script);
  if (result.code !== 0) throw new CowdiskError(ErrorCode.IO, `${PURPOSE}: debugfs ${command} failed on a view of the disk: ${result.stderr.trim()}`);
  return result.stdout;
}

/** `icheck`: the inode owning each of `blocks` (file system blocks), where one does. */
export async function owningInodes(file: string, blocks: readonly number[]): Promise<Set<number>> {
  const owners = new Set<number>();
  if (blocks.length === 0) return owners;
  for (const line of (await debugfs(file, 'icheck', blocks)).split('\n')) {
    const m = /^(\d+)\t(\d+)$/.exec(line);
    if (m) owners.add(Number(m[2]));
  }
  return owners;
}

/** `ncheck`: every path (one per hard link) of each inode in `inodes`. */
export async function inodePaths(file: string, inodes: readonly number[]): Promise<Map<number, string[]>> {
  const paths = new Map<number, string[]>();
  if (inodes.length === 0) return paths;
  for (const line of (await debugfs(file, 'ncheck', inodes)).split('\n')) {
    const m = /^(\d+)\t(.+)$/.exec(line);
    if (!m) continue;
    // debugfs writes entries of the root directory as "//name".
    const name = m[2].replace(/\/+/g, '/');
    const list = paths.get(Number(m[1])) ?? [];
    if (!list.includes(name)) list.push(name);
    paths.set(Number(m[1]), list);
  }
  return paths;
}
