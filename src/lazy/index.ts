/**
 * The LazyFS file system: placeholders from a manifest, data through the engine, served by
 * fuse/. `mountLazyFs` mounts it; the returned handle unmounts.
 */
import { mkdir } from "node:fs/promises";
import type { Engine } from "../fetch/index.js";
import { mount } from "../fuse/index.js";
import { LazyFileSystem } from "./filesystem.js";
import type { TreeDir, TreeFile } from "./tree.js";

export { LazyFileSystem } from "./filesystem.js";
export { type Node, ROOT_INO, Tree, type TreeDir, type TreeFile } from "./tree.js";

export interface LazyMount {
  mountpoint: string;
  fileSystem: LazyFileSystem;
  unmount(): Promise<void>;
  /** Resolves when the kernel ends the session (unmounted from outside, or aborted). */
  closed: Promise<void>;
}

export async function mountLazyFs(
  spec: { mountpoint: string; id?: string; files: readonly TreeFile[]; dirs: readonly TreeDir[] },
  engine: Engine,
): Promise<LazyMount> {
  const fileSystem = new LazyFileSystem(spec, engine);
  await mkdir(spec.mountpoint, { recursive: true });
  const m = await mount(spec.mountpoint, fileSystem, {
    subtype: "lazyfs",
    fsName: spec.id ? `lazyfs-${spec.id}` : "lazyfs",
    allowOther: true,
    defaultPermissions: true,
    // No kernel readahead: the engine reads ahead itself for sequential readers, and a sparse
    // reader then moves only the blocks it touches.
    readaheadKb: 0,
  });
  return {
    mountpoint: spec.mountpoint,
    fileSystem,
    unmount: () => m.unmount(),
    closed: m.closed,
  };
}
