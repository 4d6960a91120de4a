/**
 * Turns a LazyFS tree (a snapshot of its journal, lazy/tree-snapshot.ts) into plain files under a
 * directory of the target's own file system: `<root><path>` for every name the restored
 * process sees below the mount. A regular file's content is the block store's data file
 * itself, hard-linked into place (no copy; the cache's name goes when the daemon's cache is
 * removed, so this is a rename done in two steps that can be undone). Where the root is on
 * another file system the data file is cloned (FICLONE) or copied by the kernel
 * (copy_file_range/sendfile), never through user space. Blocks the store does not hold
 * (a `local`-policy file served from the target's copy, a `scrub` file) and the live content
 * of `remote` files are read through the mount, which the daemon still serves.
 */
import { spawnSync } from "node:child_process";
import { constants } from "node:fs";
import {
  chmod,
  copyFile,
  lchown,
  link,
  lstat,
  lutimes,
  mkdir,
  open,
  readFile,
  symlink,
  truncate,
  utimes,
} from "node:fs/promises";
import { errnoCode, errorMessage, UserError } from "../common/errors.js";
import type { Node, Timespec, TreeEntry } from "../lazy/index.js";
import { ABSENT, parseBlockStates, storeFilePaths } from "../store/index.js";

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFIFO = 0o010000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;

export interface MaterializeRequest {
  entries: readonly TreeEntry[];
  /** Where the daemon serves the tree (still mounted: remote files and missing blocks). */
  mountpoint: string;
  cacheDir: string;
  blockSize: number;
  /** The directory to build the plain tree in (created; mode 0700). */
  root: string;
}

export interface MaterializeResult {
  files: number;
  /** Data files hard-linked into place (no bytes moved). */
  linked: number;
  /** Data files cloned or copied by the kernel (the root is on another file system). */
  cloned: number;
  /** Bytes read through the mount: remote files' live content, blocks the store lacked. */
  bytesThroughMount: number;
  dirs: number;
  symlinks: number;
  /** Hard links between the process's files, kept as hard links. */
  hardLinks: number;
  /** Names that cannot be plain files (sockets), left out. */
  skipped: string[];
}

function secs(t: Timespec): number {
  return t.sec + t.nsec / 1e9;
}

function inside(root: string, path: string): string {
  return path === "/" ? root : `${root}${path}`;
}

/** Copies the blocks a data file lacks from the same file as the mount serves it. */
async function fillAbsent(
  dst: string,
  servedPath: string,
  statePath: string,
  blockSize: number,
): Promise<number> {
  const parsed = parseBlockStates(await readFile(statePath), blockSize);
  if (!parsed) throw new UserError(`${statePath}: not a LazyFS block-state file`);
  const absent: number[] = [];
  parsed.states.forEach((s, i) => {
    if (s === ABSENT) absent.push(i);
  });
  if (absent.length === 0) return 0;
  let moved = 0;
  const src = await open(servedPath, "r");
  const out = await open(dst, "r+");
  try {
    const buf = Buffer.allocUnsafe(blockSize);
    for (const i of absent) {
      const { bytesRead } = await src.read(buf, 0, blockSize, i * blockSize);
      if (bytesRead > 0) await out.write(buf, 0, bytesRead, i * blockSize);
      moved += bytesRead;
    }
  } finally {
    await src.close();
    await out.close();
  }
  return moved;
}

/** Links (same file system) or kernel-copies `src` to `dst`; true if linked. */
async function placeData(src: string, dst: string): Promise<boolean> {
  try {
    await link(src, dst);
    return true;
  } catch (err) {
    if (errnoCode(err) !== "EXDEV") throw err;
  }
  await copyFile(src, dst, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE);
  return false;
}

