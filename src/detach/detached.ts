/**
 * A detached migration: its process runs on plain files in `root`, in a mount namespace of
 * its own; no LazyFS is left. `<state>/<id>/detached.json` records it, so that `status` shows
 * it and `unmount` neither removes the files nor the mount points the process still uses.
 */
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { UserError } from "../common/errors.js";
// The files themselves, not migration/index.js: status reads this and loads only what it uses.
import { bindsOfOthers, mountNamespaceOf, removeMountPoints } from "../migration/namespace.js";
import { migrationPaths } from "../migration/state.js";

/** What `<state>/<id>/detached.json` records: the migration lives on without LazyFS. */
export interface DetachedRecord {
  /** The process's host pid. */
  pid: number;
  /** In a pid namespace of its own: its pid there, and the namespace init's host pid. */
  nsPid?: number;
  initPid?: number;
  mountNs: string | null;
  root: string;
  binds: string[];
  /** Mount points LazyFS created on the target; `unmount` removes them once the process is gone. */
  createdDirs: string[];
  detachedMs: number;
  timeline: DetachTimeline;
}

export function detachedPath(id: string): string {
  return join(migrationPaths(id).dir, "detached.json");
}

export async function readDetached(id: string): Promise<DetachedRecord | undefined> {
  try {
    return JSON.parse(await readFile(detachedPath(id), "utf8")) as DetachedRecord;
  } catch {
    return undefined;
  }
}

/** Whether the detached process still runs (same pid, same mount namespace). */
export async function detachedAlive(r: DetachedRecord): Promise<boolean> {
  return r.mountNs !== null && (await mountNamespaceOf(r.pid)) === r.mountNs;
}

/**
 * Ends the record of a detached migration whose process is gone: the mount points LazyFS
 * created go, and with `purge` the state directory (the plain files in it too). While the
 * process runs, nothing is removed: its files and mount points are in use.
 */
export async function endDetached(
  id: string,
  purge: boolean,
): Promise<{ removedDirs: number; purged: boolean }> {
  const r = await readDetached(id);
  if (!r) throw new UserError(`migration ${id} is not detached`);
  if (await detachedAlive(r)) {
    throw new UserError(
      `migration ${id} is detached: pid ${r.pid} runs on its plain files in ${r.root}; there is nothing to unmount, and they stay while it runs`,
    );
  }
  await removeMountPoints(r.createdDirs, await bindsOfOthers(id));
  if (purge) await rm(migrationPaths(id).dir, { recursive: true, force: true });
  return { removedDirs: r.createdDirs.length, purged: purge };
}

export interface DetachTimeline {
  /** Waiting for independence (`--wait`). */
  waitMs: number;
  /** Dump start to the process running on its plain files: the time it is stopped. */
  freezeMs: number;
  dumpMs: number;
  /** Flushing the mount, snapshotting the tree and putting the files in place. */
  materializeMs: number;
  criuRestoreMs: number;
  /** Stopping the daemon and unmounting (after the freeze). */
  stopDaemonMs: number;
  /** Removing the cache's names, the images (after the freeze). */
  cleanupMs: number;
}
