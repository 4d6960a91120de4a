/**
 * Migration: plan (images + target + policies -> manifest), mount (the daemon), rewrite,
 * restore, migrate, status and unmount.
 */

export { checkDestination, openOrigin } from "./connect.js";
export { type ControlRequest, callControl, callDaemon, stopDaemon } from "./control.js";
export { type DaemonStatus, type OriginState, runDaemon } from "./daemon.js";
export {
  type DetachRequest,
  type DetachResult,
  type DetachTimeline,
  detachMigration,
  type RemoteChoice,
} from "./detach.js";
export { type DetachedRecord, detachedAlive, endDetached, readDetached } from "./detached.js";
export { CACHE_ENTRIES, checkMountpoint, discardMigration, removeCacheFiles } from "./discard.js";
export { parseSnapshotMode, type SnapshotMode } from "./dump-session.js";
export {
  type EventFields,
  type EventType,
  type MigrationEvent,
  readEvents,
  recordEvent,
} from "./events.js";
export { findHolders, type Holder } from "./holders.js";
export {
  accessLogOf,
  followAccessLog,
  type LogFilter,
  readAccessLog,
} from "./log.js";
export {
  type Manifest,
  type ManifestDir,
  type ManifestFile,
  type PathMap,
  readManifest,
} from "./manifest.js";
export {
  type MigrationSample,
  metricsRegistry,
  parseListen,
  sampleMigrations,
  serveMetrics,
} from "./metrics.js";
export {
  type MigrateRequest,
  type MigrateResult,
  migrateProcess,
  type Timeline,
} from "./migrate.js";
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
export type { OriginFigures } from "./origin-figures.js";
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
