/**
 * The local copy of migrated files.
 *
 *   const store = await Store.open(cacheDir, blockSize?)     // dir mode 0700, resumes
 *   const file = await store.openFile(meta: FileMeta, create) // BlockFile
 *   file.stateOf(i) -> ABSENT | PRESENT | DIRTY; file.fill(i, bytes); file.write(off, bytes);
 *   file.read(off, len); file.truncate(size); file.fsync(); file.bytesIn(state)
 */
export {
  ABSENT,
  BlockFile,
  type BlockState,
  blockCount,
  DIRTY,
  PRESENT,
  parseBlockStates,
} from "./blockfile.js";
export { type CacheDiskStatus, CacheSpace, isNoSpace } from "./space.js";
export {
  DEFAULT_BLOCK_SIZE,
  type FileMeta,
  POLICIES,
  type Policy,
  Store,
  storeFilePaths,
} from "./store.js";
