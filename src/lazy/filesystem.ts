/**
 * The LazyFS file system: the tree (tree.ts) served through fuse/, file data read and written
 * through the copy-on-reference engine, names of lazy directories resolved against the origin
 * (resolve.ts). Creating, removing, renaming, linking and attribute changes are local
 * (names.ts) and journaled; nothing is ever written to the origin's directories.
 */
import { constants } from "node:fs";
import type { Engine, PolicyRule } from "../fetch/index.js";
import type {
  Attr,
  AttrReply,
  DirEntry,
  Entry,
  FileSystem,
  InitInfo,
  OpenReply,
  RequestContext,
  SetAttrIn,
  StatFs,
} from "../fuse/index.js";
import { FuseError } from "../fuse/index.js";
import { checkName, Names } from "./names.js";
import type { SourceReport } from "./nodes.js";
import { isDir, isLink, type Node, now, shownIno, type Timespec } from "./nodes.js";
import { LocalPassthrough } from "./passthrough.js";
import { LazyDirs, type LocalTwin } from "./resolve.js";
import { Tree, type TreeSpec } from "./tree.js";

/** The tree changes only through us, so the kernel may cache names and attributes. */
const ENTRY_TIMEOUT_MS = 60_000;
const ATTR_TIMEOUT_MS = 60_000;
/** Largest file size (the store keeps a state byte per block in memory). */
const MAX_FILE_SIZE = 2 ** 40;

function checkSize(size: number): void {
  if (size > MAX_FILE_SIZE) throw new FuseError("EFBIG");
}

export interface LazyOptions {
  /** Cache directory: the tree is journaled there and resumed from it. */
  cacheDir?: string;
  /** Policy rules for files found in lazy directories (the manifest's). */
  policies?: readonly PolicyRule[];
  /**
   * Servers that served this kernel connection before this one (0: a fresh mount). After a
   * failover the kernel still holds the earlier servers' inodes and handles: every node it may
   * hold is kept (also one removed while in use), and handles are numbered apart.
   */
  generation?: number;
  /** The whole view: finds the target's identical copy of an origin file. */
  localTwin?: LocalTwin;
}

function setTime(t: Timespec | "now" | undefined, fallback: Timespec): Timespec {
  if (t === undefined) return fallback;
  return t === "now" ? now() : t;
}

export class LazyFileSystem implements FileSystem {
  readonly tree: Tree;
  readonly lazy: LazyDirs;
  private readonly names: Names;
  /** Kernel references (lookups) and open handles per inode: a removed node lives until both end. */
  private readonly lookups = new Map<number, number>();
  private readonly opens = new Map<number, number>();
  private readonly dirHandles = new Map<number, DirEntry[] | undefined>();
  private nextFh = 1;
  /** Nodes an earlier server of this connection may have handed to the kernel. */
  private readonly inherited = new Set<number>();
  /** Fully local files served by the kernel from their data files. */
  private readonly local: LocalPassthrough;

  constructor(
    spec: TreeSpec,
    private readonly engine: Engine,
    opts: LazyOptions = {},
  ) {
    const generation = opts.generation ?? 0;
    this.tree = new Tree(spec, opts.cacheDir, {
      keepUnlinked: generation > 0,
      space: engine.cacheSpace,
    });
    if (generation > 0) {
      for (const n of this.tree.all()) this.inherited.add(n.ino);
      this.nextFh = generation * 2 ** 32 + 1;
    }
    this.lazy = new LazyDirs(this.tree, engine, opts.policies ?? [], opts.localTwin);
    this.names = new Names(this.tree, this.lazy, engine, (n) => this.reap(n));
    engine.addCrawler(this.lazy);
    this.local = new LocalPassthrough(engine, (n) => this.tree.saveSoon(n), generation);
  }

  init(info: InitInfo): void {
    this.local.enabled = info.passthrough;
    if (info.inheritedPassthrough?.length) {
      this.local.inherit(info.inheritedPassthrough, (ino) => this.tree.get(ino));
    }
  }

  /** Adds placeholders (the plan of a migration whose mount already exists). */
  add(spec: TreeSpec): void {
    this.tree.add(spec);
    if ((spec.lazyDirs?.length ?? 0) > 0) this.engine.crawlWorkAdded();
    this.engine.checkIndependent();
  }

  /** Planned files the process removed (they are not to be served, nor fetched, again). */
  removedPlanned(): Set<string> {
    return this.tree.removedPlanned();
  }

  /** Forgets engine files no node refers to any more (removed while the daemon was down). */
  async dropOrphans(ids: readonly string[]): Promise<void> {
    const live = new Set(this.tree.files().map((n) => n.fileId));
    for (const id of ids) if (!live.has(id)) await this.engine.removeFile(id);
  }

  private node(ino: number): Node {
    const n = this.tree.get(ino);
    if (!n) throw new FuseError("ENOENT");
    return n;
  }

  private dir(ino: number): Node {
    const n = this.node(ino);
    if (!isDir(n)) throw new FuseError("ENOTDIR");
    return n;
  }

