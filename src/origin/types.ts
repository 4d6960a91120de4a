/** Attributes of a file on the origin host, as the checkpoint and the consistency check see them. */
export interface OriginStat {
  size: number;
  mtimeMs: number;
  mode: number;
  uid: number;
  gid: number;
  isDirectory: boolean;
}

export type ReadPartCallback = (rel: number, length: number, whole: Buffer) => void;

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
  /**
   * `onPart`, when the origin supports it, is called as pieces of the range arrive: bytes
   * `rel..rel+length` of `whole` (the buffer `read` will resolve with) are final. Pieces do
   * not overlap and come in any order; a caller may store them while they are hot.
   */
  read(path: string, offset: number, length: number, onPart?: ReadPartCallback): Promise<Buffer>;
  readdir(path: string): Promise<OriginDirEntry[]>;
  /** Used only by the `remote` policy. */
  write(path: string, offset: number, data: Buffer): Promise<void>;
  truncate(path: string, size: number): Promise<void>;
  close(): Promise<void>;
}
