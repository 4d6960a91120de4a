/**
 * Example: an in-memory POSIX file system (files, directories, symlinks, fifos, sockets,
 * device nodes, hard links, xattrs). New nodes belong to the caller (the request's uid/gid,
 * or the parent's group under a set-group-ID directory); times are kept to the nanosecond.
 * Mount it with `defaultPermissions` to have the kernel check modes: this class does not.
 */
import { constants } from "node:fs";
import {
  type AttrReply,
  type DirEntry,
  type Entry,
  type FileSystem,
  FuseError,
  type OpenReply,
  type RequestContext,
  type SetAttrIn,
  type StatFs,
  type Timespec,
  timespecNow,
} from "../filesystem.js";
import { FUSE_ROOT_ID } from "../protocol.js";
import { checkName, NAME_MAX, type Node, newNode, resize } from "./memory-node.js";

const { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK } = constants;
const S_ISGID = 0o2000;
/** Node types `mknod` creates. */
const MKNOD_TYPES = new Set([S_IFREG, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK]);
const RENAME_NOREPLACE = 1;
const RENAME_EXCHANGE = 2;

export interface MemoryOptions {
  /** Flags for every OPEN (e.g. `{ keepCache: true }`). */
  openReply?: OpenReply;
  entryTimeoutMs?: number;
  attrTimeoutMs?: number;
}

export class MemoryFileSystem implements FileSystem {
  protected readonly nodes = new Map<number, Node>();
  private nextIno = FUSE_ROOT_ID + 1;
  private readonly opts: MemoryOptions;

  constructor(options: MemoryOptions = {}) {
    this.opts = options;
    this.nodes.set(FUSE_ROOT_ID, newNode(FUSE_ROOT_ID, S_IFDIR | 0o755, 0, 0));
    this.node(FUSE_ROOT_ID).children = new Map();
    this.node(FUSE_ROOT_ID).attr.nlink = 2;
  }

  protected node(ino: number): Node {
    const n = this.nodes.get(ino);
    if (!n) throw new FuseError("ENOENT", `no inode ${ino}`);
    return n;
  }

  private dir(ino: number): Map<string, number> {
    const n = this.node(ino);
    if (!n.children) throw new FuseError("ENOTDIR");
    return n.children;
  }

  private entry(ino: number): Entry {
    const n = this.node(ino);
    n.nlookup++;
    return {
      ino,
      attr: { ...n.attr },
      entryTimeoutMs: this.opts.entryTimeoutMs,
      attrTimeoutMs: this.opts.attrTimeoutMs,
    };
  }

  /**
   * A new node named `name` in `parent`, owned by the caller; under a set-group-ID directory
   * it takes the directory's group (and a new directory keeps the set-group-ID bit).
   */
  private add(parent: number, name: string, mode: number, ctx: { uid: number; gid: number }): Node {
    checkName(name);
    const d = this.dir(parent);
    if (d.has(name)) throw new FuseError("EEXIST");
    const p = this.node(parent).attr;
    const inherit = (p.mode & S_ISGID) !== 0;
    if (inherit && (mode & S_IFMT) === S_IFDIR) mode |= S_ISGID;
    const ino = this.nextIno++;
    const n = newNode(ino, mode, ctx.uid, inherit ? p.gid : ctx.gid);
    if ((mode & S_IFMT) === S_IFDIR) {
      n.children = new Map();
      n.attr.nlink = 2;
      p.nlink++;
    }
    this.nodes.set(ino, n);
    d.set(name, ino);
    this.touch(this.node(parent));
    return n;
  }

  /** Content changed: mtime and ctime are now. */
  private touch(n: Node): void {
    n.attr.mtime = n.attr.ctime = timespecNow();
  }

  private maybeDrop(ino: number): void {
    const n = this.nodes.get(ino);
    if (n && ino !== FUSE_ROOT_ID && n.attr.nlink === 0 && n.nlookup <= 0) this.nodes.delete(ino);
  }

  /** Creates a file (and missing parent directories) from outside FUSE; returns its inode. */
  addFile(path: string, data: Buffer | string, mode = 0o644): number {
    const parts = path.split("/").filter(Boolean);
    const name = parts.pop();
    if (!name) throw new Error(`bad path ${path}`);
    const parent = this.addDir(parts.join("/"));
    const n = this.add(parent, name, S_IFREG | mode, { uid: 0, gid: 0 });
    n.data = Buffer.from(data);
    n.attr.size = n.data.length;
    return n.attr.ino;
  }

  /** Creates a directory path (mkdir -p) from outside FUSE; returns its inode. */
  addDir(path: string): number {
    let ino = FUSE_ROOT_ID;
    for (const part of path.split("/").filter(Boolean)) {
      ino =
        this.dir(ino).get(part) ??
        this.add(ino, part, S_IFDIR | 0o755, { uid: 0, gid: 0 }).attr.ino;
    }
    return ino;
  }

