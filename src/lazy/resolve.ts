/**
 * Lazy directories against the origin: a name a lazy directory does not know yet is looked up
 * there (the answer, positive or negative, is kept in the tree, so it is asked once), a
 * listing is read there once per directory, a symbolic link's target once, and a file found
 * there becomes an engine file (a new id) when first opened, under the policy its origin path
 * matches. As a `Crawler`, it lists every lazy directory and hands every file found to the
 * engine, so that prefetch ends the dependency on the origin.
 */
import { errorMessage } from "../common/errors.js";
import { logger } from "../common/log.js";
import { isEntryName } from "../common/paths.js";
import type { Crawler, CrawlProgress, Engine, PolicyRule } from "../fetch/index.js";
import { resolvePolicy } from "../fetch/index.js";
import { FuseError } from "../fuse/index.js";
import { isNotFound, type OriginStat } from "../origin/index.js";
import {
  isDir,
  isLink,
  isReg,
  type Node,
  S_IFDIR,
  S_IFMT,
  S_IFREG,
  timespecFromMs,
  unmaterialized,
} from "./nodes.js";
import type { Tree } from "./tree.js";

const log = logger("lazy");

function childPath(dir: string, name: string): string {
  return `${dir.replace(/\/$/, "")}/${name}`;
}

/** One promise per key at a time. */
class Flights<T> {
  private readonly running = new Map<string | number, Promise<T>>();
  run(key: string | number, fn: () => Promise<T>): Promise<T> {
    let p = this.running.get(key);
    if (!p) {
      p = fn().finally(() => this.running.delete(key));
      this.running.set(key, p);
    }
    return p;
  }
}

/** An origin failure other than "not there" is an I/O error for the caller. */
function originFailure(what: string, err: unknown): never {
  log.warn("origin request failed", { what, error: errorMessage(err) });
  throw new FuseError("EIO", errorMessage(err));
}

/**
 * The target's own copy of an origin file of the whole view, if it is identical (judged by
 * whoever builds the file system: daemon/twins.ts); undefined if there is none.
 */
export type LocalTwin = (
  originPath: string,
  size: number,
  mtimeMs: number,
) => Promise<string | undefined>;

export class LazyDirs implements Crawler {
  private readonly lookups = new Flights<Node | null>();
  private readonly lists = new Flights<void>();
  private readonly files = new Flights<string>();
  private readonly links = new Flights<string>();
  private closed = false;

  constructor(
    private readonly tree: Tree,
    private readonly engine: Engine,
    private readonly rules: readonly PolicyRule[] = [],
    private readonly twin?: LocalTwin,
  ) {}

  /** The node `name` in `dir` names (asking the origin if needed); null if there is none. */
  async lookup(dir: Node, name: string): Promise<Node | null> {
    const known = this.tree.child(dir, name);
    if (known !== undefined) return known;
    if (dir.listed || dir.originPath === undefined) return null;
    const originDir = dir.originPath;
    return this.lookups.run(`${dir.ino}/${name}`, async () => {
      let st: OriginStat | undefined;
      const path = childPath(originDir, name);
      try {
        st = await this.engine.origin.lstat(path);
      } catch (err) {
        if (!isNotFound(err)) originFailure(`lstat ${path}`, err);
      }
      // The process may have created or removed the name meanwhile: its answer wins.
      const now = this.tree.child(dir, name);
      if (now !== undefined) return now;
      if (!st) {
        this.tree.setEntry(dir, name, 0);
        return null;
      }
      return this.found(dir, name, st);
    });
  }

  /** Makes a node for an origin entry and names it. */
  private found(dir: Node, name: string, st: OriginStat): Node {
    const originPath = childPath(dir.originPath!, name);
    const mtime = timespecFromMs(st.mtimeMs);
    const base = {
      uid: st.uid,
      gid: st.gid,
      atime: st.atimeMs === undefined ? mtime : timespecFromMs(st.atimeMs),
      mtime,
      ctime: mtime,
      originPath,
      ...(dir.onReference ? { onReference: true } : {}),
    };
    const type = st.mode & S_IFMT;
    const extra =
      type === S_IFDIR
        ? { listed: false }
        : type === S_IFREG
          ? {
              size: st.size,
              originMtimeMs: st.mtimeMs,
              policy: resolvePolicy(originPath, this.rules),
            }
          : {};
    const n = this.tree.create(dir.ino, st.mode, { ...base, ...extra });
    this.tree.setEntry(dir, name, n.ino);
    if (n.policy === "eager") void this.fileId(n).catch(() => {});
    return n;
  }

