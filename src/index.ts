/**
 * cowdisk as a library: open, create, clone, import, export, inspect and check images, run their
 * lifecycle, serve them over NBD and attach them to the kernel. The CLI (src/cli) is a thin shell
 * over these.
 */
export { CowdiskError, ErrorCode, isCowdiskError } from './errors.js';
export type { BlockDevice, Capabilities, Extent, LayerInfo, WriteOptions, ZeroOptions } from './image/device.js';
export { openImage, detectKind, type Image, type ImageKind, type OpenImageOptions } from './image/open.js';
export { createImage, cloneImage, type CreateOptions, type CloneOptions } from './image/create.js';
export { importRaw, type ImportOptions } from './image/import.js';
export { exportRaw, type ExportOptions } from './image/export.js';
export { describeImage, type ImageDescription, type LayerDescription, type Allocation, type DescribeOptions } from './image/info.js';
export { mapExtents, type MappedExtent } from './image/map.js';
export { checkImage, type CheckReport, type CheckOptions, type Problem } from './image/check.js';
export * from './image/lifecycle/index.js';
export { NbdServer, transmissionFlags, type NbdServerOptions, type ListenOptions, type ExportConfig } from './nbd/index.js';
export { attach, Attachment, type AttachOptions } from './kernel/attach.js';
export { detach, type DetachOptions, type DetachResult } from './kernel/detach.js';
export type { BlockFile, FileSystem } from './io/file.js';
export { RealFileSystem, realFileSystem } from './io/real-file.js';
export { MemoryFileSystem } from './io/memory-file.js';
