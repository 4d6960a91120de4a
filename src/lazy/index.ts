/**
 * The LazyFS file system: placeholders from a manifest and lazy directories mirrored from the
 * origin, data through the engine, served by fuse/. Build a `LazyFileSystem`, then
 * `mountLazyFs` mounts it; the returned handle unmounts.
 */
import { mkdir, rm } from "node:fs/promises";
import { errnoCode, errorMessage, UserError } from "../common/errors.js";
import {
  type Handover,
  type Mount,
  type MountOptions,
  mount,
  type Session,
  serveInherited,
} from "../fuse/index.js";
import type { LazyFileSystem } from "./filesystem.js";

export {
  AccessLog,
  type AccessLogFigures,
  type AccessLogOptions,
  type AccessRecord,
} from "./access-log.js";
export { LazyFileSystem, type LazyOptions } from "./filesystem.js";
export { withAccessLog } from "./logged-fs.js";
export type { SourceReport } from "./nodes.js";
export { type Node, ROOT_INO, type Timespec } from "./nodes.js";
export type { LocalTwin } from "./resolve.js";
export { Tree, type TreeDir, type TreeFile, type TreeLazyDir, type TreeSpec } from "./tree.js";
export {
  JOURNAL_FILES,
  snapshotTree,
  type TreeEntry,
  treeFromJournal,
} from "./tree-snapshot.js";

export interface LazyMount {
  mountpoint: string;
  fileSystem: LazyFileSystem;
  unmount(): Promise<void>;
  /** Resolves when the kernel ends the session (unmounted from outside, or aborted). */
  closed: Promise<void>;
  /** The FUSE session (passthrough status, request counts). */
  session: Session;
}

/**
 * `mkdir -p` that returns the first directory it created. Not `mkdir({ recursive: true })`:
 * Node's loops forever on a path under /proc (ENOENT for a parent that exists).
 */
export async function makeDirs(path: string): Promise<string | undefined> {
  let first: string | undefined;
  let at = "";
  for (const part of path.split("/").filter(Boolean)) {
    at += `/${part}`;
    try {
      await mkdir(at);
      first ??= at;
    } catch (err) {
      if (errnoCode(err) !== "EEXIST") throw err;
    }
  }
  return first;
}

/**
 * Runs `mounting` on `mountpoint`, made first if missing; a mount that fails leaves no
 * directory it created.
 */
export async function withMountPoint<T>(
  mountpoint: string,
  mounting: () => Promise<T>,
): Promise<T> {
  let created: string | undefined;
  try {
    created = await makeDirs(mountpoint);
  } catch (err) {
    throw new UserError(`mount point ${mountpoint}: ${errorMessage(err)}`);
  }
  try {
    return await mounting();
  } catch (err) {
    if (created) await rm(created, { recursive: true }).catch(() => {});
    throw err;
  }
}

/** How a LazyFS tree is mounted (also by a supervisor that mounts it for a served child). */
export function lazyMountOptions(spec: { id?: string }): MountOptions {
  return {
    subtype: "lazyfs",
    fsName: spec.id ? `lazyfs-${spec.id}` : "lazyfs",
    allowOther: true,
    defaultPermissions: true,
    // No kernel readahead: the engine reads ahead itself for sequential readers, and a sparse
    // reader then moves only the blocks it touches.
    readaheadKb: 0,
    // Fully local files are served by the kernel from their data files (Linux >= 6.9).
    passthrough: true,
  };
}

function lazyMount(spec: { mountpoint: string }, fileSystem: LazyFileSystem, m: Mount): LazyMount {
  return {
    mountpoint: spec.mountpoint,
    fileSystem,
    unmount: async () => {
      await m.unmount();
      fileSystem.destroy();
    },
    closed: m.closed,
    session: m.session,
  };
}

export async function mountLazyFs(
  spec: { mountpoint: string; id?: string },
  fileSystem: LazyFileSystem,
): Promise<LazyMount> {
  const m = await withMountPoint(spec.mountpoint, () =>
    mount(spec.mountpoint, fileSystem, lazyMountOptions(spec)),
  );
  return lazyMount(spec, fileSystem, m);
}

/**
 * Serves `fileSystem` on a connection handed over by a supervisor (fuse/handover.ts): the
 * supervisor mounted it; this server answers INIT or, after a predecessor died, resumes it.
 */
export async function serveLazyFs(
  spec: { mountpoint: string; id?: string },
  fileSystem: LazyFileSystem,
  handover: Handover,
  onSupervisorGone?: Parameters<typeof serveInherited>[3],
): Promise<LazyMount> {
  const m = await serveInherited(handover, fileSystem, lazyMountOptions(spec), onSupervisorGone);
  return lazyMount(spec, fileSystem, m);
}
