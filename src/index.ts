/**
 * cowdisk as a library: open, create, clone, import, export, inspect and check images, run their
 * lifecycle, serve them over NBD and attach them to the kernel. The CLI (src/cli) is a thin shell
 * over these.
 */
import { useRangeSources } from './image/range-source.js';
import { registryRangeSources } from './ops/remote-source.js';

export { CowdiskError, ErrorCode, ioError, isCowdiskError, type ErrorCodeValue } from './errors.js';
export type { BlockDevice, Capabilities, Extent, LayerInfo, WriteOptions, ZeroOptions } from './image/device.js';
export type { Layer, SealedLayer } from './image/layer.js';
export { openImage, allLayers, detectKind, type Image, type ImageKind, type OpenImageOptions } from './image/open.js';
export { createImage, cloneImage, type CreateOptions, type CreateResult, type CloneOptions, type CloneResult } from './ops/create.js';
export { importRaw, type ImportOptions, type ImportResult } from './ops/import.js';
export { exportRaw, type ExportOptions, type ExportResult } from './ops/export.js';
export { describeImage, type ImageDescription, type LayerDescription, type Allocation, type DescribeOptions } from './ops/info.js';
export { mapExtents, type MappedExtent } from './ops/map.js';
export { checkImage, type CheckResult, type CheckOptions, type Problem } from './ops/check.js';
export { snapshotOverlay } from './ops/snapshot.js';
export { commitOverlay, type CommitOptions, type CommitResult } from './ops/commit.js';
export { rebaseOverlay, type RebaseOptions, type RebaseResult } from './ops/rebase.js';
export { flattenImage, type FlattenOptions, type FlattenResult } from './ops/flatten.js';
export { diffImage, openDiff, diffRanges, type DiffOptions, type DiffRange, type DiffResult, type DiffSides } from './ops/diff.js';
export { diffFiles, type FileChange, type FileChangeKind } from './fsdiff/files.js';
export { gcImage, type GcResult } from './ops/gc.js';
export { cloneFromRegistry, type RemoteCloneOptions, type RemoteCloneResult } from './ops/clone-remote.js';
export { pullImage, type PullOptions, type PullResult, type PulledLayer } from './ops/pull.js';
export { pushImage, type PushOptions, type PushResult, type PushedLayer } from './ops/push.js';
export { prefetch, type Prefetch, type PrefetchOptions } from './ops/prefetch.js';
export type { RegistryAccess } from './ops/remote-source.js';
export type { FillOptions, FillResult, RemoteCache, RemoteStats } from './image/layer.js';
export { defaultCacheDir } from './image/layer-cache.js';
export { Credentials, looksLikeReference } from './registry/index.js';
export { upgradeLayer, type UpgradeResult } from './ops/upgrade.js';
export type { LifecycleOptions, SealResult } from './ops/seal.js';
export { NbdServer, transmissionFlags, loadTlsCredentials, type NbdServerOptions, type ListenOptions, type ExportConfig, type TlsCredentials, type TlsMode } from './nbd/index.js';
export { DEFAULT_POLL_US } from './nbd/poller.js';
export { attach, Attachment, type AttachOptions } from './kernel/attach.js';
export { detach, type DetachOptions, type DetachResult } from './kernel/detach.js';
export { parseDevice } from './kernel/devices.js';
export { inventory, type DeviceEntry } from './kernel/inventory.js';
export { BenchInterrupted, MAX_QUEUE_DEPTH, runBench, type BenchOptions, type BenchResult } from './bench/runner.js';
export { DEFAULT_COUNT, WARMUP_REQUESTS } from './bench/workload.js';
export type { HistogramBucket, LatencySummary } from './bench/latency.js';
export { renderCdfSvg } from './bench/cdf-plot.js';
export { warmUpRequestPath } from './bench/warm-up.js';
export type { BlockFile, FileSystem } from './io/file.js';
export { RealFileSystem, realFileSystem, servingFileSystem } from './io/real-file.js';
export { MemoryFileSystem } from './io/memory-file.js';

// Every image this library opens may have lazily cloned layers beneath it, fetched from their
// registry when read: the engine cannot import the registry client, so it is installed here.
useRangeSources(registryRangeSources);
