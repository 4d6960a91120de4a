/**
 * Where a migration keeps its things on the target. One directory per migration under the
 * state root (default /var/lib/lazyfs, or $LAZYFS_STATE_DIR):
 *
 *   <root>/<id>/manifest.json   what is served (plan)
 *   <root>/<id>/images/         the dump as pulled from the origin
 *   <root>/<id>/images.lazy/    the rewritten copy CRIU restores from
 *   <root>/<id>/cache/          the block store (mode 0700)
 *   <root>/<id>/daemon.log      the daemon's stderr
 *   <root>/<id>/control.sock    the daemon's control socket (status, unmount)
 *   <root>/<id>/supervisor.pid  the supervisor's pid (owns the mount, restarts the daemon)
 *   <root>/<id>/restored.json   pids restored by CRIU, timeline
 *   <root>/<id>/events.jsonl    the migration's life as events (migration/events.ts)
 *
 * The default mount point is /lazyfs/<id>, like the paper's /lazyfs.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { errnoCode } from "../common/errors.js";
import { checkStateDir } from "../common/private-files.js";

export const STATE_ENV = "LAZYFS_STATE_DIR";
export const DEFAULT_STATE_ROOT = "/var/lib/lazyfs";
export const DEFAULT_MOUNT_ROOT = "/lazyfs";

export function stateRoot(): string {
  return process.env[STATE_ENV] || DEFAULT_STATE_ROOT;
}

export function newMigrationId(): string {
  return `m${randomBytes(3).toString("hex")}`;
}

/**
 * Whether a name under the state root is a migration's (newMigrationId's shape): the root
 * also holds other things of LazyFS's (`bundles/`, the CRIU bundle cache) that must never be
 * listed, stopped or purged as migrations.
 */
export function isMigrationId(name: string): boolean {
  return /^m[0-9a-f]{6}$/.test(name);
}

export interface MigrationPaths {
  id: string;
  dir: string;
  manifest: string;
  images: string;
  lazyImages: string;
  cache: string;
  log: string;
  socket: string;
  supervisorPid: string;
  /** What the supervisor is doing (daemon/supervisor.ts), for a status without a daemon. */
  supervisorState: string;
  /** The FUSE connection's passthrough table, for a restarted server (fuse/supervisor.ts). */
  passthroughState: string;
  restored: string;
  events: string;
  defaultMountpoint: string;
}

export function migrationPaths(id: string, root = stateRoot()): MigrationPaths {
  const dir = join(root, id);
  return {
    id,
    dir,
    manifest: join(dir, "manifest.json"),
    images: join(dir, "images"),
    lazyImages: join(dir, "images.lazy"),
    cache: join(dir, "cache"),
    log: join(dir, "daemon.log"),
    socket: join(dir, "control.sock"),
    supervisorPid: join(dir, "supervisor.pid"),
    supervisorState: join(dir, "supervisor.json"),
    passthroughState: join(dir, "passthrough.json"),
    restored: join(dir, "restored.json"),
    events: join(dir, "events.jsonl"),
    defaultMountpoint: join(DEFAULT_MOUNT_ROOT, id),
  };
}

/**
 * Creates the migration's state directory (0700) under a state root that must be safe (root
 * owned, not group/world-writable: see common/private-files.ts).
 */
export async function makeStateDir(paths: MigrationPaths): Promise<void> {
  await checkStateDir(dirname(paths.dir), `state directory (${STATE_ENV})`);
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
}

/** Ids of every migration with a state directory, sorted by name. */
export async function listMigrations(root = stateRoot()): Promise<string[]> {
  try {
    const names = await readdir(root, { withFileTypes: true });
    return names
      .filter((d) => d.isDirectory() && isMigrationId(d.name))
      .map((d) => d.name)
      .sort();
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return [];
    throw err;
  }
}

/** What restored.json records of the restored tree. */
export interface RestoredRecord {
  /** The restored root's pid on this host. */
  pid?: number;
  /** Restored into a new pid namespace: the root's pid there, and the namespace init's host pid. */
  nsPid?: number;
  initPid?: number;
  /** The mount namespace the restored tree lives in. */
  mountNs?: string;
}

export async function readRestored(file: string): Promise<RestoredRecord> {
  try {
    return JSON.parse(await readFile(file, "utf8")) as RestoredRecord;
  } catch {
    return {};
  }
}
