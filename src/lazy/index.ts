/**
 * The LazyFS file system: placeholders from a manifest and lazy directories mirrored from the
 * origin, data through the engine, served by fuse/. Build a `LazyFileSystem`, then
 * `mountLazyFs` mounts it; the returned handle unmounts.
 */
import { mkdir, rm } from "node:fs/promises";
import { errnoCode, errorMessage, UserError } from "../common/errors.js";
import { mount } from "../fuse/index.js";
import type { LazyFileSystem } from "./filesystem.js";

export {
  AccessLog,
  type AccessLogFigures,
  type AccessLogOptions,
  type AccessRecord,
} from "./access-log.js";
export { LazyFileSystem, type LazyOptions } from "./filesystem.js";
export { type SourceReport, withAccessLog } from "./logged-fs.js";
export { type Node, ROOT_INO, type Timespec } from "./nodes.js";
export { Tree, type TreeDir, type TreeFile, type TreeLazyDir, type TreeSpec } from "./tree.js";

export interface LazyMount {
  mountpoint: string;
  fileSystem: LazyFileSystem;
  unmount(): Promise<void>;
  /** Resolves when the kernel ends the session (unmounted from outside, or aborted). */
  closed: Promise<void>;
}

/**
 * `mkdir -p` that returns the first directory it created. Not `mkdir({ recursive: true })`:
 * Node's loops forever on a path under /proc (ENOENT for a parent that exists).
 */
async function makeDirs(path: string): Promise<string | undefined> {
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

export async function mountLazyFs(
  spec: { mountpoint: string; id?: string },
  fileSystem: LazyFileSystem,
): Promise<LazyMount> {
  let created: string | undefined;
  try {
    created = await makeDirs(spec.mountpoint);
  } catch (err) {
    throw new UserError(`mount point ${spec.mountpoint}: ${errorMessage(err)}`);
  }
  const mounting = mount(spec.mountpoint, fileSystem, {
    subtype: "lazyfs",
    fsName: spec.id ? `lazyfs-${spec.id}` : "lazyfs",
    allowOther: true,
    defaultPermissions: true,
    // No kernel readahead: the engine reads ahead itself for sequential readers, and a sparse
    // reader then moves only the blocks it touches.
    readaheadKb: 0,
  });
  // A mount that fails leaves no directory it created.
  const m = await mounting.catch(async (err) => {
    if (created) await rm(created, { recursive: true }).catch(() => {});
    throw err;
  });
  return {
    mountpoint: spec.mountpoint,
    fileSystem,
    unmount: async () => {
      await m.unmount();
      fileSystem.destroy();
    },
    closed: m.closed,
  };
}
