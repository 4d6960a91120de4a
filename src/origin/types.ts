/** Attributes of a file on the origin host, as the checkpoint and the consistency check see them. */
export interface OriginStat {
  size: number;
  mtimeMs: number;
  /** st_mode: file type (S_IFREG, S_IFDIR, S_IFLNK, ...) and permission bits. */
  mode: number;
  uid: number;
  gid: number;
  isDirectory: boolean;
  /** Last access, when the origin reports it. */
  atimeMs?: number;
  /** Inode number and status-change time, when the origin reports them (SFTP does not). */
  ino?: number;
  ctimeMs?: number;
}

/**
 * A piece of a ranged read arrived in `whole` at `rel`. With a verification (`ReadCheck`),
 * `verified` settles once it is known whether the read's data may be used: the piece may be
 * written somewhere early, but must not be served or recorded as good before it resolves.
 */
export type ReadPartCallback = (
  rel: number,
  length: number,
  whole: Buffer,
  verified?: Promise<void>,
) => void;

/**
 * Verifies a read: called with the file's attributes taken on the open file after the read's
 * data was read (SFTP: an fstat on the handle, pipelined behind the reads), and with exact
 * ones (inode, ctime, nanosecond times) when the origin opens the file anew. Throwing refuses
 * the data: `read` rejects with that error, and the `verified` promise its `onPart` calls
 * got rejects too.
 */
export type ReadCheck = (st: OriginStat) => void;

export interface OriginDirEntry {
  name: string;
  stat: OriginStat;
}

/**
 * Where bytes come from (host A). Paths are absolute paths as the origin host sees them.
 * `read` returns fewer bytes than asked only at end of file. Every failure a user can cause
 * (unreachable host, missing file, timeout) is a `UserError` naming the path and `name`.
 */
export interface Origin {
  /** Human name for errors and accounting, e.g. `root@10.0.0.1:22` or `local:/`. */
  readonly name: string;
  /** Granularity of `mtimeMs` from `stat` (SFTP: whole seconds). */
  readonly mtimePrecisionMs: number;
  stat(path: string): Promise<OriginStat>;
  /** Like `stat`, but a symbolic link is described itself, not followed. */
  lstat(path: string): Promise<OriginStat>;
  /** The target of a symbolic link. */
  readlink(path: string): Promise<string>;
  /**
   * `onPart`, when the origin supports it, is called as pieces of the range arrive: bytes
   * `rel..rel+length` of `whole` (the buffer `read` will resolve with) are final. Pieces do
   * not overlap and come in any order; a caller may store them while they are hot. With a
   * `check` (see ReadCheck), each piece comes with the promise of its verdict: it may be
   * written early but not used before that resolves, and `read` rejects if the check fails.
   */
  read(
    path: string,
    offset: number,
    length: number,
    onPart?: ReadPartCallback,
    check?: ReadCheck,
  ): Promise<Buffer>;
  /** The names in a directory (not `.` and `..`), each with its `lstat`. */
  readdir(path: string): Promise<OriginDirEntry[]>;
  /** Used only by the `remote` policy. */
  write(path: string, offset: number, data: Buffer): Promise<void>;
  truncate(path: string, size: number): Promise<void>;
  close(): Promise<void>;
}

/** Whether an origin error says the path does not exist (ENOENT, ENOTDIR, SFTP "no such file"). */
export function isNotFound(err: unknown): boolean {
  for (let e = err, depth = 0; e && depth < 5; depth++) {
    const code = (e as { code?: unknown }).code;
    if (code === "ENOENT" || code === "ENOTDIR" || code === 2) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}
