/**
 * Example: mirrors a local directory, every request becoming the same syscall on the source.
 * Files are reached through their inode's O_PATH fd (`Inodes`), never through a path joined
 * onto the root. The server runs as root: a new file is created, then given to the caller
 * (the request's uid, and its gid unless the parent directory is set-group-ID) and the exact
 * mode the kernel asked for. Mount it with `defaultPermissions`: this class checks no modes.
 * Needs `python3` for mknod of fifos, sockets and devices and for sub-microsecond times.
 */
import fs, { type BigIntStats } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import {
  type Attr,
  type AttrReply,
  type DirEntry,
  type Entry,
  type FileSystem,
  FuseError,
  type OpenReply,
  type RequestContext,
  type SetAttrIn,
  type StatFs,
  statTimes,
  type Timespec,
  timespecNow,
  timespecToNs,
} from "../filesystem.js";
import { type Inode, Inodes } from "./passthrough-inodes.js";
import { SyscallHelper } from "./syscall-helper.js";

const fsRead = promisify(fs.read);
const fsWrite = promisify(fs.write);
const fstat = promisify(fs.fstat);
const fsp = fs.promises;
const { O_CREAT, O_EXCL, O_NOCTTY, O_NOFOLLOW, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } = fs.constants;
const S_ISGID = 0o2000;
const RENAME_EXCHANGE = 2;

export interface PassthroughOptions {
  /** Flags for every OPEN; default `{ keepCache: true }` (the source changes only through us). */
  openReply?: OpenReply;
  entryTimeoutMs?: number;
  attrTimeoutMs?: number;
  /**
   * Give every open file's fd to the session as its `backingFd`, so READ and WRITE are served
   * in the reader threads without calling `read`/`write`; default true.
   */
  fastPath?: boolean;
  /**
   * Ask the kernel to serve every open file from its fd itself (kernel passthrough; mount
   * with the session option `passthrough`); default: as `fastPath`. Falls back to `fastPath` where
   * the session has no passthrough.
   */
  kernelPassthrough?: boolean;
}

function toAttr(st: BigIntStats, ino: number): Attr {
  return {
    ino,
    size: Number(st.size),
    blocks: Number(st.blocks),
    ...statTimes(st),
    mode: Number(st.mode),
    nlink: Number(st.nlink),
    uid: Number(st.uid),
    gid: Number(st.gid),
    rdev: Number(st.rdev),
    blksize: Number(st.blksize),
  };
}

export class PassthroughFileSystem implements FileSystem {
  readonly root: string;
  private readonly inodes: Inodes;
  private readonly helper = new SyscallHelper();
  private readonly dirs = new Map<number, DirEntry[]>();
  private nextDir = 1;
  private readonly opts: PassthroughOptions;

  constructor(root: string, options: PassthroughOptions = {}) {
    this.root = path.resolve(root);
    this.opts = options;
    this.inodes = new Inodes(this.root);
  }

  destroy(): void {
    this.helper.close();
    this.inodes.close();
  }

  private entry(node: Inode, st: BigIntStats): Entry {
    return {
      ino: node.ino,
      attr: toAttr(st, node.ino),
      entryTimeoutMs: this.opts.entryTimeoutMs,
      attrTimeoutMs: this.opts.attrTimeoutMs,
    };
  }

  async lookup(parent: number, name: string): Promise<Entry> {
    const { node, st } = await this.inodes.lookup(parent, name);
    return this.entry(node, st);
  }

  forget(ino: number, nlookup: number): void {
    this.inodes.forget(ino, nlookup);
  }

  /**
   * Looks up the node just made as `name` in `parent` and gives it to the caller: owner uid,
   * group gid (the parent's under a set-group-ID parent, as the source already chose), and
   * exactly `mode` (the kernel applied the caller's umask; ours must not count).
   */
  private async made(
    parent: number,
    name: string,
    mode: number | undefined,
    ctx: RequestContext,
  ): Promise<Entry> {
    const { node, st } = await this.inodes.lookup(parent, name);
    const parentSt = await fstat(this.inodes.get(parent).fd, { bigint: true });
    const gid = Number(parentSt.mode) & S_ISGID ? Number(st.gid) : ctx.gid;
    const symlink = node.type === S_IFLNK;
    let changed = false;
    if (Number(st.uid) !== ctx.uid || Number(st.gid) !== gid) {
      if (symlink) await fsp.lchown(this.inodes.child(parent, name), ctx.uid, gid);
      else await fsp.chown(this.inodes.path(node.ino), ctx.uid, gid);
      changed = true;
    }
    if (mode !== undefined && !symlink) {
      if (node.type === S_IFDIR) mode |= Number(st.mode) & S_ISGID;
      if (changed || (Number(st.mode) & 0o7777) !== (mode & 0o7777)) {
        await fsp.chmod(this.inodes.path(node.ino), mode & 0o7777);
        changed = true;
      }
    }
    return this.entry(node, changed ? await fstat(node.fd, { bigint: true }) : st);
  }