  async lookup(parent: number, name: string): Promise<Entry> {
    checkName(name);
    const ino = this.dir(parent).get(name);
    if (ino === undefined) throw new FuseError("ENOENT");
    return this.entry(ino);
  }

  forget(ino: number, nlookup: number): void {
    const n = this.nodes.get(ino);
    if (!n) return;
    n.nlookup -= nlookup;
    this.maybeDrop(ino);
  }

  async getattr(ino: number): Promise<AttrReply> {
    return { attr: { ...this.node(ino).attr }, attrTimeoutMs: this.opts.attrTimeoutMs };
  }

  async setattr(ino: number, s: SetAttrIn): Promise<AttrReply> {
    const n = this.node(ino);
    const a = n.attr;
    if (s.size !== undefined) {
      if (n.children) throw new FuseError("EISDIR");
      if ((a.mode & S_IFMT) !== S_IFREG) throw new FuseError("EINVAL");
      resize(n, s.size);
      this.touch(n);
    }
    if (s.mode !== undefined) a.mode = (a.mode & S_IFMT) | (s.mode & 0o7777);
    if (s.uid !== undefined) a.uid = s.uid;
    if (s.gid !== undefined) a.gid = s.gid;
    const now = timespecNow();
    const at = (t: Timespec | "now"): Timespec => (t === "now" ? now : { ...t });
    if (s.atime !== undefined) a.atime = at(s.atime);
    if (s.mtime !== undefined) a.mtime = at(s.mtime);
    a.ctime = now;
    return this.getattr(ino);
  }

  async readlink(ino: number): Promise<string> {
    const t = this.node(ino).target;
    if (t === undefined) throw new FuseError("EINVAL");
    return t;
  }

  async mknod(
    parent: number,
    name: string,
    mode: number,
    rdev: number,
    ctx: RequestContext,
  ): Promise<Entry> {
    const type = mode & S_IFMT;
    if (!MKNOD_TYPES.has(type)) throw new FuseError("EINVAL", "not a file type mknod makes");
    const n = this.add(parent, name, mode, ctx);
    if (type === S_IFCHR || type === S_IFBLK) n.attr.rdev = rdev;
    return this.entry(n.attr.ino);
  }

  async mkdir(parent: number, name: string, mode: number, ctx: RequestContext): Promise<Entry> {
    return this.entry(this.add(parent, name, S_IFDIR | (mode & 0o7777), ctx).attr.ino);
  }

  async symlink(parent: number, name: string, target: string, ctx: RequestContext): Promise<Entry> {
    const n = this.add(parent, name, S_IFLNK | 0o777, ctx);
    n.target = target;
    n.attr.size = Buffer.byteLength(target);
    return this.entry(n.attr.ino);
  }

  async link(ino: number, newParent: number, newName: string): Promise<Entry> {
    checkName(newName);
    const n = this.node(ino);
    if (n.children) throw new FuseError("EPERM");
    const d = this.dir(newParent);
    if (d.has(newName)) throw new FuseError("EEXIST");
    d.set(newName, ino);
    n.attr.nlink++;
    n.attr.ctime = timespecNow();
    this.touch(this.node(newParent));
    return this.entry(ino);
  }

  private remove(parent: number, name: string, wantDir: boolean): void {
    const d = this.dir(parent);
    const ino = d.get(name);
    if (ino === undefined) throw new FuseError("ENOENT");
    const n = this.node(ino);
    if (wantDir && !n.children) throw new FuseError("ENOTDIR");
    if (!wantDir && n.children) throw new FuseError("EISDIR");
    if (n.children && n.children.size > 0) throw new FuseError("ENOTEMPTY");
    d.delete(name);
    if (n.children) {
      n.attr.nlink = 0;
      this.node(parent).attr.nlink--;
    } else n.attr.nlink--;
    n.attr.ctime = timespecNow();
    this.touch(this.node(parent));
    this.maybeDrop(ino);
  }

  async unlink(parent: number, name: string): Promise<void> {
    this.remove(parent, name, false);
  }

  async rmdir(parent: number, name: string): Promise<void> {
    this.remove(parent, name, true);
  }