function mknodArgs(n: Node): string[] | undefined {
  const type = n.mode & S_IFMT;
  const rdev = n.rdev ?? 0;
  const major = String(((rdev >> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff));
  const minor = String((rdev & 0xff) | ((rdev >> 12) & ~0xff));
  if (type === S_IFIFO) return ["p"];
  if (type === S_IFCHR) return ["c", major, minor];
  if (type === S_IFBLK) return ["b", major, minor];
  return undefined;
}

/** Builds the plain tree; every failure names the path. */
export async function materializeTree(req: MaterializeRequest): Promise<MaterializeResult> {
  const r: MaterializeResult = {
    files: 0,
    linked: 0,
    cloned: 0,
    bytesThroughMount: 0,
    dirs: 0,
    symlinks: 0,
    hardLinks: 0,
    skipped: [],
  };
  await mkdir(req.root, { recursive: true, mode: 0o700 });
  const placed = new Map<number, string>();
  const dirs: TreeEntry[] = [];
  for (const e of req.entries) {
    const dst = inside(req.root, e.path);
    const served = inside(req.mountpoint, e.path);
    const n = e.node;
    const type = n.mode & S_IFMT;
    try {
      const first = placed.get(n.ino);
      if (first !== undefined && type !== S_IFDIR) {
        await link(first, dst);
        r.hardLinks++;
        continue;
      }
      if (type === S_IFDIR) {
        if (e.path !== "/") await mkdir(dst, { mode: 0o700 });
        dirs.push(e);
        r.dirs++;
        continue;
      }
      if (type === S_IFLNK) {
        if (n.target === undefined) throw new UserError("its target is still only on the origin");
        await symlink(n.target, dst);
        await lchown(dst, n.uid, n.gid);
        await lutimes(dst, secs(n.atime), secs(n.mtime));
        r.symlinks++;
        placed.set(n.ino, dst);
        continue;
      }
      if (type === S_IFREG) {
        if (n.fileId === undefined) throw new UserError("its content is still only on the origin");
        // The mount's attributes are the freshest: the kernel's view of sizes and times.
        const st = await lstat(served);
        if (n.policy === "remote") {
          await copyFile(served, dst, constants.COPYFILE_EXCL);
          r.bytesThroughMount += st.size;
        } else {
          const store = storeFilePaths(req.cacheDir, n.fileId);
          if (await placeData(store.data, dst)) r.linked++;
          else r.cloned++;
          await truncate(dst, st.size);
          r.bytesThroughMount += await fillAbsent(dst, served, store.state, req.blockSize);
        }
        await lchown(dst, st.uid, st.gid);
        await chmod(dst, st.mode & 0o7777);
        await utimes(dst, st.atime, st.mtime);
        r.files++;
        placed.set(n.ino, dst);
        continue;
      }
      const args = mknodArgs(n);
      if (!args) {
        r.skipped.push(e.path);
        continue;
      }
      const made = spawnSync("mknod", ["-m", (n.mode & 0o7777).toString(8), dst, ...args], {
        stdio: ["ignore", "ignore", "pipe"],
      });
      if (made.status !== 0) throw new Error(`mknod: ${made.stderr.toString().trim()}`);
      await lchown(dst, n.uid, n.gid);
      await utimes(dst, secs(n.atime), secs(n.mtime));
      placed.set(n.ino, dst);
    } catch (err) {
      throw new UserError(`cannot make ${e.path} a local file at ${dst}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
  }
  // Directories last, deepest first: creating their entries changed their times.
  for (const e of dirs.reverse()) {
    if (e.path === "/") continue;
    const dst = inside(req.root, e.path);
    const n = e.node;
    try {
      await lchown(dst, n.uid, n.gid);
      await chmod(dst, n.mode & 0o7777);
      await utimes(dst, secs(n.atime), secs(n.mtime));
    } catch (err) {
      throw new UserError(`cannot set the attributes of ${dst}: ${errorMessage(err)}`);
    }
  }
  return r;
}

/** The regular files of a tree whose content follows the origin (policy remote). */
export function remoteFiles(entries: readonly TreeEntry[]): string[] {
  return entries
    .filter((e) => (e.node.mode & S_IFMT) === S_IFREG && e.node.policy === "remote")
    .map((e) => e.path);
}

/** Names of the tree still only on the origin (a lazy directory not listed, a file not opened). */
export function onlyOnOrigin(entries: readonly TreeEntry[]): string[] {
  return entries
    .filter((e) => {
      const n = e.node;
      if (n.originPath === undefined) return false;
      const type = n.mode & S_IFMT;
      if (type === S_IFDIR) return !n.listed || !!n.unstatted;
      if (type === S_IFREG) return n.fileId === undefined;
      return type === S_IFLNK && n.target === undefined;
    })
    .map((e) => e.path);
}
