/**
 * The friendly, inode-based file system interface that a `Session` dispatches to. Every
 * method is optional: a missing one answers ENOSYS (or a sensible default, documented on the
 * method). Handlers are async; a thrown error with an errno `code` (`ENOENT`, ...) or a
 * numeric `errno` becomes that errno, anything else EIO (and is logged).
 */
import { constants } from "node:os";
import type { Attr, SetAttrIn, StatFs } from "./protocol.js";

export type { Attr, SetAttrIn, StatFs } from "./protocol.js";
export * from "./time.js";

/** Who asked, and how to cooperate with the session while answering. */
export interface RequestContext {
  uid: number;
  gid: number;
  pid: number;
  /** Fires when the kernel interrupts the request (the caller got a signal). */
  signal: AbortSignal;
  /**
   * A pooled buffer of at least `size` bytes (size <= max_write) for a READ reply; it goes
   * back to the pool once the reply is written, so return it (or a slice) from `read`.
   */
  buffer(size: number): Buffer;
}

/** A LOOKUP/CREATE/MKDIR/... answer. Each one returned counts as one kernel lookup of `ino`. */
export interface Entry {
  ino: number;
  generation?: number;
  attr: Attr;
  /** How long the kernel may cache the name -> inode mapping; session default if omitted. */
  entryTimeoutMs?: number;
  /** How long the kernel may cache `attr`; session default if omitted. */
  attrTimeoutMs?: number;
}

export interface AttrReply {
  attr: Attr;
  attrTimeoutMs?: number;
}

/** What OPEN/OPENDIR/CREATE return: a handle and per-open caching behaviour. */
export interface OpenReply {
  fh?: number;
  /** Bypass the page cache for this open (reads/writes go straight to the server). */
  directIo?: boolean;
  /** Keep cached pages from earlier opens (the file did not change behind the kernel's back). */
  keepCache?: boolean;
  nonseekable?: boolean;
  /** Directories: let the kernel cache readdir results. */
  cacheDir?: boolean;
  /** Skip FLUSH on close. */
  noFlush?: boolean;
  /** With directIo: allow parallel writes to the same file. */
  parallelDirectWrites?: boolean;
  /**
   * Fast path: an fd whose bytes are this file's bytes at the same offsets. The session then
   * serves READ and WRITE on this handle itself, in its device reader threads, with
   * pread/pwrite on this fd (`read` and `write` are not called for it). The fd must stay open
   * until `release` of the handle, and `fh` must be unique among open handles.
   */
  backingFd?: number;
  /**
   * With `backingFd`: let the kernel serve this open from the backing file itself (kernel
   * passthrough, Linux >= 6.9, session option `passthrough`): reads, writes and mmap of this
   * open never reach the server, and `backingFd` may be closed at `release`. Needs a unique
   * `fh`. Where passthrough is unavailable (no koffi, old kernel, no CAP_SYS_ADMIN) or the
   * inode is open without it, the session serves `backingFd` itself (the fast path above).
   * Writes through it change the backing file behind the server's back: its size and mtime
   * are the backing file's.
   */
  passthrough?: boolean;
}

export interface DirEntry {
  name: string;
  ino: number;
  /** File type bits as in st_mode (S_IFREG, S_IFDIR, ...); 0 if unknown. */
  mode: number;
}

export interface InitInfo {
  /** The minor protocol version agreed with the kernel. */
  minor: number;
  /** Capabilities the kernel offered (`Init.*` bits). */
  kernelFlags: bigint;
  /** Capabilities in effect. */
  flags: bigint;
  maxWrite: number;
  /** Kernel passthrough is negotiated and usable (`OpenReply.passthrough`). */
  passthrough: boolean;
  /**
   * A server taking the connection over: inodes an earlier server left open in passthrough
   * mode. Their opens are passthrough opens too, and what the kernel writes there reaches the
   * backing file only, so such a file system reads size and times back from it.
   */
  inheritedPassthrough?: number[];
}

export interface FileSystem {
  /** Called once after INIT negotiation, before any other request is answered. */
  init?(info: InitInfo): Promise<void> | void;
  /** DESTROY (or session end). */
  destroy?(): Promise<void> | void;