  private size(n: Node): number {
    if (n.fileId !== undefined) return this.engine.size(n.fileId);
    if (isLink(n) && n.target !== undefined) return Buffer.byteLength(n.target);
    return isDir(n) ? 4096 : (n.size ?? 0);
  }

  private attr(n: Node): Attr {
    let nlink = n.nlink;
    if (isDir(n)) {
      nlink = 2;
      for (const c of n.entries!.values()) if (c !== 0 && isDirIno(this.tree, c)) nlink++;
    }
    return {
      ino: shownIno(n),
      size: this.size(n),
      atime: n.atime,
      mtime: n.mtime,
      ctime: n.ctime,
      mode: n.mode,
      nlink,
      uid: n.uid,
      gid: n.gid,
      rdev: n.rdev ?? 0,
      blksize: 65536,
    };
  }

  private timeout(n: Node): number {
    return n.policy === "remote" ? 0 : ATTR_TIMEOUT_MS;
  }

  /** An Entry for `n`; the kernel now holds one more reference to it. */
  private entry(n: Node): Entry {
    this.lookups.set(n.ino, (this.lookups.get(n.ino) ?? 0) + 1);
    return {
      ino: n.ino,
      attr: this.attr(n),
      entryTimeoutMs: ENTRY_TIMEOUT_MS,
      attrTimeoutMs: this.timeout(n),
    };
  }

  /** Drops a removed node once nothing refers to it any more. */
  private reap(n: Node) {
    if (n.nlink > 0 || (this.lookups.get(n.ino) ?? 0) > 0 || (this.opens.get(n.ino) ?? 0) > 0) {
      return;
    }
    // The kernel's references from before a failover are unknown: kept until a fresh mount.
    if (this.inherited.has(n.ino)) return;
    this.tree.drop(n.ino);
    if (n.fileId !== undefined) void this.engine.removeFile(n.fileId);
    this.engine.checkIndependent();
  }

  async lookup(parent: number, name: string): Promise<Entry> {
    checkName(name);
    const n = await this.lazy.lookup(this.dir(parent), name);
    if (!n) throw new FuseError("ENOENT");
    await this.lazy.attrs(n);
    return this.entry(n);
  }

  forget(ino: number, nlookup: number): void {
    const left = (this.lookups.get(ino) ?? 0) - nlookup;
    if (left > 0) this.lookups.set(ino, left);
    else this.lookups.delete(ino);
    const n = this.tree.get(ino);
    if (n) this.reap(n);
  }

  async getattr(ino: number): Promise<AttrReply> {
    const n = this.node(ino);
    this.local.sync(ino);
    await this.lazy.attrs(n);
    return { attr: this.attr(n), attrTimeoutMs: this.timeout(n) };
  }

  async setattr(ino: number, c: SetAttrIn): Promise<AttrReply> {
    const n = this.node(ino);
    this.local.sync(ino);
    await this.lazy.attrs(n);
    const t = now();
    if (c.size !== undefined) {
      if (isDir(n)) throw new FuseError("EISDIR");
      checkSize(c.size);
      await this.engine.truncate(await this.lazy.fileId(n), c.size);
      n.mtime = t;
    }
    if (c.mode !== undefined) n.mode = (n.mode & 0o170000) | (c.mode & 0o7777);
    if (c.uid !== undefined) n.uid = c.uid;
    if (c.gid !== undefined) n.gid = c.gid;
    n.atime = setTime(c.atime, n.atime);
    n.mtime = setTime(c.mtime, n.mtime);
    n.ctime = c.ctime ?? t;
    this.tree.save(n);
    return { attr: this.attr(n), attrTimeoutMs: this.timeout(n) };
  }

  async readlink(ino: number): Promise<string> {
    return this.lazy.readlink(this.node(ino));
  }

  private opened(n: Node): OpenReply {
    this.opens.set(n.ino, (this.opens.get(n.ino) ?? 0) + 1);
    // A fully local file: the kernel serves it from its data file (passthrough).
    const local = n.fileId === undefined ? undefined : this.local.open(n, n.fileId);
    if (local) return local;
    // Content changes only through this mount, except for remote files (origin is the truth).
    return n.policy === "remote" ? { directIo: true } : { keepCache: true };
  }

  async open(ino: number, flags: number): Promise<OpenReply> {
    const n = this.node(ino);
    const id = await this.lazy.fileId(n);
    // The session asks for atomic O_TRUNC: truncating is ours to do.
    if (flags & constants.O_TRUNC) {
      if (this.engine.size(id) > 0) await this.engine.truncate(id, 0);
      n.mtime = n.ctime = now();
      this.tree.save(n);
    }
    return this.opened(n);
  }

  async release(ino: number, fh: number): Promise<void> {
    this.local.release(fh, ino);
    const left = (this.opens.get(ino) ?? 1) - 1;
    if (left > 0) this.opens.set(ino, left);
    else this.opens.delete(ino);
    const n = this.tree.get(ino);
    if (n) this.reap(n);
  }

