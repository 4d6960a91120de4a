/**
 * The passthrough's inode table. Every inode the kernel knows holds an O_PATH fd on its source
 * file, so it is reached by identity, not by a path: a child is `/proc/self/fd/<dir fd>/<name>`
 * (path length bounded per component, whatever the depth), an unlinked but open file still
 * answers stat, and renames elsewhere do not go stale. The names each inode was seen under
 * are kept too, for the few calls that need a name (readlink, link, lchown of a symlink).
 */
import fs, { type BigIntStats } from "node:fs";
import { promisify } from "node:util";
import { FuseError } from "../filesystem.js";
import { FUSE_ROOT_ID } from "../protocol.js";

/** O_PATH (Linux): an fd that names a file without opening it; Node has no constant for it. */
const O_PATH = 0o10000000;
const fstat = promisify(fs.fstat);
const open = promisify(fs.open);

export interface Inode {
  ino: number;
  /** O_PATH | O_NOFOLLOW fd on the source file. */
  fd: number;
  /** S_IFMT bits. */
  type: number;
  /** Kernel references (LOOKUP/CREATE/... replies minus FORGETs). */
  nlookup: number;
  /** `${parent}/${name}` of every name it is known under. */
  names: Set<string>;
}

function key(parent: number, name: string): string {
  return `${parent}/${name}`;
}

export class Inodes {
  private readonly byIno = new Map<number, Inode>();
  private readonly byName = new Map<string, number>();
  /** Prefix of fd paths in this process, or as seen from a child process. */
  private readonly self = "/proc/self/fd";
  private readonly fromChild = `/proc/${process.pid}/fd`;
  private readonly rootSt: BigIntStats;

  constructor(root: string) {
    const fd = fs.openSync(root, O_PATH | fs.constants.O_DIRECTORY);
    this.rootSt = fs.fstatSync(fd, { bigint: true });
    const type = fs.constants.S_IFDIR;
    this.byIno.set(FUSE_ROOT_ID, { ino: FUSE_ROOT_ID, fd, type, nlookup: 1, names: new Set() });
  }

  get(ino: number): Inode {
    const n = this.byIno.get(ino);
    if (!n) throw new FuseError("ESTALE", `unknown inode ${ino}`);
    return n;
  }

  /** A path that is the inode itself (follows to it; not for symlinks, whose target it is not). */
  path(ino: number, forChild = false): string {
    return `${forChild ? this.fromChild : this.self}/${this.get(ino).fd}`;
  }

  /** The path of `name` in directory `parent`. */
  child(parent: number, name: string, forChild = false): string {
    return `${this.path(parent, forChild)}/${name}`;
  }

  /** Our inode number for a source file: its st_ino, except the root. */
  private inoOf(st: BigIntStats): number {
    return st.ino === this.rootSt.ino && st.dev === this.rootSt.dev ? FUSE_ROOT_ID : Number(st.ino);
  }

  /**
   * Finds `name` in `parent` and counts one kernel reference to it; returns the inode and a
   * fresh stat of it.
   */
  async lookup(parent: number, name: string): Promise<{ node: Inode; st: BigIntStats }> {
    const fd = await open(this.child(parent, name), O_PATH | fs.constants.O_NOFOLLOW);
    let st: BigIntStats;
    try {
      st = await fstat(fd, { bigint: true });
    } catch (e) {
      fs.close(fd, () => {});
      throw e;
    }
    const ino = this.inoOf(st);
    let node = this.byIno.get(ino);
    if (node) fs.close(fd, () => {});
    else {
      node = { ino, fd, type: Number(st.mode) & fs.constants.S_IFMT, nlookup: 0, names: new Set() };
      this.byIno.set(ino, node);
    }
    node.nlookup++;
    this.addName(node, parent, name);
    return { node, st };
  }

  forget(ino: number, nlookup: number): void {
    const n = this.byIno.get(ino);
    if (!n || ino === FUSE_ROOT_ID) return;
    n.nlookup -= nlookup;
    if (n.nlookup > 0) return;
    for (const k of n.names) this.byName.delete(k);
    this.byIno.delete(ino);
    fs.close(n.fd, () => {});
  }

  private addName(n: Inode, parent: number, name: string): void {
    const k = key(parent, name);
    const old = this.byName.get(k);
    if (old !== undefined && old !== n.ino) this.byIno.get(old)?.names.delete(k);
    this.byName.set(k, n.ino);
    n.names.add(k);
  }

  /** `name` in `parent` is gone (unlinked, or replaced by a rename). */
  dropName(parent: number, name: string): void {
    const k = key(parent, name);
    const ino = this.byName.get(k);
    if (ino === undefined) return;
    this.byName.delete(k);
    this.byIno.get(ino)?.names.delete(k);
  }

  /** `name` moved to `newName` (and with `exchange`, `newName` to `name`). */
  renamed(
    parent: number,
    name: string,
    newParent: number,
    newName: string,
    exchange = false,
  ): void {
    const moved = this.byIno.get(this.byName.get(key(parent, name)) ?? -1);
    const other = this.byIno.get(this.byName.get(key(newParent, newName)) ?? -1);
    this.dropName(newParent, newName);
    this.dropName(parent, name);
    if (moved) this.addName(moved, newParent, newName);
    if (other && exchange) this.addName(other, parent, name);
  }

  /**
   * A path naming the inode itself, not following it if it is a symlink: one of its names,
   * checked to still be this file. ENOENT if none is left.
   */
  async namePath(ino: number, forChild = false): Promise<string> {
    const n = this.get(ino);
    const st = await fstat(n.fd, { bigint: true });
    for (const k of n.names) {
      const slash = k.indexOf("/");
      const parent = Number(k.slice(0, slash));
      if (!this.byIno.has(parent)) continue;
      const p = this.child(parent, k.slice(slash + 1), forChild);
      try {
        const cur = await fs.promises.lstat(p, { bigint: true });
        if (cur.ino === st.ino && cur.dev === st.dev) return p;
      } catch {
        /* renamed or removed behind our back */
      }
    }
    throw new FuseError("ENOENT", `no name left for inode ${ino}`);
  }

  /** Closes every fd (the session ended). */
  close(): void {
    for (const n of this.byIno.values()) fs.close(n.fd, () => {});
    this.byIno.clear();
    this.byName.clear();
  }
}
