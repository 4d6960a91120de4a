/**
 * The LazyFS file system: placeholders from a manifest and lazy directories mirrored from the
 * origin, data through the engine, served by fuse/. Build a `LazyFileSystem`, then
 * `mountLazyFs` mounts it; the returned handle unmounts.
 */
import { mkdir } from "node:fs/promises";
import { mount, type Session } from "../fuse/index.js";
import type { LazyFileSystem } from "./filesystem.js";

export { LazyFileSystem, type LazyOptions } from "./filesystem.js";
export { type Node, ROOT_INO, type Timespec } from "./nodes.js";
export { Tree, type TreeDir, type TreeFile, type TreeLazyDir, type TreeSpec } from "./tree.js";

export interface LazyMount {
  mountpoint: string;
  fileSystem: LazyFileSystem;
  unmount(): Promise<void>;
  /** Resolves when the kernel ends the session (unmounted from outside, or aborted). */
  closed: Promise<void>;
  /** The FUSE session (passthrough status, request counts). */
  session: Session;
}

export async function mountLazyFs(
  spec: { mountpoint: string; id?: string },
  fileSystem: LazyFileSystem,
): Promise<LazyMount> {
  await mkdir(spec.mountpoint, { recursive: true });
  const m = await mount(spec.mountpoint, fileSystem, {
    subtype: "lazyfs",
    fsName: spec.id ? `lazyfs-${spec.id}` : "lazyfs",
    allowOther: true,
    defaultPermissions: true,
    // No kernel readahead: the engine reads ahead itself for sequential readers, and a sparse
    // reader then moves only the blocks it touches.
    readaheadKb: 0,
    // Fully local files are served by the kernel from their data files (Linux >= 6.9).
    passthrough: true,
  });
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