  async getattr(ino: number, fh: number | undefined): Promise<AttrReply> {
    const st = await fstat(fh ?? this.inodes.get(ino).fd, { bigint: true });
    return { attr: toAttr(st, ino), attrTimeoutMs: this.opts.attrTimeoutMs };
  }

  async setattr(ino: number, s: SetAttrIn): Promise<AttrReply> {
    const node = this.inodes.get(ino);
    const symlink = node.type === S_IFLNK;
    const self = symlink ? undefined : this.inodes.path(ino);
    if (s.size !== undefined) {
      if (s.fh !== undefined) await promisify(fs.ftruncate)(s.fh, s.size);
      else await fsp.truncate(self ?? (await this.inodes.namePath(ino)), s.size);
    }
    if (s.uid !== undefined || s.gid !== undefined) {
      if (self) await fsp.chown(self, s.uid ?? -1, s.gid ?? -1);
      else await fsp.lchown(await this.inodes.namePath(ino), s.uid ?? -1, s.gid ?? -1);
    }
    if (s.mode !== undefined && self) await fsp.chmod(self, s.mode & 0o7777);
    if (s.atime !== undefined || s.mtime !== undefined) await this.utimes(node, s.atime, s.mtime);
    return this.getattr(ino, undefined);
  }

  /** Sets atime and mtime ("now", a time, or unchanged when undefined) to the nanosecond. */
  private async utimes(
    node: Inode,
    atime: Timespec | "now" | undefined,
    mtime: Timespec | "now" | undefined,
  ): Promise<void> {
    const cur = statTimes(await fstat(node.fd, { bigint: true }));
    const now = timespecNow();
    const pick = (t: Timespec | "now" | undefined, old: Timespec) =>
      t === "now" ? now : (t ?? old);
    const a = pick(atime, cur.atime);
    const m = pick(mtime, cur.mtime);
    const symlink = node.type === S_IFLNK;
    // Node's utimes is exact only for whole, non-negative seconds.
    if (a.nsec === 0 && m.nsec === 0 && a.sec >= 0 && m.sec >= 0) {
      if (symlink) await fsp.lutimes(await this.inodes.namePath(node.ino), a.sec, m.sec);
      else await fsp.utimes(this.inodes.path(node.ino), a.sec, m.sec);
      return;
    }
    const p = symlink
      ? await this.inodes.namePath(node.ino, true)
      : this.inodes.path(node.ino, true);
    await this.helper.utimes(p, timespecToNs(a), timespecToNs(m), !symlink);
  }

  async readlink(ino: number): Promise<string> {
    return fsp.readlink(await this.inodes.namePath(ino));
  }

  async mknod(
    parent: number,
    name: string,
    mode: number,
    rdev: number,
    ctx: RequestContext,
  ): Promise<Entry> {
    if ((mode & S_IFMT) === S_IFREG) {
      await (await fsp.open(this.inodes.child(parent, name), O_CREAT | O_EXCL, 0)).close();
    } else {
      await this.helper.mknod(this.inodes.child(parent, name, true), mode & ~0o7777, rdev);
    }
    return this.made(parent, name, mode, ctx);
  }

  async mkdir(parent: number, name: string, mode: number, ctx: RequestContext): Promise<Entry> {
    await fsp.mkdir(this.inodes.child(parent, name), 0o700);
    return this.made(parent, name, mode, ctx);
  }

  async unlink(parent: number, name: string): Promise<void> {
    await fsp.unlink(this.inodes.child(parent, name));
    this.inodes.dropName(parent, name);
  }

  async rmdir(parent: number, name: string): Promise<void> {
    await fsp.rmdir(this.inodes.child(parent, name));
    this.inodes.dropName(parent, name);
  }

  async symlink(parent: number, name: string, target: string, ctx: RequestContext): Promise<Entry> {
    await fsp.symlink(target, this.inodes.child(parent, name));
    return this.made(parent, name, undefined, ctx);
  }