  /** With an access log, `ctx.source` tells it where the bytes came from (logged-fs.ts). */
  async read(
    ino: number,
    _fh: number,
    offset: number,
    size: number,
    ctx?: RequestContext & SourceReport,
  ): Promise<Buffer> {
    const report = ctx && "source" in ctx ? ctx : undefined;
    return this.engine.read(await this.lazy.fileId(this.node(ino)), offset, size, report);
  }

  async write(
    ino: number,
    _fh: number,
    offset: number,
    data: Buffer,
    ctx?: RequestContext & SourceReport,
  ): Promise<number> {
    const n = this.node(ino);
    checkSize(offset + data.length);
    const report = ctx && "source" in ctx ? ctx : undefined;
    await this.engine.write(await this.lazy.fileId(n), offset, data, report);
    n.mtime = n.ctime = now();
    this.tree.saveSoon(n);
    return data.length;
  }

  async fsync(ino: number): Promise<void> {
    const n = this.node(ino);
    this.local.sync(ino);
    if (n.fileId !== undefined) await this.engine.fsync(n.fileId);
    this.tree.sync();
  }

  async fsyncdir(): Promise<void> {
    this.tree.sync();
  }

  async fallocate(ino: number, _fh: number, offset: number, length: number, mode: number) {
    if (mode !== 0) throw new FuseError("EOPNOTSUPP");
    const id = await this.lazy.fileId(this.node(ino));
    this.local.sync(ino);
    checkSize(offset + length);
    if (offset + length > this.engine.size(id)) await this.engine.truncate(id, offset + length);
  }

  async opendir(ino: number): Promise<OpenReply> {
    this.dir(ino);
    const fh = this.nextFh++;
    this.dirHandles.set(fh, undefined);
    return { fh };
  }

  /** Positions stay those of the listing taken at offset 0 (names removed meanwhile included). */
  async readdir(ino: number, fh: number, offset: number): Promise<DirEntry[]> {
    const n = this.dir(ino);
    let all = this.dirHandles.get(fh);
    if (offset === 0 || !all) {
      await this.lazy.list(n);
      const parent = this.tree.get(n.parent) ?? n;
      all = [
        { name: ".", ino: shownIno(n), mode: n.mode },
        { name: "..", ino: shownIno(parent), mode: parent.mode },
      ];
      for (const [name, c] of n.entries!) {
        const child = c === 0 ? undefined : this.tree.get(c);
        if (child) all.push({ name, ino: shownIno(child), mode: child.mode });
      }
      if (this.dirHandles.has(fh)) this.dirHandles.set(fh, all);
    }
    return all.slice(offset);
  }

  async releasedir(_ino: number, fh: number): Promise<void> {
    this.dirHandles.delete(fh);
  }

  async statfs(): Promise<StatFs> {
    const files = this.tree.files();
    const bytes = files.reduce((s, f) => s + this.engine.size(f.fileId!), 0);
    return {
      blocks: Math.ceil(bytes / 4096) + (1 << 20),
      bfree: 1 << 20,
      bavail: 1 << 20,
      files: files.length + (1 << 20),
      ffree: 1 << 20,
      bsize: 4096,
      namelen: 255,
      frsize: 4096,
    };
  }

  async create(parent: number, name: string, mode: number, _flags: number, ctx: RequestContext) {
    const n = await this.names.mknod(this.dir(parent), name, mode, 0, ctx);
    return { entry: this.entry(n), open: this.opened(n) };
  }

  async mknod(parent: number, name: string, mode: number, rdev: number, ctx: RequestContext) {
    return this.entry(await this.names.mknod(this.dir(parent), name, mode, rdev, ctx));
  }

  async mkdir(parent: number, name: string, mode: number, ctx: RequestContext) {
    return this.entry(await this.names.mkdir(this.dir(parent), name, mode, ctx));
  }

  async symlink(parent: number, name: string, target: string, ctx: RequestContext) {
    return this.entry(await this.names.symlink(this.dir(parent), name, target, ctx));
  }

  async link(ino: number, newParent: number, newName: string) {
    return this.entry(await this.names.link(this.node(ino), this.dir(newParent), newName));
  }

  async unlink(parent: number, name: string): Promise<void> {
    await this.names.unlink(this.dir(parent), name);
  }

  async rmdir(parent: number, name: string): Promise<void> {
    await this.names.rmdir(this.dir(parent), name);
  }

  async rename(parent: number, name: string, newParent: number, newName: string, flags: number) {
    await this.names.rename(this.dir(parent), name, this.dir(newParent), newName, flags);
  }

  private destroyed = false;

  /** Stops crawling and closes the journal (at session end; idempotent). */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.local.close();
    this.lazy.close();
    this.tree.close();
  }
}

function isDirIno(tree: Tree, ino: number): boolean {
  const n = tree.get(ino);
  return n !== undefined && isDir(n);
}
