/**
 * Chained migration, the new target's side (C, migrating from B a process that B got from
 * A): an origin that shows C the process's view on B and takes every block from where it is.
 *
 * - Names and attributes (stat, readdir, readlink) come from B as the process saw them: a path
 *   under one of B's bind roots is looked up in B's LazyFS mount (B's daemon resolves what B
 *   never looked up against A), any other path is B's own.
 * - Content: for a file B's LazyFS serves, B's block states (its store, read over SFTP after
 *   the dump, when they no longer change but for prefetch) decide per block: a block B holds
 *   (fetched, or written there) is read from B's store's data file directly, a block B never
 *   fetched straight from A, at the file's path there. Files B's LazyFS does not hold, and
 *   `remote` files (whose truth is A's live content, kept by B's daemon) are read through the
 *   view.
 *
 * Once C is independent, C closes both connections: A and B may go away.
 */
import { errorMessage } from "../common/errors.js";
import { logger } from "../common/log.js";
import { isUnder } from "../common/paths.js";
import { shq } from "../common/shell.js";
import type { Node } from "../lazy/index.js";
import { JOURNAL_FILES, treeFromJournal } from "../lazy/index.js";
import {
  type ChainSource,
  type Manifest,
  openOrigin,
  type SshOptions,
  sftpOptions,
} from "../migration/index.js";
import {
  type OriginDirEntry,
  type OriginStat,
  type OutagePolicy,
  type ReadPartCallback,
  SftpOrigin,
  type SftpOriginOptions,
} from "../origin/index.js";
import { ABSENT, parseBlockStates, storeFilePaths } from "../store/index.js";

const log = logger("chain");

/** A path B's tree snapshot does not know is looked up again in a newer one at most this often. */
const TREE_REFRESH_MS = 1000;

type Route =
  | { kind: "view" }
  | {
      kind: "blocks";
      /** B's data file of it. */
      data: string;
      /** Its path on A. */
      firstPath: string;
      states: Uint8Array;
      size: number;
    };

/** Where B shows `path` of the process's view, in B's own namespace. */
export function viewPathOn(chain: ChainSource, path: string): string {
  if (isUnder(path, chain.mountpoint)) return path;
  if (chain.binds.some((b) => isUnder(path, b))) return `${chain.mountpoint}${path}`;
  return path;
}

/** The path of `path` in B's LazyFS tree, if B's LazyFS serves it. */
function treePathOn(chain: ChainSource, path: string): string | undefined {
  if (isUnder(path, chain.mountpoint)) return path.slice(chain.mountpoint.length) || "/";
  return chain.binds.some((b) => isUnder(path, b)) ? path : undefined;
}

export class ChainOrigin extends SftpOrigin {
  private first?: SftpOrigin;
  private tree?: Promise<Map<string, Node>>;
  private treeLoadedAt = 0;
  private readonly routes = new Map<string, Promise<Route>>();
  /** File bytes read from B's store, straight from A, and through B's view. */
  readonly bytes = { fromStore: 0, fromFirst: 0, fromView: 0 };

  constructor(
    options: SftpOriginOptions,
    readonly chain: ChainSource,
    private readonly openFirst: () => SftpOrigin,
  ) {
    super(options);
  }

  /** Where B shows `path` of the process's view. */
  viewPath(path: string): string {
    return viewPathOn(this.chain, path);
  }

  override stat(path: string): Promise<OriginStat> {
    return super.stat(this.viewPath(path));
  }
  override lstat(path: string): Promise<OriginStat> {
    return super.lstat(this.viewPath(path));
  }
  override readlink(path: string): Promise<string> {
    return super.readlink(this.viewPath(path));
  }
  override readdir(path: string): Promise<OriginDirEntry[]> {
    return super.readdir(this.viewPath(path));
  }
  override write(path: string, offset: number, data: Buffer): Promise<void> {
    return super.write(this.viewPath(path), offset, data);
  }
  override truncate(path: string, size: number): Promise<void> {
    return super.truncate(this.viewPath(path), size);
  }

  /** A file of B's own file system, as it is (B's store, B's journal). */
  private async rawFile(path: string): Promise<Buffer> {
    const st = await super.stat(path);
    return super.read(path, 0, st.size);
  }

  private loadTree(): Promise<Map<string, Node>> {
    this.tree ??= (async () => {
      this.treeLoadedAt = Date.now();
      const files: Partial<Record<(typeof JOURNAL_FILES)[number], Buffer>> = {};
      for (const name of JOURNAL_FILES) {
        files[name] = await this.rawFile(`${this.chain.cacheDir}/${name}`).catch(() => undefined);
      }
      const entries = await treeFromJournal(files);
      const tree = new Map(entries.map((e) => [e.path, e.node]));
      const served = entries.filter((e) => e.node.fileId !== undefined).map((e) => e.path);
      // B's daemon commits block states and sizes a little after the data: an fsync through
      // its mount makes them durable, so that the states read next are the whole truth.
      if (!(await this.syncOnB(served))) return new Map<string, Node>();
      return tree;
    })();
    this.tree.catch(() => {
      this.tree = undefined;
    });
    return this.tree;
  }

