/**
 * Leaving nothing behind: a command that fails removes the state it created (the migration's
 * state directory, what it put into a custom `--cache`), `unmount --purge` removes a custom
 * cache's LazyFS files too, and a mount point that is not a directory is refused before
 * anything is created.
 */
import { lstat, readdir, rm, rmdir } from "node:fs/promises";
import { dirname, relative } from "node:path";
import { errnoCode, errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { migrationPaths } from "./state.js";

const log = logger("discard");

/**
 * What LazyFS creates in a cache directory (store/ and lazy/: block store, tree journal) and
 * the temporary files of their atomic writes. Nothing else in a user's `--cache` is touched.
 */
export const CACHE_ENTRIES = [
  "files",
  "store.json",
  "store.json.tmp",
  "tree.json",
  "tree.json.tmp",
  "tree.log",
];

/** `--mountpoint DIR`: a directory or not there yet (then created); anything else is refused. */
export async function checkMountpoint(mountpoint: string): Promise<void> {
  try {
    const st = await lstat(mountpoint);
    if (!st.isDirectory()) {
      throw new UserError(
        `--mountpoint ${mountpoint}: ${st.isSymbolicLink() ? "a symlink" : "a file"}, not a directory`,
      );
    }
  } catch (err) {
    if (err instanceof UserError) throw err;
    const code = errnoCode(err);
    if (code === "ENOENT") return;
    if (code === "ENOTDIR") {
      throw new UserError(`--mountpoint ${mountpoint}: ${dirname(mountpoint)} is not a directory`);
    }
    throw new UserError(`--mountpoint ${mountpoint}: ${errorMessage(err)}`);
  }
}

/** Whether `path` is `dir` or inside it. */
function inside(path: string, dir: string): boolean {
  const r = relative(dir, path);
  return r === "" || (!r.startsWith("..") && !r.startsWith("/"));
}

/** Removes LazyFS's own entries from a cache directory, and the directory if then empty. */
export async function removeCacheFiles(cacheDir: string): Promise<void> {
  for (const name of CACHE_ENTRIES) {
    await rm(`${cacheDir}/${name}`, { recursive: true, force: true });
  }
  const left = await readdir(cacheDir).catch(() => undefined);
  if (left && left.length === 0) await rmdir(cacheDir).catch(() => {});
}

/**
 * Removes what a migration created on this host: its state directory and, for a cache outside
 * it (`--cache`), LazyFS's files there. Errors are logged, not thrown: this runs on the way
 * out of a failure whose own error is the one to report.
 */
export async function discardMigration(id: string, cacheDir?: string): Promise<void> {
  const paths = migrationPaths(id);
  try {
    if (cacheDir && !inside(cacheDir, paths.dir)) await removeCacheFiles(cacheDir);
    await rm(paths.dir, { recursive: true, force: true });
  } catch (err) {
    log.warn("could not remove the migration's state", { id, error: errorMessage(err) });
  }
}