  async rename(
    parent: number,
    name: string,
    newParent: number,
    newName: string,
    flags: number,
  ): Promise<void> {
    const exchange = (flags & RENAME_EXCHANGE) !== 0;
    if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) || (exchange && flags & RENAME_NOREPLACE))
      throw new FuseError("EINVAL", "unsupported rename flags");
    checkName(newName);
    const from = this.dir(parent);
    const to = this.dir(newParent);
    const ino = from.get(name);
    if (ino === undefined) throw new FuseError("ENOENT");
    const existing = to.get(newName);
    if (existing !== undefined && flags & RENAME_NOREPLACE) throw new FuseError("EEXIST");
    if (exchange && existing === undefined) throw new FuseError("ENOENT");
    if (existing === ino) return;
    const n = this.node(ino);
    if (exchange) this.exchange(parent, name, newParent, newName);
    else if (existing !== undefined) {
      const old = this.node(existing);
      if (n.children && !old.children) throw new FuseError("ENOTDIR");
      if (!n.children && old.children) throw new FuseError("EISDIR");
      this.remove(newParent, newName, old.children !== undefined);
    }
    if (!exchange) {
      from.delete(name);
      to.set(newName, ino);
      this.moved(n, parent, newParent);
    }
    n.attr.ctime = timespecNow();
    this.touch(this.node(parent));
    this.touch(this.node(newParent));
  }

  /** RENAME_EXCHANGE: the two names swap their nodes. */
  private exchange(parent: number, name: string, newParent: number, newName: string): void {
    const from = this.dir(parent);
    const to = this.dir(newParent);
    const a = from.get(name) ?? 0;
    const b = to.get(newName) ?? 0;
    from.set(name, b);
    to.set(newName, a);
    this.moved(this.node(a), parent, newParent);
    this.moved(this.node(b), newParent, parent);
    this.node(b).attr.ctime = timespecNow();
  }

  /** A directory's ".." changed parent: the parents' link counts follow. */
  private moved(n: Node, parent: number, newParent: number): void {
    if (!n.children || parent === newParent) return;
    this.node(parent).attr.nlink--;
    this.node(newParent).attr.nlink++;
  }

  async open(ino: number, flags: number): Promise<OpenReply> {
    const n = this.node(ino);
    if (n.children) throw new FuseError("EISDIR");
    if (flags & constants.O_TRUNC) {
      resize(n, 0);
      this.touch(n);
    }
    return { ...this.opts.openReply };
  }

  async create(
    parent: number,
    name: string,
    mode: number,
    flags: number,
    ctx: RequestContext,
  ): Promise<{ entry: Entry; open: OpenReply }> {
    const entry = await this.mknod(parent, name, S_IFREG | (mode & 0o7777), 0, ctx);
    return { entry, open: await this.open(entry.ino, flags & ~constants.O_TRUNC) };
  }

  async read(
    ino: number,
    _fh: number,
    offset: number,
    size: number,
    _ctx?: RequestContext,
  ): Promise<Buffer> {
    const n = this.node(ino);
    if (offset >= n.attr.size) return Buffer.alloc(0);
    return n.data.subarray(offset, Math.min(n.attr.size, offset + size));
  }

  async write(ino: number, _fh: number, offset: number, data: Buffer): Promise<number> {
    const n = this.node(ino);
    const end = offset + data.length;
    if (end > n.attr.size) resize(n, end);
    data.copy(n.data, offset);
    this.touch(n);
    return data.length;
  }

  async fallocate(
    ino: number,
    _fh: number,
    offset: number,
    length: number,
    mode: number,
  ): Promise<void> {
    if (mode !== 0) throw new FuseError("EOPNOTSUPP");
    const n = this.node(ino);
    if (offset + length > n.attr.size) {
      resize(n, offset + length);
      this.touch(n);
    }
  }

  async readdir(ino: number, _fh: number, offset: number): Promise<DirEntry[]> {
    const d = this.dir(ino);
    const all: DirEntry[] = [
      { name: ".", ino, mode: S_IFDIR },
      { name: "..", ino, mode: S_IFDIR },
    ];
    for (const [name, child] of d) all.push({ name, ino: child, mode: this.node(child).attr.mode });
    return all.slice(offset, offset + 1024);
  }

  async statfs(): Promise<StatFs> {
    let used = 0;
    for (const n of this.nodes.values()) used += Math.ceil(n.attr.size / 4096);
    const blocks = Math.max(used * 2, 1 << 20);
    return {
      blocks,
      bfree: blocks - used,
      bavail: blocks - used,
      files: this.nodes.size + 1_000_000,
      ffree: 1_000_000,
      bsize: 4096,
      namelen: NAME_MAX,
      frsize: 4096,
    };
  }

  async setxattr(ino: number, name: string, value: Buffer, flags: number): Promise<void> {
    const x = this.node(ino).xattrs;
    if (flags & 1 && x.has(name)) throw new FuseError("EEXIST"); // XATTR_CREATE
    if (flags & 2 && !x.has(name)) throw new FuseError("ENODATA"); // XATTR_REPLACE
    x.set(name, Buffer.from(value));
  }

  async getxattr(ino: number, name: string): Promise<Buffer> {
    const v = this.node(ino).xattrs.get(name);
    if (!v) throw new FuseError("ENODATA");
    return v;
  }

  async listxattr(ino: number): Promise<string[]> {
    return [...this.node(ino).xattrs.keys()];
  }

  async removexattr(ino: number, name: string): Promise<void> {
    if (!this.node(ino).xattrs.delete(name)) throw new FuseError("ENODATA");
  }
}
