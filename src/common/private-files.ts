/**
 * Directories and files LazyFS keeps its state in (the state root, `--cache`, `rewrite --out`),
 * made safe against other users on the host. Running as root, a directory the user names is
 * refused unless it and every directory above it are root-owned and not writable by group or
 * others (a sticky ancestor such as /tmp is fine: nobody can rename root's entries there).
 * Files in them are created with O_CREAT|O_EXCL|O_NOFOLLOW (temporary files of atomic writes
 * included), and a file reopened (a cache resumed) must be a regular file of ours, not linked
 * elsewhere and not readable by others: a planted symlink or file is never followed or reused.
 */
import { closeSync, constants, fstatSync, openSync, type Stats, unlinkSync } from "node:fs";
import { copyFile, type FileHandle, lstat, open, realpath, rename, unlink } from "node:fs/promises";
import { resolve } from "node:path";
import { errnoCode, errorMessage, UserError } from "./errors.js";

// libuv opens every file with O_CLOEXEC.
const { O_CREAT, O_EXCL, O_NOFOLLOW, O_RDWR, O_WRONLY } = constants;
const S_ISVTX = 0o1000;
const euid = () => process.geteuid?.() ?? 0;

function problemOf(st: Stats, last: boolean): string | undefined {
  if (st.isSymbolicLink()) return st.uid === 0 ? undefined : `is a symlink owned by uid ${st.uid}`;
  if (!st.isDirectory()) return "is not a directory";
  if (st.uid !== 0) return `is owned by uid ${st.uid}, not root`;
  const sticky = (st.mode & S_ISVTX) !== 0;
  if (st.mode & 0o022 && (last || !sticky)) {
    return `is writable by ${st.mode & 0o020 ? "its group" : "others"} (mode 0${(st.mode & 0o7777).toString(8)})`;
  }
  return undefined;
}

async function checkChain(path: string): Promise<{ problem?: string; at?: string; link: boolean }> {
  const parts = path.split("/").filter(Boolean);
  let link = false;
  for (let i = 0; i <= parts.length; i++) {
    const at = `/${parts.slice(0, i).join("/")}`;
    let st: Stats;
    try {
      st = await lstat(at);
    } catch (err) {
      if (errnoCode(err) === "ENOENT") return { link }; // created by us, 0700, below a safe one
      return { problem: `cannot be examined (${errorMessage(err)})`, at, link };
    }
    if (st.isSymbolicLink()) link = true;
    const problem = problemOf(st, i === parts.length);
    if (problem) return { problem, at, link };
  }
  return { link };
}

/**
 * Refuses (UserError naming `what`) a state directory another user could control; checks the
 * path as given and, when it passes through symlinks, the real path too. Only as root: an
 * unprivileged user's directories threaten nobody else.
 */
export async function checkStateDir(path: string, what: string): Promise<void> {
  if (euid() !== 0) return;
  const abs = resolve(path);
  const first = await checkChain(abs);
  let verdict = first;
  if (!first.problem && first.link) {
    const real = await realpath(abs).catch(() => undefined);
    if (real) verdict = await checkChain(real);
  }
  if (verdict.problem) {
    throw new UserError(
      `${what} ${path}: ${verdict.at} ${verdict.problem}; a directory LazyFS keeps state in must be root-owned and not writable by group or others (nor any directory above it)`,
    );
  }
}

/** A new file, never an existing one and never through a symlink (O_EXCL|O_NOFOLLOW). */
export function createExclusive(path: string, mode = 0o600): Promise<FileHandle> {
  return open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
}

/**
 * Writes `data` to `path` atomically: a fresh `path.tmp` (a stale or planted one is removed
 * first, never followed), optionally flushed, then renamed over `path` (which replaces a
 * symlink there instead of writing through it).
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  opts: { mode?: number; durable?: boolean } = {},
): Promise<void> {
  const tmp = `${path}.tmp`;
  await unlink(tmp).catch((err) => {
    if (errnoCode(err) !== "ENOENT") throw err;
  });
  const fh = await createExclusive(tmp, opts.mode ?? 0o600);
  try {
    await fh.writeFile(data);
    if (opts.durable) await fh.datasync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

/** Copies `src` to `dst` atomically, like writeFileAtomic (the copy made with COPYFILE_EXCL). */
export async function copyFileAtomic(src: string, dst: string): Promise<void> {
  const tmp = `${dst}.tmp`;
  await unlink(tmp).catch((err) => {
    if (errnoCode(err) !== "ENOENT") throw err;
  });
  await copyFile(src, tmp, constants.COPYFILE_EXCL);
  await rename(tmp, dst);
}

function reusable(st: Stats): string | undefined {
  if (!st.isFile()) return "is not a regular file";
  if (st.uid !== euid()) return `is owned by uid ${st.uid}, not by LazyFS`;
  if (st.nlink !== 1) return `has ${st.nlink} hard links`;
  if (st.mode & 0o077) return `is accessible to others (mode 0${(st.mode & 0o777).toString(8)})`;
  return undefined;
}

function refuse(path: string, why: string): UserError {
  return new UserError(`${path} ${why}; refusing to reuse it (not created by LazyFS)`);
}

/**
 * Opens a private state file read-write (`extra`: O_APPEND, O_TRUNC), creating it exclusively
 * (mode 0600) when absent; an existing one must be our own regular file, mode 0600, with one
 * link. A symlink is never followed.
 */
export function openPrivateSync(path: string, extra = 0): number {
  const flags = O_RDWR | O_NOFOLLOW | extra;
  try {
    return openSync(path, flags | O_CREAT | O_EXCL, 0o600);
  } catch (err) {
    if (errnoCode(err) !== "EEXIST") throw err;
  }
  let fd: number;
  try {
    fd = openSync(path, flags);
  } catch (err) {
    if (errnoCode(err) === "ELOOP") throw refuse(path, "is a symlink");
    throw err;
  }
  const why = reusable(fstatSync(fd));
  if (why) {
    closeSync(fd);
    throw refuse(path, why);
  }
  return fd;
}

/** openPrivateSync as a FileHandle. */
export async function openPrivate(path: string, extra = 0): Promise<FileHandle> {
  const flags = O_RDWR | O_NOFOLLOW | extra;
  try {
    return await open(path, flags | O_CREAT | O_EXCL, 0o600);
  } catch (err) {
    if (errnoCode(err) !== "EEXIST") throw err;
  }
  let fh: FileHandle;
  try {
    fh = await open(path, flags);
  } catch (err) {
    if (errnoCode(err) === "ELOOP") throw refuse(path, "is a symlink");
    throw err;
  }
  const why = reusable(await fh.stat());
  if (why) {
    await fh.close();
    throw refuse(path, why);
  }
  return fh;
}

/** Removes a stale temporary file (never following it), for synchronous atomic writes. */
export function unlinkStaleSync(path: string): void {
  try {
    unlinkSync(path);
  } catch (err) {
    if (errnoCode(err) !== "ENOENT") throw err;
  }
}

/** createExclusive, synchronously: a file descriptor for writing. */
export function createExclusiveSync(path: string, mode = 0o600): number {
  return openSync(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
}
