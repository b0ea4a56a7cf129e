/** The layer lifecycle as a library: what the snapshot, commit, rebase, flatten, diff and gc commands run. */
export { snapshotOverlay } from './snapshot.js';
export { commitOverlay, type CommitOptions, type CommitResult } from './commit.js';
export { rebaseOverlay, type RebaseOptions, type RebaseResult } from './rebase.js';
export { flattenImage, type FlattenOptions, type FlattenResult } from './flatten.js';
export { diffImage, openDiff, diffRanges, type DiffOptions, type DiffRange, type DiffResult, type DiffSides } from './diff.js';
export { diffFiles, type FileChange, type FileChangeKind } from './files.js';
export { gcImage, type GcResult } from './gc.js';
export type { LifecycleOptions, SealResult } from './seal.js';
