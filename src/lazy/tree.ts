/**
 * The placeholder tree: every served file and directory of a manifest at its target path,
 * with the ancestors in between, each with the attributes the origin had at the checkpoint.
 */
import type { Policy } from "../store/index.js";

/** A file or directory to show (the manifest's files, structurally). */
export interface TreeFile {
  targetPath: string;
  type: "file" | "dir";
  mode: number;
  uid: number;
  gid: number;
  mtimeMs: number;
  policy: Policy;
  served: boolean;
}

/** An ancestor directory's attributes. */
export interface TreeDir {
  path: string;
  mode: number;
  uid: number;
  gid: number;
  mtimeMs: number;
}

export const ROOT_INO = 1;

export interface Node {
  ino: number;
  parent: number;
  name: string;
  /** S_IFDIR or S_IFREG plus permission bits. */
  mode: number;
  uid: number;
  gid: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
  /** Engine file id (the target path) for regular files. */
  fileId?: string;
  /** Never cached (policy remote): the kernel must ask every time. */
  uncached: boolean;
  children?: Map<string, number>;
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const TYPE_MASK = 0o170000;

/** A directory the origin's attributes are not known for (yet): root-owned, 0755. */
function plainDir(ino: number, parent: number, name: string, now: number): Node {
  return {
    ino,
    parent,
    name,
    mode: S_IFDIR | 0o755,
    uid: 0,
    gid: 0,
    atimeMs: now,
    mtimeMs: now,
    ctimeMs: now,
    uncached: false,
    children: new Map(),
  };
}

function setAttrs(
  n: Node,
  type: number,
  a: { mode: number; uid: number; gid: number; mtimeMs: number },
) {
  n.mode = type | (a.mode & 0o7777);
  n.uid = a.uid;
  n.gid = a.gid;
  n.atimeMs = n.mtimeMs = n.ctimeMs = a.mtimeMs;
}

export class Tree {
  private readonly nodes = new Map<number, Node>();
  private nextIno = ROOT_INO + 1;

  constructor(
    manifest: { files: readonly TreeFile[]; dirs: readonly TreeDir[] },
    now = Date.now(),
  ) {
    this.nodes.set(ROOT_INO, plainDir(ROOT_INO, ROOT_INO, "", now));
    this.add(manifest, now);
  }

  /**
   * Adds files and directories (a migration's plan arrives after the mount exists). A path
   * already in the tree keeps its inode; its attributes are updated.
   */
  add(manifest: { files: readonly TreeFile[]; dirs: readonly TreeDir[] }, now = Date.now()) {
    for (const d of manifest.dirs) {
      setAttrs(this.ensureDir(d.path, now), S_IFDIR, d);
    }
    for (const f of manifest.files) {
      if (!f.served) continue;
      if (f.type === "dir") {
        setAttrs(this.ensureDir(f.targetPath, now), S_IFDIR, f);
        continue;
      }
      const slash = f.targetPath.lastIndexOf("/");
      const parent = this.ensureDir(f.targetPath.slice(0, slash) || "/", now);
      const name = f.targetPath.slice(slash + 1);
      const existing = parent.children!.get(name);
      if (existing !== undefined) {
        const n = this.nodes.get(existing)!;
        if (n.fileId !== f.targetPath) {
          throw new Error(`manifest: ${f.targetPath} is a directory and a file`);
        }
        setAttrs(n, S_IFREG, f);
        n.uncached = f.policy === "remote";
        continue;
      }
      const ino = this.nextIno++;
      this.nodes.set(ino, {
        ino,
        parent: parent.ino,
        name,
        mode: S_IFREG | (f.mode & 0o7777),
        uid: f.uid,
        gid: f.gid,
        atimeMs: f.mtimeMs,
        mtimeMs: f.mtimeMs,
        ctimeMs: f.mtimeMs,
        fileId: f.targetPath,
        uncached: f.policy === "remote",
      });
      parent.children!.set(name, ino);
    }
  }

  private ensureDir(path: string, now: number): Node {
    let node = this.nodes.get(ROOT_INO)!;
    for (const part of path.split("/").filter((p) => p.length > 0)) {
      const existing = node.children!.get(part);
      if (existing !== undefined) {
        const child = this.nodes.get(existing)!;
        if (!child.children) {
          throw new Error(`manifest: ${path} needs ${part} to be a directory, but it is a file`);
        }
        node = child;
        continue;
      }
      const ino = this.nextIno++;
      const child = plainDir(ino, node.ino, part, now);
      this.nodes.set(ino, child);
      node.children!.set(part, ino);
      node = child;
    }
    return node;
  }

  get(ino: number): Node | undefined {
    return this.nodes.get(ino);
  }

  child(parent: number, name: string): Node | undefined {
    const ino = this.nodes.get(parent)?.children?.get(name);
    return ino === undefined ? undefined : this.nodes.get(ino);
  }

  isDir(n: Node): boolean {
    return (n.mode & TYPE_MASK) === S_IFDIR;
  }

  files(): Node[] {
    return [...this.nodes.values()].filter((n) => n.fileId !== undefined);
  }
}
