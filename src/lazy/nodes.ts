/**
 * What a LazyFS inode is. A node is plain data (it is journaled as JSON, see journal.ts):
 * attributes to the nanosecond, and where its content or names come from.
 *
 * - a regular file is served by the engine under `fileId`; a file found on the origin by a
 *   lazy directory has `originPath` and no `fileId` until first opened ("materialized");
 * - a directory lists its names in `entries` (name -> ino; 0 = known absent: removed here,
 *   a whiteout, or absent on the origin). A lazy directory has `originPath`; until `listed`
 *   a name it does not know is asked of the origin;
 * - a symbolic link has `target` (an origin link's target is read on first readlink).
 */
import { type Timespec, timespecNow } from "../fuse/index.js";
import type { Policy } from "../store/index.js";

export { type Timespec, timespecFromMs, timespecToMs } from "../fuse/index.js";

import type { ByteSource } from "../fetch/index.js";

export const ROOT_INO = 1;

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_ISGID = 0o2000;

/** A node as journaled. */
export interface NodeRecord {
  ino: number;
  /** Directories: the parent (for `..`). Other nodes: unused (they may have many names). */
  parent: number;
  mode: number;
  uid: number;
  gid: number;
  atime: Timespec;
  mtime: Timespec;
  ctime: Timespec;
  /** Names of a non-directory (a directory's count is computed). 0: removed, kept while in use. */
  nlink: number;
  rdev?: number;
  /** Engine file id (regular files whose content the engine serves). */
  fileId?: string;
  /** Size of a file not yet materialized (the origin's). */
  size?: number;
  /** Where names (directories) or content (files) and link targets come from on the origin. */
  originPath?: string;
  /** The origin's mtime of a file found there (the engine checks it before fetching). */
  originMtimeMs?: number;
  /** Policy of a file found on the origin. */
  policy?: Policy;
  /** Directories: every name is known (listed on the origin, or not lazy). */
  listed?: boolean;
  /** Lazy directory whose own attributes are still the origin's to tell. */
  unstatted?: boolean;
  /** Symbolic links. */
  target?: string;
  /** st_ino shown for it: the origin's inode number of a planned file. */
  stIno?: number;
  /**
   * Part of the whole-origin view outside the process's data: listed and fetched only when
   * the process references it, never crawled, not needed for independence.
   */
  onReference?: boolean;
}

export interface Node extends NodeRecord {
  entries?: Map<string, number>;
}

export function isDir(n: NodeRecord): boolean {
  return (n.mode & S_IFMT) === S_IFDIR;
}

export function isReg(n: NodeRecord): boolean {
  return (n.mode & S_IFMT) === S_IFREG;
}

export function isLink(n: NodeRecord): boolean {
  return (n.mode & S_IFMT) === S_IFLNK;
}

/**
 * A node found on the origin whose content is still only there: a regular file not yet handed
 * to the engine, a symbolic link not yet read.
 */
export function unmaterialized(n: NodeRecord): boolean {
  if (n.originPath === undefined) return false;
  return (isReg(n) && n.fileId === undefined) || (isLink(n) && n.target === undefined);
}

/** A lazy directory whose listing (or own attributes) is still only on the origin. */
export function unlisted(n: NodeRecord): boolean {
  return isDir(n) && n.originPath !== undefined && (!n.listed || !!n.unstatted);
}

export function now(): Timespec {
  return timespecNow();
}

/** The record of a node (without its entries). */
export function recordOf(n: Node): NodeRecord {
  const { entries: _, ...rec } = n;
  return rec;
}

/**
 * Inode numbers the process sees: the origin's for planned files (a migrated SQLite checks
 * that its database path still has the inode it opened), and for every other node its own
 * number in a range far above any origin's, so that the two never collide.
 */
const OWN_INO_BASE = 2 ** 40;
export function shownIno(n: NodeRecord): number {
  return n.stIno ?? OWN_INO_BASE + n.ino;
}

/** What a request context carries for the access log: where the bytes came from. */
export interface SourceReport {
  source?: ByteSource;
}