  lookup?(parent: number, name: string, ctx: RequestContext): Promise<Entry>;
  /** The kernel dropped `nlookup` references to `ino`. No reply. */
  forget?(ino: number, nlookup: number): void;
  getattr?(ino: number, fh: number | undefined, ctx: RequestContext): Promise<AttrReply>;
  setattr?(ino: number, changes: SetAttrIn, ctx: RequestContext): Promise<AttrReply>;
  readlink?(ino: number, ctx: RequestContext): Promise<string>;
  /**
   * MKNOD, MKDIR, CREATE and SYMLINK make a node the caller owns: uid `ctx.uid`, gid `ctx.gid`
   * (POSIX: the parent's gid if the parent is set-group-ID, and a new directory inherits the
   * bit). `mode` is final: the kernel already applied the caller's umask (FUSE_DONT_MASK is
   * not negotiated), so the node gets exactly these bits, not these minus the server's umask.
   * `mknod` makes regular files, fifos, sockets and (with `rdev`) character/block devices.
   */
  mknod?(
    parent: number,
    name: string,
    mode: number,
    rdev: number,
    ctx: RequestContext,
  ): Promise<Entry>;
  mkdir?(parent: number, name: string, mode: number, ctx: RequestContext): Promise<Entry>;
  unlink?(parent: number, name: string, ctx: RequestContext): Promise<void>;
  rmdir?(parent: number, name: string, ctx: RequestContext): Promise<void>;
  symlink?(parent: number, name: string, target: string, ctx: RequestContext): Promise<Entry>;
  rename?(
    parent: number,
    name: string,
    newParent: number,
    newName: string,
    flags: number,
    ctx: RequestContext,
  ): Promise<void>;
  link?(ino: number, newParent: number, newName: string, ctx: RequestContext): Promise<Entry>;

  /** Default: fh 0, no flags. */
  open?(ino: number, flags: number, ctx: RequestContext): Promise<OpenReply>;
  /** Return at most `size` bytes; fewer means end of file. */
  read?(
    ino: number,
    fh: number,
    offset: number,
    size: number,
    ctx: RequestContext,
  ): Promise<Buffer>;
  /** `data` is only valid until the returned promise settles. Returns bytes written. */
  write?(
    ino: number,
    fh: number,
    offset: number,
    data: Buffer,
    ctx: RequestContext,
  ): Promise<number>;
  /** Default: success. */
  flush?(ino: number, fh: number, ctx: RequestContext): Promise<void>;
  /** Default: success. */
  release?(ino: number, fh: number, flags: number, ctx: RequestContext): Promise<void>;
  /** Default: success. */
  fsync?(ino: number, fh: number, datasync: boolean, ctx: RequestContext): Promise<void>;
  /** Default: fh 0. */
  opendir?(ino: number, flags: number, ctx: RequestContext): Promise<OpenReply>;
  /**
   * Entries from position `offset` on (0 = start, then as many as the caller consumed). May
   * return more than fit; the session sends what fits and asks again. Include "." and "..".
   */
  readdir?(ino: number, fh: number, offset: number, ctx: RequestContext): Promise<DirEntry[]>;
  /** Default: success. */
  releasedir?(ino: number, fh: number, ctx: RequestContext): Promise<void>;
  /** Default: success. */
  fsyncdir?(ino: number, fh: number, datasync: boolean, ctx: RequestContext): Promise<void>;
  /** Default: an empty 4 KiB-block file system. */
  statfs?(ino: number, ctx: RequestContext): Promise<StatFs>;
  /** Default: allowed (mount with default_permissions to let the kernel check modes). */
  access?(ino: number, mask: number, ctx: RequestContext): Promise<void>;
  create?(
    parent: number,
    name: string,
    mode: number,
    flags: number,
    ctx: RequestContext,
  ): Promise<{ entry: Entry; open: OpenReply }>;
  lseek?(
    ino: number,
    fh: number,
    offset: number,
    whence: number,
    ctx: RequestContext,
  ): Promise<number>;
  fallocate?(
    ino: number,
    fh: number,
    offset: number,
    length: number,
    mode: number,
    ctx: RequestContext,
  ): Promise<void>;
  setxattr?(
    ino: number,
    name: string,
    value: Buffer,
    flags: number,
    ctx: RequestContext,
  ): Promise<void>;
  getxattr?(ino: number, name: string, ctx: RequestContext): Promise<Buffer>;
  listxattr?(ino: number, ctx: RequestContext): Promise<string[]>;
  removexattr?(ino: number, name: string, ctx: RequestContext): Promise<void>;
}

/** An Error carrying an errno code, for handlers: `throw new FuseError("ENOENT")`. */
export class FuseError extends Error {
  readonly code: string;
  constructor(code: string, message?: string) {
    super(message ?? code);
    this.name = "FuseError";
    this.code = code;
  }
}

/** Positive errno number of a code such as `ENOENT`, or undefined if unknown. */
export function errnoOf(code: string): number | undefined {
  const n = (constants.errno as Record<string, number>)[code];
  return typeof n === "number" ? n : undefined;
}

/** S_IF* file type of a mode, shifted into the `d_type` value readdir wants. */
export function direntType(mode: number): number {
  return (mode & 0o170000) >> 12;
}
