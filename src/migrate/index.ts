/**
 * Migration: plan (images + target + policies -> manifest), mount (the daemon), rewrite,
 * restore, migrate, status and unmount.
 */

export { type ControlRequest, callControl } from "./control.js";
export { type DaemonStatus, type OriginState, runDaemon } from "./daemon.js";
export {
  type DetachRequest,
  type DetachResult,
  type DetachTimeline,
  detachMigration,
  type RemoteChoice,
} from "./detach.js";
export { type DetachedRecord, detachedAlive, endDetached, readDetached } from "./detached.js";
export { findHolders, type Holder } from "./holders.js";
export {
  type Manifest,
  type ManifestDir,
  type ManifestFile,
  type PathMap,
  readManifest,
} from "./manifest.js";
export {
  type MigrateRequest,
  type MigrateResult,
  migrateProcess,
  type Timeline,
} from "./migrate.js";
export {
  parseBlockSize,
  parsePrefetch,
  parseRate,
  parseScrub,
  parseSize,
  type ServeOptions,
  type SshOptions,
} from "./options.js";
export { mapPath, parseMaps, parsePolicyRules, planMigration } from "./plan.js";
export {
  prepare,
  type RestoreRequest,
  type RestoreResult,
  restoreLazily,
  rewriteForMount,
  startDaemon,
} from "./restore.js";
export { listMigrations, migrationPaths, stateRoot } from "./state.js";
export { formatOriginUrl, parseOriginUrl } from "./url.js";
