/**
 * The LazyFS file system: the placeholder tree, with file data read and written through the
 * copy-on-reference engine. Placeholders carry the checkpoint's size, mode, owner and mtime;
 * writes update size and times. The tree's shape is fixed by the manifest: no files are
 * created, removed or renamed (EROFS for those requests from the FUSE defaults' side).
 */
import type { Engine } from "../fetch/index.js";
import type {
  AttrReply,
  DirEntry,
  Entry,
  FileSystem,
  OpenReply,
  RequestContext,
  SetAttrIn,
  StatFs,
} from "../fuse/index.js";
import { FuseError, timespecFromMs, timespecToMs } from "../fuse/index.js";
import { type Node, Tree, type TreeDir, type TreeFile } from "./tree.js";

/** The tree changes only through us, so the kernel may cache names and attributes. */
const ENTRY_TIMEOUT_MS = 60_000;
const ATTR_TIMEOUT_MS = 60_000;

async function readOnly(): Promise<never> {
  throw new FuseError("EROFS");
}

export class LazyFileSystem implements FileSystem {
  readonly tree: Tree;

  constructor(
    spec: { files: readonly TreeFile[]; dirs: readonly TreeDir[] },
    private readonly engine: Engine,
  ) {
    this.tree = new Tree(spec);
  }

  /** Adds placeholders (the plan of a migration whose mount already exists). */
  add(spec: { files: readonly TreeFile[]; dirs: readonly TreeDir[] }): void {
    this.tree.add(spec);
  }

  private node(ino: number): Node {
    const n = this.tree.get(ino);
    if (!n) throw new FuseError("ENOENT");
    return n;
  }

  private fileId(ino: number): string {
    const n = this.node(ino);
    if (n.fileId === undefined) throw new FuseError("EISDIR");
    return n.fileId;
  }

  private attr(n: Node) {
    const size = n.fileId === undefined ? 4096 : this.engine.size(n.fileId);
    return {
      ino: n.ino,
      size,
      atime: timespecFromMs(n.atimeMs),
      mtime: timespecFromMs(n.mtimeMs),
      ctime: timespecFromMs(n.ctimeMs),
      mode: n.mode,
      nlink: n.children
        ? 2 + [...n.children.values()].filter((c) => this.tree.get(c)?.children).length
        : 1,
      uid: n.uid,
      gid: n.gid,
      blksize: 65536,
    };
  }

  private timeout(n: Node): number {
    return n.uncached ? 0 : ATTR_TIMEOUT_MS;
  }

  async lookup(parent: number, name: string): Promise<Entry> {
    const n = this.tree.child(parent, name);
    if (!n) throw new FuseError("ENOENT");
    return {
      ino: n.ino,
      attr: this.attr(n),
      entryTimeoutMs: ENTRY_TIMEOUT_MS,
      attrTimeoutMs: this.timeout(n),
    };
  }

  forget(): void {
    // Inodes live as long as the mount: the tree is fixed.
  }

  async getattr(ino: number): Promise<AttrReply> {
    const n = this.node(ino);
    return { attr: this.attr(n), attrTimeoutMs: this.timeout(n) };
  }

  async setattr(ino: number, c: SetAttrIn): Promise<AttrReply> {
    const n = this.node(ino);
    const now = Date.now();
    if (c.size !== undefined) {
      await this.engine.truncate(this.fileId(ino), c.size);
      n.mtimeMs = n.ctimeMs = now;
    }
    if (c.mode !== undefined) n.mode = (n.mode & 0o170000) | (c.mode & 0o7777);
    if (c.uid !== undefined) n.uid = c.uid;
    if (c.gid !== undefined) n.gid = c.gid;
    if (c.atime !== undefined) n.atimeMs = c.atime === "now" ? now : timespecToMs(c.atime);
    if (c.mtime !== undefined) n.mtimeMs = c.mtime === "now" ? now : timespecToMs(c.mtime);
    if (c.mode !== undefined || c.uid !== undefined || c.gid !== undefined) n.ctimeMs = now;
    return { attr: this.attr(n), attrTimeoutMs: this.timeout(n) };
  }

  async open(ino: number): Promise<OpenReply> {
    const n = this.node(ino);
    if (n.fileId === undefined) throw new FuseError("EISDIR");
    // Content changes only through this mount, except for remote files (origin is the truth).
    return n.uncached ? { directIo: true } : { keepCache: true };
  }

  async read(ino: number, _fh: number, offset: number, size: number): Promise<Buffer> {
    return this.engine.read(this.fileId(ino), offset, size);
  }

  async write(ino: number, _fh: number, offset: number, data: Buffer): Promise<number> {
    const id = this.fileId(ino);
    await this.engine.write(id, offset, data);
    const n = this.node(ino);
    n.mtimeMs = n.ctimeMs = Date.now();
    return data.length;
  }

  async fsync(ino: number): Promise<void> {
    const n = this.node(ino);
    if (n.fileId !== undefined) await this.engine.fsync(n.fileId);
  }

  async fallocate(ino: number, _fh: number, offset: number, length: number, mode: number) {
    if (mode !== 0) throw new FuseError("EOPNOTSUPP");
    const id = this.fileId(ino);
    if (offset + length > this.engine.size(id)) await this.engine.truncate(id, offset + length);
  }

  async readdir(
    ino: number,
    _fh: number,
    offset: number,
    _ctx: RequestContext,
  ): Promise<DirEntry[]> {
    const n = this.node(ino);
    if (!n.children) throw new FuseError("ENOTDIR");
    const all: DirEntry[] = [
      { name: ".", ino: n.ino, mode: n.mode },
      { name: "..", ino: n.parent, mode: this.node(n.parent).mode },
      ...[...n.children].map(([name, c]) => ({ name, ino: c, mode: this.node(c).mode })),
    ];
    return all.slice(offset);
  }

  async statfs(): Promise<StatFs> {
    const files = this.tree.files();
    const bytes = files.reduce((s, f) => s + this.engine.size(f.fileId!), 0);
    const blocks = Math.ceil(bytes / 4096);
    return {
      blocks,
      bfree: 0,
      bavail: 0,
      files: files.length,
      ffree: 0,
      bsize: 4096,
      namelen: 255,
      frsize: 4096,
    };
  }

  // The tree's shape is the checkpoint's: nothing is created, removed or renamed.
  create = readOnly;
  mknod = readOnly;
  mkdir = readOnly;
  unlink = readOnly;
  rmdir = readOnly;
  rename = readOnly;
  symlink = readOnly;
  link = readOnly;
}
