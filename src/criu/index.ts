/** CRIU images and the CRIU binary: the public API of `src/criu/`. */

export {
  type CriuBundle,
  LOCAL_BUNDLE_CACHE,
  packCriuBundle,
  WRAPPER_MARK,
  wrapperScript,
} from "./bundle.js";
export { type HeldLock, type ImageLock, imageLocks, parseLockLines } from "./file-locks.js";
export {
  type CriuImage,
  decodeEntries,
  decodeEntry,
  encodeImage,
  expectKind,
  type ImageEntry,
  ImageError,
  parseImage,
  readImage,
} from "./image.js";
export {
  CRIU_ENV,
  type CriuLocation,
  compareVersions,
  criuVersionProblem,
  locateCriu,
  MIN_CRIU_VERSION,
  PRIVATE_CRIU,
} from "./locate.js";
export {
  IMG_COMMON_MAGIC,
  IMG_SERVICE_MAGIC,
  type ImageKind,
  INVENTORY_MAGIC,
  isRawImageName,
  kindByMagic,
  kindByName,
} from "./magic.js";
export {
  type DumpModel,
  FD_KINDS,
  type FdModel,
  type FileRef,
  type FileUse,
  loadDump,
  loadFileTable,
  type MappingModel,
  openFlagsText,
  type TaskModel,
} from "./model.js";
export {
  addCriuOpt,
  type CriuOptions,
  criuDumpArgs,
  criuRestoreArgs,
  type NetworkLock,
  parseCgroupMode,
  parseNetworkLock,
  parsePidNamespaceMode,
} from "./options.js";
export {
  hostPidsIn,
  nsPids,
  PID_NAMESPACE_MODES,
  type PidNamespaceMode,
  pidNamespacePrefix,
} from "./pidns.js";
export {
  type RegFileInfo,
  type RewriteChange,
  type RewritePath,
  rewriteImage,
  rewriteImages,
} from "./rewrite.js";
export {
  CriuError,
  type CriuRun,
  criuDump,
  criuErrorLines,
  criuRestore,
  type DumpOptions,
  type RestoredRoot,
  type RestoreOptions,
  type RunCriuOptions,
  runCriu,
} from "./runner.js";
export { decodeMessage, encodeMessage, warmUpCodec } from "./schema.js";
