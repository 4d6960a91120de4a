/**
 * One migration as every command sees it on the target: its state directory and its list
 * (state.ts), the manifest that says what it serves (manifest.ts), its options, its events,
 * the process's own mount namespace (namespace.ts), the origin it names (connect.ts, url.ts),
 * the pids its restore needs, and leaving nothing behind (discard.ts).
 * May import: lazy/ and below (fetch, origin, ssh, store, criu, common). Never migrate/,
 * daemon/, detach/, chain/ or origin-host/.
 */
export { checkDestination, openOrigin, sftpOptions } from "./connect.js";
export { checkMountpoint, discardMigration } from "./discard.js";
export {
  type EventFields,
  type EventType,
  type MigrationEvent,
  readEvents,
  recordEvent,
} from "./events.js";
export {
  type ChainSource,
  type LazyDir,
  MANIFEST_VERSION,
  type Manifest,
  type ManifestDir,
  type ManifestFile,
  mapPath,
  type PathMap,
  readManifest,
  type Snapshot,
  type View,
  writeManifest,
} from "./manifest.js";
export {
  bindNamespacePrefix,
  bindsOfOthers,
  mountNamespaceOf,
  namespacePrefix,
  prepareMountPoints,
  probeView,
  reattachView,
  removeMountPoints,
  rewriteForNamespace,
} from "./namespace.js";
export {
  parseBlockSize,
  parseDuration,
  parsePrefetch,
  parseRate,
  parseScrub,
  parseSize,
  type ServeOptions,
  type SshOptions,
} from "./options.js";
export { choosePidNamespace, type PidNamespaceChoice, waitPidsFree } from "./pids.js";
export {
  listMigrations,
  type MigrationPaths,
  makeStateDir,
  migrationPaths,
  newMigrationId,
  readRestored,
} from "./state.js";
export { parseOriginUrl } from "./url.js";
export { DEFAULT_HOST_PATHS, hostPathsFor, parseView } from "./view.js";
