/** Example: mirrors a local directory (every request becomes the same syscall on the source). */
import fs from "node:fs";
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
} from "../filesystem.js";
import { FUSE_ROOT_ID } from "../protocol.js";

const fsRead = promisify(fs.read);
const fsWrite = promisify(fs.write);
const fsp = fs.promises;
const { O_CREAT, O_EXCL, O_NOCTTY } = fs.constants;

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
}

function toAttr(st: fs.Stats, ino: number): Attr {
  return {
    ino,
    size: st.size,
    blocks: st.blocks,
    atimeMs: st.atimeMs,
    mtimeMs: st.mtimeMs,
    ctimeMs: st.ctimeMs,
    mode: st.mode,
    nlink: st.nlink,
    uid: st.uid,
    gid: st.gid,
    rdev: st.rdev,
    blksize: st.blksize,
  };
}

export class PassthroughFileSystem implements FileSystem {
  readonly root: string;
  private readonly paths = new Map<number, string>();
  private readonly lookups = new Map<number, number>();
  private readonly dirs = new Map<number, DirEntry[]>();
  private nextDir = 1;
  private readonly opts: PassthroughOptions;

  constructor(root: string, options: PassthroughOptions = {}) {
    this.root = path.resolve(root);
    this.opts = options;
    this.paths.set(FUSE_ROOT_ID, this.root);
  }

  private path(ino: number): string {
    const p = this.paths.get(ino);
    if (p === undefined) throw new FuseError("ESTALE", `unknown inode ${ino}`);
    return p;
  }

  private child(parent: number, name: string): string {
    return path.join(this.path(parent), name);
  }

  /** Our inode number for a source file: its st_ino, except the root. */
  private inoOf(st: fs.Stats, p: string): number {
    return p === this.root ? FUSE_ROOT_ID : Number(st.ino);
  }

  private async entryFor(p: string): Promise<Entry> {
    const st = await fsp.lstat(p);
    const ino = this.inoOf(st, p);
    this.paths.set(ino, p);
    this.lookups.set(ino, (this.lookups.get(ino) ?? 0) + 1);
    return {
      ino,
      attr: toAttr(st, ino),
      entryTimeoutMs: this.opts.entryTimeoutMs,
      attrTimeoutMs: this.opts.attrTimeoutMs,
    };
  }

  async lookup(parent: number, name: string): Promise<Entry> {
    return this.entryFor(this.child(parent, name));
  }

  forget(ino: number, nlookup: number): void {
    const left = (this.lookups.get(ino) ?? 0) - nlookup;
    if (left > 0 || ino === FUSE_ROOT_ID) this.lookups.set(ino, left);
    else {
      this.lookups.delete(ino);
      this.paths.delete(ino);
    }
  }

  async getattr(ino: number, fh: number | undefined): Promise<AttrReply> {
    const st = fh !== undefined ? await promisify(fs.fstat)(fh) : await fsp.lstat(this.path(ino));
    return { attr: toAttr(st, ino), attrTimeoutMs: this.opts.attrTimeoutMs };
  }

  async setattr(ino: number, s: SetAttrIn): Promise<AttrReply> {
    const p = this.path(ino);
    if (s.size !== undefined) {
      if (s.fh !== undefined) await promisify(fs.ftruncate)(s.fh, s.size);
      else await fsp.truncate(p, s.size);
    }
    if (s.mode !== undefined) await fsp.chmod(p, s.mode & 0o7777);
    if (s.uid !== undefined || s.gid !== undefined) await fsp.lchown(p, s.uid ?? -1, s.gid ?? -1);
    if (s.atimeMs !== undefined || s.mtimeMs !== undefined) {
      const st = await fsp.lstat(p);
      const t = (v: number | "now" | undefined, old: number) =>
        (v === "now" ? Date.now() : (v ?? old)) / 1000;
      await fsp.lutimes(p, t(s.atimeMs, st.atimeMs), t(s.mtimeMs, st.mtimeMs));
    }
    return this.getattr(ino, undefined);
  }

  async readlink(ino: number): Promise<string> {
    return fsp.readlink(this.path(ino));
  }

  async mknod(parent: number, name: string, mode: number): Promise<Entry> {
    if ((mode & fs.constants.S_IFMT) !== fs.constants.S_IFREG)
      throw new FuseError("EPERM", "only regular files");
    const p = this.child(parent, name);
    await (await fsp.open(p, O_CREAT | O_EXCL, mode & 0o7777)).close();
    return this.entryFor(p);
  }

  async mkdir(parent: number, name: string, mode: number): Promise<Entry> {
    const p = this.child(parent, name);
    await fsp.mkdir(p, mode & 0o7777);
    return this.entryFor(p);
  }

  async unlink(parent: number, name: string): Promise<void> {
    await fsp.unlink(this.child(parent, name));
  }

  async rmdir(parent: number, name: string): Promise<void> {
    await fsp.rmdir(this.child(parent, name));
  }

  async symlink(parent: number, name: string, target: string): Promise<Entry> {
    const p = this.child(parent, name);
    await fsp.symlink(target, p);
    return this.entryFor(p);
  }

  async rename(
    parent: number,
    name: string,
    newParent: number,
    newName: string,
    flags: number,
  ): Promise<void> {
    if (flags !== 0) throw new FuseError("EINVAL", "rename flags not supported");
    const from = this.child(parent, name);
    const to = this.child(newParent, newName);
    await fsp.rename(from, to);
    for (const [ino, p] of this.paths) {
      if (p === from) this.paths.set(ino, to);
      else if (p.startsWith(`${from}/`)) this.paths.set(ino, to + p.slice(from.length));
    }
  }

  async link(ino: number, newParent: number, newName: string): Promise<Entry> {
    const p = this.child(newParent, newName);
    await fsp.link(this.path(ino), p);
    return this.entryFor(p);
  }

  async open(ino: number, flags: number): Promise<OpenReply> {
    const fd = await promisify(fs.open)(this.path(ino), flags & ~(O_CREAT | O_EXCL | O_NOCTTY));
    return this.openReply(fd);
  }

  private openReply(fd: number): OpenReply {
    const backingFd = this.opts.fastPath === false ? undefined : fd;
    return { keepCache: true, ...this.opts.openReply, fh: fd, backingFd };
  }

  async create(
    parent: number,
    name: string,
    mode: number,
    flags: number,
  ): Promise<{ entry: Entry; open: OpenReply }> {
    const p = this.child(parent, name);
    const fd = await promisify(fs.open)(p, flags | O_CREAT, mode & 0o7777);
    try {
      return {
        entry: await this.entryFor(p),
        open: this.openReply(fd),
      };
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
    const p = this.path(ino);
    const names = await fsp.readdir(p);
    const entries: DirEntry[] = [
      { name: ".", ino, mode: fs.constants.S_IFDIR },
      { name: "..", ino, mode: fs.constants.S_IFDIR },
    ];
    for (const name of names) {
      try {
        const st = await fsp.lstat(path.join(p, name));
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
    const s = await fsp.statfs(this.path(ino));
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
    await fsp.access(this.path(ino), mask);
  }
}
