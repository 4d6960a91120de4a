/**
 * Local changes to the name space: create, mknod, mkdir, symlink, link, unlink, rmdir,
 * rename. Each resolves the names it touches first (a lazy directory may have to ask the
 * origin), then changes only the tree: a name removed here is recorded as absent and never
 * asked of the origin again. New nodes belong to the caller (the directory's group under a
 * set-group-ID directory) with exactly the mode the kernel passed.
 */
import type { Engine } from "../fetch/index.js";
import { FuseError, type RequestContext } from "../fuse/index.js";
import { isDir, type Node, now, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, S_ISGID } from "./nodes.js";
import type { LazyDirs } from "./resolve.js";
import type { Tree } from "./tree.js";

const NAME_MAX = 255;
const PATH_MAX = 4096;

/** Names and link targets longer than Linux allows are refused, as a local file system does. */
export function checkName(name: string): void {
  if (Buffer.byteLength(name) > NAME_MAX) throw new FuseError("ENAMETOOLONG");
}

const RENAME_NOREPLACE = 1;
const RENAME_EXCHANGE = 2;

export class Names {
  constructor(
    private readonly tree: Tree,
    private readonly lazy: LazyDirs,
    private readonly engine: Engine,
    private readonly reap: (n: Node) => void,
  ) {}

  private async absent(dir: Node, name: string) {
    checkName(name);
    if (dir.nlink === 0) throw new FuseError("ENOENT"); // removed directory
    if (await this.lazy.lookup(dir, name)) throw new FuseError("EEXIST");
  }

  private async existing(dir: Node, name: string): Promise<Node> {
    const n = await this.lazy.lookup(dir, name);
    if (!n) throw new FuseError("ENOENT");
    return n;
  }

  /** The directory's times change with its names. */
  private touch(...dirs: Node[]) {
    const t = now();
    for (const d of new Set(dirs)) {
      d.mtime = d.ctime = t;
      this.tree.save(d);
    }
  }

  private async made(dir: Node, name: string, mode: number, ctx: RequestContext, init = {}) {
    const gid = dir.mode & S_ISGID ? dir.gid : ctx.gid;
    const n = this.tree.create(dir.ino, mode, { uid: ctx.uid, gid, ...init });
    this.tree.setEntry(dir, name, n.ino);
    this.touch(dir);
    return n;
  }

  async mknod(dir: Node, name: string, mode: number, rdev: number, ctx: RequestContext) {
    await this.absent(dir, name);
    const type = mode & S_IFMT || S_IFREG;
    if (type === S_IFDIR || type === S_IFLNK) throw new FuseError("EINVAL");
    const n = await this.made(
      dir,
      name,
      type | (mode & 0o7777),
      ctx,
      type === S_IFREG ? {} : { rdev },
    );
    if (type === S_IFREG) {
      // A file made here has no origin: every byte is local from the start.
      const id = `new:${n.ino}`;
      await this.engine.addFile({
        id,
        originPath: "",
        size: 0,
        mtimeMs: 0,
        mode: n.mode,
        uid: n.uid,
        gid: n.gid,
        policy: "lazy",
      });
      n.fileId = id;
      this.tree.save(n);
    }
    return n;
  }

  async mkdir(dir: Node, name: string, mode: number, ctx: RequestContext) {
    await this.absent(dir, name);
    const sgid = dir.mode & S_ISGID;
    return this.made(dir, name, S_IFDIR | (mode & 0o7777) | sgid, ctx, { listed: true });
  }

  async symlink(dir: Node, name: string, target: string, ctx: RequestContext) {
    if (Buffer.byteLength(target) >= PATH_MAX) throw new FuseError("ENAMETOOLONG");
    await this.absent(dir, name);
    return this.made(dir, name, S_IFLNK | 0o777, ctx, { target });
  }

  async link(n: Node, dir: Node, name: string) {
    if (isDir(n)) throw new FuseError("EPERM");
    if (n.nlink === 0) throw new FuseError("ENOENT");
    await this.absent(dir, name);
    n.nlink++;
    n.ctime = now();
    this.tree.save(n);
    this.tree.setEntry(dir, name, n.ino);
    this.touch(dir);
    return n;
  }

  /** Takes one name away from `n` (whose name it was is the caller's business). */
  private unname(n: Node) {
    n.nlink = isDir(n) ? 0 : n.nlink - 1;
    n.ctime = now();
    this.tree.save(n);
    this.reap(n);
  }

  async unlink(dir: Node, name: string) {
    const n = await this.existing(dir, name);
    if (isDir(n)) throw new FuseError("EISDIR");
    this.tree.setEntry(dir, name, 0);
    this.touch(dir);
    this.unname(n);
  }

  private async mustBeEmpty(n: Node) {
    await this.lazy.list(n);
    for (const c of n.entries!.values()) if (c !== 0) throw new FuseError("ENOTEMPTY");
  }

  async rmdir(dir: Node, name: string) {
    const n = await this.existing(dir, name);
    if (!isDir(n)) throw new FuseError("ENOTDIR");
    await this.mustBeEmpty(n);
    this.tree.setEntry(dir, name, 0);
    this.touch(dir);
    this.unname(n);
  }

  async rename(from: Node, name: string, to: Node, newName: string, flags: number) {
    checkName(newName);
    const src = await this.existing(from, name);
    const dst = await this.lazy.lookup(to, newName);
    if (flags & RENAME_EXCHANGE) {
      if (!dst) throw new FuseError("ENOENT");
      this.tree.setEntry(from, name, dst.ino);
      this.tree.setEntry(to, newName, src.ino);
      this.moved(src, to);
      this.moved(dst, from);
      this.touch(from, to);
      return;
    }
    if (dst && flags & RENAME_NOREPLACE) throw new FuseError("EEXIST");
    if (dst === src) return;
    if (dst) {
      if (isDir(src) && !isDir(dst)) throw new FuseError("ENOTDIR");
      if (!isDir(src) && isDir(dst)) throw new FuseError("EISDIR");
      if (isDir(dst)) await this.mustBeEmpty(dst);
    }
    this.tree.setEntry(from, name, 0);
    this.tree.setEntry(to, newName, src.ino);
    this.moved(src, to);
    this.touch(from, to);
    if (dst) this.unname(dst);
  }

  private moved(n: Node, to: Node) {
    if (isDir(n)) n.parent = to.ino;
    n.ctime = now();
    this.tree.save(n);
  }
}
