/**
 * The LazyFS tree: inodes and names, journaled (journal.ts) so that a restarted daemon serves
 * the same tree with the same inode numbers. The manifest's files and directories are placed
 * once each (`add`), lazy directories are marked with their origin path, and every later
 * change (the process's creates, removes, renames, chmods; names learnt from the origin) goes
 * through `save`/`setEntry`/`drop`.
 */

import { normalizeAbsolute } from "../common/paths.js";
import type { Policy } from "../store/index.js";
import { Journal, type SpaceWatch, type TreeState } from "./journal.js";
import {
  isDir,
  type Node,
  type NodeRecord,
  now,
  ROOT_INO,
  recordOf,
  S_IFDIR,
  S_IFREG,
  type Timespec,
  timespecFromMs,
  unlisted,
  unmaterialized,
} from "./nodes.js";

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
  /** The origin's inode number, shown as st_ino (programs such as SQLite compare it). */
  ino?: number;
}

/** An ancestor directory's attributes. */
export interface TreeDir {
  path: string;
  mode: number;
  uid: number;
  gid: number;
  mtimeMs: number;
}

/** A directory served as a copy-on-reference mirror of an origin directory. */
export interface TreeLazyDir {
  targetPath: string;
  originPath: string;
  /** The whole view outside the data: looked up on reference, never crawled. */
  onReference?: boolean;
}

export interface TreeSpec {
  files: readonly TreeFile[];
  dirs: readonly TreeDir[];
  lazyDirs?: readonly TreeLazyDir[];
}

function newNode(ino: number, parent: number, mode: number, t: Timespec): Node {
  return { ino, parent, mode, uid: 0, gid: 0, atime: t, mtime: t, ctime: t, nlink: 1 };
}

function setAttrs(
  n: Node,
  type: number,
  a: { mode: number; uid: number; gid: number; mtimeMs: number },
) {
  n.mode = type | (a.mode & 0o7777);
  n.uid = a.uid;
  n.gid = a.gid;
  n.atime = n.mtime = n.ctime = timespecFromMs(a.mtimeMs);
}

export class Tree {
  private readonly nodes = new Map<number, Node>();
  private readonly planned: Set<string>;
  private nextIno: number;
  private readonly journal?: Journal;
  /** Lazy directories not yet listed, and listed; files found and not yet materialized. */
  readonly unlistedDirs = new Set<number>();
  readonly listedDirs = new Set<number>();
  readonly pendingFiles = new Set<number>();
  private readonly deferred = new Set<number>();
  private flushTimer?: NodeJS.Timeout;

  /**
   * `dir`: where to journal (a cache directory); without it the tree lives in memory only.
   * `keepUnlinked`: keep nodes removed while in use (a server taking over a live connection).
   */
  constructor(
    spec: TreeSpec,
    dir?: string,
    opts: { keepUnlinked?: boolean; space?: SpaceWatch } = {},
  ) {
    let state: TreeState = {
      nextIno: ROOT_INO + 1,
      nodes: new Map(),
      entries: new Map(),
      planned: new Set(),
    };
    if (dir) ({ journal: this.journal, state } = Journal.open(dir, ROOT_INO + 1, opts.space));
    this.planned = state.planned;
    this.nextIno = state.nextIno;
    for (const rec of state.nodes.values()) {
      const n: Node = { ...rec };
      if (isDir(n)) n.entries = state.entries.get(n.ino) ?? new Map();
      this.nodes.set(n.ino, n);
      this.track(n);
    }
    if (!this.nodes.has(ROOT_INO)) {
      const root = newNode(ROOT_INO, ROOT_INO, S_IFDIR | 0o755, now());
      root.entries = new Map();
      root.listed = true;
      this.nodes.set(ROOT_INO, root);
      this.save(root);
    }
    // Nodes removed while in use by the previous daemon's kernel session are gone now.
    if (!opts.keepUnlinked)
      for (const n of [...this.nodes.values()]) if (n.nlink === 0) this.drop(n.ino);
    this.add(spec);
  }

  private track(n: Node) {
    const crawled = !n.onReference;
    const sets: [Set<number>, boolean][] = [
      [this.unlistedDirs, crawled && unlisted(n)],
      [this.listedDirs, crawled && isDir(n) && n.originPath !== undefined && !unlisted(n)],
      [this.pendingFiles, crawled && unmaterialized(n)],
    ];
    for (const [set, member] of sets) {
      if (member) set.add(n.ino);
      else set.delete(n.ino);
    }
  }

  /** Records a node's attributes (journaled before the caller answers). */
  save(n: Node): void {
    if (this.nodes.get(n.ino) !== n) return; // dropped meanwhile
    this.deferred.delete(n.ino);
    this.track(n);
    this.journal?.node(recordOf(n));
  }

  /** Records a node's attributes soon (times of writes: not worth a record per write). */
  saveSoon(n: Node): void {
    if (!this.journal) return;
    this.deferred.add(n.ino);
    this.flushTimer ??= setTimeout(() => this.flush(), 1000);
  }

  flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    for (const ino of [...this.deferred]) {
      const n = this.nodes.get(ino);
      if (n) this.save(n);
    }
    this.deferred.clear();
    if (this.journal?.wantsCompaction) this.compact();
  }

  private compact() {
    this.journal?.tryCompact(this.state());
  }

  /** The tree as a journal snapshot holds it. */
  private state(): TreeState {
    const entries = new Map<number, Map<string, number>>();
    const nodes = new Map<number, NodeRecord>();
    for (const n of this.nodes.values()) {
      nodes.set(n.ino, recordOf(n));
      if (n.entries) entries.set(n.ino, n.entries);
    }
    return { nextIno: this.nextIno, nodes, entries, planned: this.planned };
  }

  /** A new node (not yet named anywhere). */
  create(parent: number, mode: number, init: Partial<NodeRecord> = {}): Node {
    const n: Node = { ...newNode(this.nextIno++, parent, mode, now()), ...init };
    if (isDir(n)) n.entries = new Map();
    this.nodes.set(n.ino, n);
    this.save(n);
    return n;
  }

  /** Points `name` in `dir` at `ino` (0: known absent). */
  setEntry(dir: Node, name: string, ino: number): void {
    dir.entries!.set(name, ino);
    this.journal?.entry(dir.ino, name, ino);
  }

  /** Forgets a node for good. */
  drop(ino: number): void {
    const n = this.nodes.get(ino);
    if (!n) return;
    this.nodes.delete(ino);
    n.nlink = 0;
    this.track(n);
    this.unlistedDirs.delete(ino);
    this.listedDirs.delete(ino);
    this.pendingFiles.delete(ino);
    this.deferred.delete(ino);
    this.journal?.gone(ino);
  }

  get(ino: number): Node | undefined {
    return this.nodes.get(ino);
  }

  all(): IterableIterator<Node> {
    return this.nodes.values();
  }

  /** The node `name` in `dir` names: a node, null if known absent, undefined if unknown. */
  child(dir: Node, name: string): Node | null | undefined {
    const ino = dir.entries?.get(name);
    if (ino === undefined) return undefined;
    return ino === 0 ? null : (this.nodes.get(ino) ?? null);
  }

  /**
   * Adds the manifest's files, directories and lazy directories (a migration's plan arrives
   * after the mount exists). Each is placed once: a planned path the process has removed or
   * renamed since stays as the process left it.
   */
  add(spec: TreeSpec): void {
    const once = (key: string, fn: () => void) => {
      if (this.planned.has(key)) return;
      fn();
      this.planned.add(key);
      this.journal?.planned(key);
    };
    for (const l of spec.lazyDirs ?? []) {
      once(`lazy:${l.targetPath}`, () => {
        const n = this.ensureDir(l.targetPath);
        n.originPath = l.originPath;
        n.listed = false;
        n.unstatted = true;
        n.onReference = l.onReference || undefined;
        this.save(n);
      });
    }
    for (const d of spec.dirs) {
      once(`dir:${d.path}`, () => {
        const n = this.ensureDir(d.path);
        setAttrs(n, S_IFDIR, d);
        n.unstatted = undefined;
        this.save(n);
      });
    }
    for (const f of spec.files) {
      if (!f.served) continue;
      once(`${f.type}:${f.targetPath}`, () => this.addFile(f));
    }
    this.flush();
  }

  private addFile(f: TreeFile) {
    if (f.type === "dir") {
      const n = this.ensureDir(f.targetPath);
      setAttrs(n, S_IFDIR, f);
      this.save(n);
      return;
    }
    const path = normalizeAbsolute(f.targetPath); // never a node named `..` or `.`
    const slash = path.lastIndexOf("/");
    const parent = this.ensureDir(path.slice(0, slash) || "/");
    const name = path.slice(slash + 1);
    const existing = this.child(parent, name);
    if (existing && isDir(existing)) {
      throw new Error(`manifest: ${f.targetPath} is a directory and a file`);
    }
    const n = existing ?? this.create(parent.ino, S_IFREG);
    setAttrs(n, S_IFREG, f);
    n.fileId = f.targetPath;
    if (f.ino !== undefined) n.stIno = f.ino;
    if (f.policy === "remote") n.policy = "remote";
    this.save(n);
    if (!existing) this.setEntry(parent, name, n.ino);
  }

  private ensureDir(path: string): Node {
    let node = this.nodes.get(ROOT_INO)!;
    for (const part of normalizeAbsolute(path)
      .split("/")
      .filter((p) => p.length > 0)) {
      const existing = this.child(node, part);
      if (existing) {
        if (!isDir(existing)) {
          throw new Error(`manifest: ${path} needs ${part} to be a directory, but it is a file`);
        }
        node = existing;
        continue;
      }
      // Inside a lazy directory, a directory is the origin's too (lazy itself).
      const child = this.create(
        node.ino,
        S_IFDIR | 0o755,
        node.originPath === undefined
          ? { listed: true }
          : {
              originPath: `${node.originPath.replace(/\/$/, "")}/${part}`,
              unstatted: true,
              ...(node.onReference ? { onReference: true } : {}),
            },
      );
      this.setEntry(node, part, child.ino);
      node = child;
    }
    return node;
  }

  /** Target paths of planned files that are no longer in the tree (the process removed them). */
  removedPlanned(): Set<string> {
    const live = new Set(this.files().map((n) => n.fileId));
    const out = new Set<string>();
    for (const key of this.planned) {
      if (key.startsWith("file:") && !live.has(key.slice(5))) out.add(key.slice(5));
    }
    return out;
  }

  /** Regular files the engine serves. */
  files(): Node[] {
    return [...this.nodes.values()].filter((n) => n.fileId !== undefined);
  }

  close(): void {
    this.flush();
    this.journal?.close();
  }

  sync(): void {
    this.flush();
    this.journal?.sync();
  }
}
