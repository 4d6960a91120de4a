/** Example: a small in-memory file system (files, directories, symlinks, hard links, xattrs). */
import { constants } from "node:fs";
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
} from "../filesystem.js";
import { FUSE_ROOT_ID } from "../protocol.js";

const { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } = constants;

interface Node {
  attr: Attr;
  data: Buffer;
  children?: Map<string, number>;
  target?: string;
  xattrs: Map<string, Buffer>;
  nlookup: number;
}

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
    this.nodes.set(FUSE_ROOT_ID, this.newNode(FUSE_ROOT_ID, S_IFDIR | 0o755, 0, 0));
    this.node(FUSE_ROOT_ID).children = new Map();
    this.node(FUSE_ROOT_ID).attr.nlink = 2;
  }

  private newNode(ino: number, mode: number, uid: number, gid: number): Node {
    const now = Date.now();
    return {
      attr: { ino, size: 0, atimeMs: now, mtimeMs: now, ctimeMs: now, mode, nlink: 1, uid, gid },
      data: Buffer.alloc(0),
      xattrs: new Map(),
      nlookup: 0,
    };
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

  private add(parent: number, name: string, mode: number, ctx: { uid: number; gid: number }): Node {
    const d = this.dir(parent);
    if (d.has(name)) throw new FuseError("EEXIST");
    if (Buffer.byteLength(name) > 255) throw new FuseError("ENAMETOOLONG");
    const ino = this.nextIno++;
    const n = this.newNode(ino, mode, ctx.uid, ctx.gid);
    this.nodes.set(ino, n);
    d.set(name, ino);
    this.touch(this.node(parent));
    return n;
  }

  private touch(n: Node): void {
    n.attr.mtimeMs = n.attr.ctimeMs = Date.now();
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
      const next = this.dir(ino).get(part);
      if (next !== undefined) ino = next;
      else {
        const n = this.add(ino, part, S_IFDIR | 0o755, { uid: 0, gid: 0 });
        n.children = new Map();
        n.attr.nlink = 2;
        ino = n.attr.ino;
      }
    }
    return ino;
  }

  async lookup(parent: number, name: string): Promise<Entry> {
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
      this.resize(n, s.size);
      a.mtimeMs = Date.now();
    }
    if (s.mode !== undefined) a.mode = (a.mode & S_IFMT) | (s.mode & 0o7777);
    if (s.uid !== undefined) a.uid = s.uid;
    if (s.gid !== undefined) a.gid = s.gid;
    if (s.atimeMs !== undefined) a.atimeMs = s.atimeMs === "now" ? Date.now() : s.atimeMs;
    if (s.mtimeMs !== undefined) a.mtimeMs = s.mtimeMs === "now" ? Date.now() : s.mtimeMs;
    a.ctimeMs = Date.now();
    return this.getattr(ino);
  }

  private resize(n: Node, size: number): void {
    if (size > n.data.length) {
      const grown = Buffer.alloc(Math.max(size, Math.min(n.data.length * 2, size + (64 << 20))));
      n.data.copy(grown, 0, 0, n.attr.size);
      n.data = grown;
    } else if (size < n.attr.size) {
      n.data.fill(0, size, n.attr.size);
    }
    n.attr.size = size;
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
    _rdev: number,
    ctx: RequestContext,
  ): Promise<Entry> {
    if ((mode & S_IFMT) !== S_IFREG) throw new FuseError("EPERM", "only regular files");
    return this.entry(this.add(parent, name, mode, ctx).attr.ino);
  }

  async mkdir(parent: number, name: string, mode: number, ctx: RequestContext): Promise<Entry> {
    const n = this.add(parent, name, S_IFDIR | (mode & 0o7777), ctx);
    n.children = new Map();
    n.attr.nlink = 2;
    return this.entry(n.attr.ino);
  }

  async symlink(parent: number, name: string, target: string, ctx: RequestContext): Promise<Entry> {
    const n = this.add(parent, name, S_IFLNK | 0o777, ctx);
    n.target = target;
    n.attr.size = Buffer.byteLength(target);
    return this.entry(n.attr.ino);
  }

  async link(ino: number, newParent: number, newName: string): Promise<Entry> {
    const n = this.node(ino);
    if (n.children) throw new FuseError("EPERM");
    const d = this.dir(newParent);
    if (d.has(newName)) throw new FuseError("EEXIST");
    d.set(newName, ino);
    n.attr.nlink++;
    n.attr.ctimeMs = Date.now();
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
    n.attr.nlink = n.children ? 0 : n.attr.nlink - 1;
    n.attr.ctimeMs = Date.now();
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
    if (flags !== 0) throw new FuseError("EINVAL", "rename flags not supported");
    const from = this.dir(parent);
    const to = this.dir(newParent);
    const ino = from.get(name);
    if (ino === undefined) throw new FuseError("ENOENT");
    const existing = to.get(newName);
    if (existing === ino) return;
    if (existing !== undefined)
      this.remove(newParent, newName, this.node(existing).children !== undefined);
    from.delete(name);
    to.set(newName, ino);
    this.touch(this.node(parent));
    this.touch(this.node(newParent));
  }

  async open(ino: number, flags: number): Promise<OpenReply> {
    const n = this.node(ino);
    if (n.children) throw new FuseError("EISDIR");
    if (flags & constants.O_TRUNC) this.resize(n, 0);
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
    if (end > n.attr.size) this.resize(n, end);
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
    if (offset + length > n.attr.size) this.resize(n, offset + length);
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
      namelen: 255,
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