  /** `sync FILE...` (fsync each) through B's mount; false if that failed. */
  private async syncOnB(treePaths: readonly string[]): Promise<boolean> {
    for (let i = 0; i < treePaths.length; i += 200) {
      const batch = treePaths.slice(i, i + 200).map((p) => shq(`${this.chain.mountpoint}${p}`));
      const r = await this.exec(`sync -- ${batch.join(" ")}`).catch((err: unknown) => ({
        code: -1,
        stderr: errorMessage(err),
      }));
      if (r.code !== 0) {
        log.warn("cannot flush the origin's block states; every read goes through its LazyFS", {
          origin: this.name,
          error: r.stderr.trim(),
        });
        return false;
      }
    }
    return true;
  }

  private routeOf(path: string): Promise<Route> {
    let r = this.routes.get(path);
    if (!r) {
      r = this.findRoute(path);
      this.routes.set(path, r);
      r.catch(() => this.routes.delete(path));
    }
    return r;
  }

  private async findRoute(path: string): Promise<Route> {
    const inTree = treePathOn(this.chain, path);
    if (inTree === undefined) return { kind: "view" };
    let node = (await this.loadTree()).get(inTree);
    if (!node && Date.now() - this.treeLoadedAt > TREE_REFRESH_MS) {
      // A name B learnt (from A) after the snapshot, e.g. looked up through B's view by us.
      this.tree = undefined;
      node = (await this.loadTree()).get(inTree);
    }
    if (!node?.fileId || node.policy === "remote") return { kind: "view" };
    const store = storeFilePaths(this.chain.cacheDir, node.fileId);
    const meta = JSON.parse((await this.rawFile(store.meta)).toString("utf8")) as {
      originPath: string;
      policy: string;
    };
    if (meta.policy === "remote" || meta.policy === "scrub" || meta.policy === "local") {
      return { kind: "view" };
    }
    const parsed = parseBlockStates(await this.rawFile(store.state), this.chain.blockSize);
    if (!parsed) return { kind: "view" };
    return {
      kind: "blocks",
      data: store.data,
      firstPath: meta.originPath,
      states: parsed.states,
      size: parsed.size,
    };
  }

  private firstOrigin(): SftpOrigin {
    this.first ??= this.openFirst();
    return this.first;
  }

  override async read(
    path: string,
    offset: number,
    length: number,
    _onPart?: ReadPartCallback,
  ): Promise<Buffer> {
    const route = await this.routeOf(path);
    if (route.kind === "view") {
      const got = await super.read(this.viewPath(path), offset, length);
      this.bytes.fromView += got.length;
      return got;
    }
    const end = Math.min(offset + length, route.size);
    if (end <= offset) return Buffer.alloc(0);
    const bs = this.chain.blockSize;
    // Runs of blocks with one source each, read in parallel.
    const runs: { from: number; to: number; onB: boolean }[] = [];
    for (let pos = offset; pos < end; ) {
      const i = Math.floor(pos / bs);
      const onB = route.states[i] !== ABSENT;
      const to = Math.min(end, (i + 1) * bs);
      const last = runs[runs.length - 1];
      if (last && last.onB === onB && last.to === pos) last.to = to;
      else runs.push({ from: pos, to, onB });
      pos = to;
    }
    const parts = await Promise.all(
      runs.map(async (r) => {
        const len = r.to - r.from;
        const got = r.onB
          ? await super.read(route.data, r.from, len)
          : await this.firstOrigin().read(route.firstPath, r.from, len);
        if (r.onB) this.bytes.fromStore += got.length;
        else this.bytes.fromFirst += got.length;
        if (got.length >= len) return got.subarray(0, len);
        // A sparse data file (or A's file) ends early: the rest reads as zeros.
        return Buffer.concat([got, Buffer.alloc(len - got.length)]);
      }),
    );
    return Buffer.concat(parts);
  }

  override async close(): Promise<void> {
    if (this.bytes.fromStore + this.bytes.fromFirst + this.bytes.fromView > 0) {
      log.info("chained origin closed", {
        origin: this.name,
        firstOrigin: this.chain.firstOrigin,
        bytesFromOriginStore: this.bytes.fromStore,
        bytesFromFirstOrigin: this.bytes.fromFirst,
        bytesThroughOriginView: this.bytes.fromView,
      });
    }
    await this.first?.close().catch(() => {});
    this.first = undefined;
    await super.close();
  }
}

/** The chain origin for a manifest's origin (B) and chain facts, with the user's SSH options. */
export function openChainOrigin(
  url: string,
  ssh: SshOptions,
  chain: ChainSource,
  outage?: OutagePolicy,
): ChainOrigin {
  return new ChainOrigin(sftpOptions(url, ssh, outage), chain, () =>
    openOrigin(chain.firstOrigin, ssh, outage),
  );
}

/** The origin a daemon serves from: the chain origin when the migration continues another. */
export function openServingOrigin(
  m: Pick<Manifest, "origin" | "ssh" | "chain">,
  outage?: OutagePolicy,
): SftpOrigin {
  return m.chain
    ? openChainOrigin(m.origin, m.ssh, m.chain, outage)
    : openOrigin(m.origin, m.ssh, outage);
}