  /** Lists a lazy directory on the origin once (and its own attributes, if not known yet). */
  async list(dir: Node): Promise<void> {
    if (dir.originPath === undefined || (dir.listed && !dir.unstatted)) return;
    const path = dir.originPath;
    return this.lists.run(dir.ino, async () => {
      try {
        if (dir.unstatted) {
          const st = await this.engine.origin.stat(path);
          if (st.isDirectory && dir.unstatted) {
            dir.mode = S_IFDIR | (st.mode & 0o7777);
            dir.uid = st.uid;
            dir.gid = st.gid;
            dir.mtime = dir.ctime = timespecFromMs(st.mtimeMs);
            dir.atime = st.atimeMs === undefined ? dir.mtime : timespecFromMs(st.atimeMs);
          }
        }
        if (!dir.listed) {
          for (const e of await this.engine.origin.readdir(path)) {
            // A listing names entries of this directory only: `..`, `a/b` or a NUL is refused.
            if (!isEntryName(e.name)) {
              log.warn("the origin lists a name that is not a file name; ignoring it", {
                path,
                name: e.name,
              });
              continue;
            }
            if (this.tree.child(dir, e.name) === undefined) this.found(dir, e.name, e.stat);
          }
        }
      } catch (err) {
        if (!isNotFound(err)) originFailure(`readdir ${path}`, err);
        log.warn("lazy directory not on the origin; serving it empty", { path });
      }
      dir.listed = true;
      dir.unstatted = undefined;
      this.tree.save(dir);
      this.engine.checkIndependent();
    });
  }

  /** Reads a lazy directory's own attributes from the origin if not known yet. */
  async attrs(n: Node): Promise<void> {
    if (n.unstatted) await this.list(n);
  }

  /** The engine id of a regular file, handing a file found on the origin to the engine once. */
  fileId(n: Node): Promise<string> {
    if (n.fileId !== undefined) return Promise.resolve(n.fileId);
    if (!isReg(n)) return Promise.reject(new FuseError(isDir(n) ? "EISDIR" : "EINVAL"));
    return this.files.run(n.ino, async () => {
      const id = `lazy:${n.ino}`;
      const policy = n.policy ?? "lazy";
      const size = n.size ?? 0;
      const mtimeMs = n.originMtimeMs ?? 0;
      // In the whole view, the target's own identical copy serves it without a fetch.
      const fetched = policy === "lazy" || policy === "eager" || policy === "local";
      const localPath =
        n.onReference && fetched && this.twin
          ? await this.twin(n.originPath!, size, mtimeMs).catch(() => undefined)
          : undefined;
      await this.engine.addFile({
        id,
        originPath: n.originPath!,
        size,
        mtimeMs,
        mode: n.mode,
        uid: n.uid,
        gid: n.gid,
        // A file found later has no copy of its own on the target unless its twin was found.
        ...(localPath
          ? { policy: "local" as const, localPath }
          : { policy: policy === "local" ? "lazy" : policy }),
      });
      n.fileId = id;
      n.size = undefined;
      this.tree.save(n);
      this.engine.checkIndependent();
      return id;
    });
  }

  /** A symbolic link's target (read from the origin once). */
  readlink(n: Node): Promise<string> {
    if (!isLink(n)) return Promise.reject(new FuseError("EINVAL"));
    if (n.target !== undefined) return Promise.resolve(n.target);
    const path = n.originPath!;
    return this.links.run(n.ino, async () => {
      try {
        n.target = await this.engine.origin.readlink(path);
      } catch (err) {
        originFailure(`readlink ${path}`, err);
      }
      this.tree.save(n);
      this.engine.checkIndependent();
      return n.target;
    });
  }

  progress(): CrawlProgress {
    return {
      crawled: this.tree.listedDirs.size,
      uncrawled: this.tree.unlistedDirs.size,
      pendingFiles: this.tree.pendingFiles.size,
    };
  }

  /** Lists every lazy directory and hands every file found to the engine. */
  async crawl(pace: () => Promise<void>): Promise<void> {
    while (!this.closed) {
      const dir = this.tree.unlistedDirs.values().next();
      if (!dir.done) {
        await pace();
        const n = this.tree.get(dir.value);
        if (n) await this.list(n);
        else this.tree.unlistedDirs.delete(dir.value);
        continue;
      }
      const file = this.tree.pendingFiles.values().next();
      if (file.done) return;
      await pace();
      const n = this.tree.get(file.value);
      if (!n || !unmaterialized(n)) this.tree.pendingFiles.delete(file.value);
      else if (isLink(n)) await this.readlink(n);
      else await this.fileId(n);
    }
  }

  close(): void {
    this.closed = true;
  }
}
