/**
 * The manifest: what one migration serves. `plan` writes it from a dump and the origin's
 * stats; the daemon builds its tree and engine from it; `status`, `rewrite` and `unmount`
 * read it. Stored as `manifest.json` in the migration's state directory.
 */
import { readFile } from "node:fs/promises";
import { posix } from "node:path";
import { errnoCode, errorMessage, UserError } from "../common/errors.js";
import { writeFileAtomic } from "../common/private-files.js";
import type { FileUse } from "../criu/index.js";
import type { PolicyRule } from "../fetch/index.js";
import type { OriginStat } from "../origin/index.js";
import type { Policy } from "../store/index.js";
import type { ServeOptions, SshOptions } from "./options.js";

export const MANIFEST_VERSION = 1;

/** A file the restored process references. */
export interface ManifestFile {
  /** Path on the origin host, as CRIU recorded it. */
  originPath: string;
  /** Path the process expects on the target (originPath after --map rules). */
  targetPath: string;
  type: "file" | "dir";
  size: number;
  mode: number;
  uid: number;
  gid: number;
  mtimeMs: number;
  /** The origin's inode number, when known: the process is shown the same st_ino. */
  ino?: number;
  /** Status-change time at the dump (with size, mtime and inode: what reads are checked against). */
  ctimeMs?: number;
  /**
   * A reflink clone of the file taken at the dump (`--origin-snapshot`): its bytes are read
   * from there, checked against the clone's own attributes.
   */
  snapshot?: { path: string; size: number; mtimeMs: number; ctimeMs?: number; ino?: number };
  policy: Policy;
  /**
   * Where the restored process finds it: inside the mount (`<mountpoint><targetPath>`) when
   * LazyFS serves it, or `targetPath` itself when the target's own copy is identical.
   */
  restorePath: string;
  served: boolean;
  /** Why it is (not) served, for `inspect`-like output. */
  reason: string;
  uses: FileUse[];
}

/** A directory of the mounted tree (ancestors of served files), with the origin's attributes. */
export interface ManifestDir {
  path: string;
  mode: number;
  uid: number;
  gid: number;
  mtimeMs: number;
}

/**
 * A directory served as a writable copy-on-reference mirror of an origin directory (and its
 * subdirectories): names not in the plan are looked up and listed on the origin on demand,
 * files found there are fetched like planned ones, and every change is local.
 */
export interface ManifestLazyDir {
  /** Where the process sees it (inside the mount, as for ManifestFile.targetPath). */
  targetPath: string;
  /** The origin's directory it mirrors. */
  originPath: string;
  /**
   * Part of the whole-origin view only: its names are looked up and its files fetched when the
   * process references them, never crawled, and not needed for independence.
   */
  onReference?: boolean;
}

export type LazyDir = ManifestLazyDir;

/** What the restored process sees of the origin (`--view`). */
export type View = "whole" | "dirs";

export interface PathMap {
  from: string;
  to: string;
}

export interface Manifest {
  version: number;
  id: string;
  createdMs: number;
  /** ssh://user@host:port */
  origin: string;
  imagesDir: string;
  mountpoint: string;
  cacheDir: string;
  maps: PathMap[];
  /** How the daemon reaches the origin and serves the files. */
  ssh: SshOptions;
  serve: ServeOptions;
  files: ManifestFile[];
  dirs: ManifestDir[];
  /** Lazy directories (none in manifests written before they existed). */
  lazyDirs: ManifestLazyDir[];
  /** The plan's policy rules, for files found later in lazy directories (first match wins). */
  policies: PolicyRule[];
  /**
   * The target paths where the restored process sees LazyFS (bind mounts of the served tree
   * in its own mount namespace): the lazy directories that are not inside another one.
   */
  binds: string[];
  /**
   * `whole`: the process sees the origin's whole tree (its top-level directories are `binds`)
   * except `hostPaths`; `dirs` (and manifests written before views): the directories of its
   * files only. Absent means `dirs`.
   */
  view?: View;
  /** Target paths bound back over the whole view in the process's namespace (the host's own). */
  hostPaths?: string[];
  /**
   * The bind roots of the process's data (what `binds` is in the `dirs` view): where detach
   * puts the plain files back, when the view is whole.
   */
  dataBinds?: string[];
  /** Mount points LazyFS created on the target for `binds`; removed when it stops. */
  createdDirs: string[];
  /** Directories of snapshot clones on the origin; removed when the origin is released. */
  snapshotDirs?: string[];
  /**
   * A chained migration: the origin runs the process on LazyFS itself (A -> origin -> here);
   * blocks the origin never fetched come straight from the first origin (chain/origin.ts).
   */
  chain?: ChainSource;
}

export async function writeManifest(path: string, m: Manifest): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(m, null, 2)}\n`);
}

export async function readManifest(path: string): Promise<Manifest> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if (errnoCode(err) === "ENOENT") throw new UserError(`${path}: no such manifest`);
    throw new UserError(`${path}: ${errorMessage(err)}`);
  }
  let m: Manifest;
  try {
    m = JSON.parse(text) as Manifest;
  } catch (err) {
    throw new UserError(`${path}: not a LazyFS manifest (${errorMessage(err)})`);
  }
  if (
    typeof m !== "object" ||
    m === null ||
    m.version !== MANIFEST_VERSION ||
    !Array.isArray(m.files)
  ) {
    throw new UserError(`${path}: not a LazyFS manifest of version ${MANIFEST_VERSION}`);
  }
  // Manifests written before lazy directories and namespaces.
  m.lazyDirs ??= [];
  m.policies ??= [];
  m.binds ??= [];
  m.createdDirs ??= [];
  return m;
}

/** Applies the longest matching prefix rule. */
export function mapPath(path: string, maps: readonly PathMap[]): string {
  let best: PathMap | undefined;
  for (const m of maps) {
    const hit = m.from === "/" || path === m.from || path.startsWith(`${m.from}/`);
    if (hit && (!best || m.from.length > best.from.length)) best = m;
  }
  if (!best) return path;
  const rest = best.from === "/" ? path.slice(1) : path.slice(best.from.length + 1);
  return rest ? posix.join(best.to, rest) : best.to;
}

/** A clone of a referenced file, taken at the dump. */
export interface Snapshot {
  /** The clone's path on the origin. */
  path: string;
  /** The clone's own attributes (what reads from it are checked against). */
  stat: OriginStat;
}

/** What a chained migration knows of the migration it continues (recorded in its manifest). */
export interface ChainSource {
  /** The first origin (A), as B's migration reaches it. */
  firstOrigin: string;
  /** B's migration: id, state directory, mount point, bind roots, block store. */
  id: string;
  stateDir: string;
  mountpoint: string;
  binds: string[];
  cacheDir: string;
  blockSize: number;
}
