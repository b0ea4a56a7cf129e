/**
 * cowdisk as a library: open, create, clone, import and export images, and serve them.
 * The CLI (src/cli) is a thin shell over these.
 */
export { CowdiskError, ErrorCode, isCowdiskError } from './errors.js';
export type { BlockDevice, Capabilities, Extent, LayerInfo, WriteOptions, ZeroOptions } from './image/device.js';
export { openImage, detectKind, type Image, type ImageKind, type OpenImageOptions } from './image/open.js';
export { createImage, cloneImage, type CreateOptions, type CloneOptions } from './image/create.js';
export { importRaw, type ImportOptions } from './image/import.js';
export { exportRaw, type ExportOptions } from './image/export.js';
export * from './image/lifecycle/index.js';
export type { BlockFile, FileSystem } from './io/file.js';
export { RealFileSystem, realFileSystem } from './io/real-file.js';
export { MemoryFileSystem } from './io/memory-file.js';