  async rename(
    parent: number,
    name: string,
    newParent: number,
    newName: string,
    flags: number,
  ): Promise<void> {
    if (flags === 0) {
      await fsp.rename(this.inodes.child(parent, name), this.inodes.child(newParent, newName));
    } else {
      const to = this.inodes.child(newParent, newName, true);
      await this.helper.rename(this.inodes.child(parent, name, true), to, flags);
    }
    this.inodes.renamed(parent, name, newParent, newName, (flags & RENAME_EXCHANGE) !== 0);
  }

  async link(ino: number, newParent: number, newName: string): Promise<Entry> {
    await fsp.link(await this.inodes.namePath(ino), this.inodes.child(newParent, newName));
    const { node, st } = await this.inodes.lookup(newParent, newName);
    return this.entry(node, st);
  }

  async open(ino: number, flags: number): Promise<OpenReply> {
    const fd = await promisify(fs.open)(
      this.inodes.path(ino),
      flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_NOFOLLOW),
    );
    return this.openReply(fd);
  }

  private openReply(fd: number): OpenReply {
    const passthrough = this.opts.kernelPassthrough ?? this.opts.fastPath !== false;
    const backingFd = passthrough || this.opts.fastPath !== false ? fd : undefined;
    return { keepCache: true, ...this.opts.openReply, fh: fd, backingFd, passthrough };
  }

  async create(
    parent: number,
    name: string,
    mode: number,
    flags: number,
    ctx: RequestContext,
  ): Promise<{ entry: Entry; open: OpenReply }> {
    const p = this.inodes.child(parent, name);
    const open = promisify(fs.open);
    let fd: number;
    let created = true;
    try {
      fd = await open(p, flags | O_CREAT | O_EXCL, 0o600);
    } catch (e) {
      // Without O_EXCL an existing file is opened as it is (the kernel's cache was stale).
      if ((e as NodeJS.ErrnoException).code !== "EEXIST" || flags & O_EXCL) throw e;
      fd = await open(p, flags & ~(O_CREAT | O_NOCTTY));
      created = false;
    }
    try {
      const entry = created
        ? await this.made(parent, name, mode, ctx)
        : await this.lookup(parent, name);
      return { entry, open: this.openReply(fd) };
    } catch (e) {
      fs.close(fd, () => {});
      throw e;
    }
  }

  async read(
    _ino: number,
    fh: number,
    offset: number,
    size: number,
    ctx: RequestContext,
  ): Promise<Buffer> {
    const buf = ctx.buffer(size);
    const { bytesRead } = await fsRead(fh, buf, 0, size, offset);
    return buf.subarray(0, bytesRead);
  }

  async write(_ino: number, fh: number, offset: number, data: Buffer): Promise<number> {
    return (await fsWrite(fh, data, 0, data.length, offset)).bytesWritten;
  }

  async release(_ino: number, fh: number): Promise<void> {
    await promisify(fs.close)(fh);
  }

  async fsync(_ino: number, fh: number, datasync: boolean): Promise<void> {
    await promisify(datasync ? fs.fdatasync : fs.fsync)(fh);
  }

  async opendir(ino: number): Promise<OpenReply> {
    const p = this.inodes.path(ino);
    const names = await fsp.readdir(p);
    const entries: DirEntry[] = [
      { name: ".", ino, mode: S_IFDIR },
      { name: "..", ino, mode: S_IFDIR },
    ];
    for (const name of names) {
      try {
        const st = await fsp.lstat(`${p}/${name}`);
        entries.push({ name, ino: Number(st.ino), mode: st.mode });
      } catch {
        /* vanished meanwhile */
      }
    }
    const fh = this.nextDir++;
    this.dirs.set(fh, entries);
    return { fh };
  }

  async readdir(_ino: number, fh: number, offset: number): Promise<DirEntry[]> {
    const entries = this.dirs.get(fh);
    if (!entries) throw new FuseError("EBADF");
    return entries.slice(offset, offset + 1024);
  }

  async releasedir(_ino: number, fh: number): Promise<void> {
    this.dirs.delete(fh);
  }

  async statfs(ino: number): Promise<StatFs> {
    const s = await fsp.statfs(this.inodes.path(ino));
    return {
      blocks: s.blocks,
      bfree: s.bfree,
      bavail: s.bavail,
      files: s.files,
      ffree: s.ffree,
      bsize: s.bsize,
      namelen: 255,
      frsize: s.bsize,
    };
  }

  async access(ino: number, mask: number): Promise<void> {
    await fsp.access(this.inodes.path(ino), mask);
  }
}
