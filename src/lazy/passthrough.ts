/**
 * Fully local files served by the kernel (FUSE passthrough): a file none of whose bytes is
 * left on the origin (after independence, or created here) is opened on the store's data
 * file, which then IS its content, and the kernel reads, writes and maps it there without
 * the daemon. The daemon learns what such an open changed from the data file itself: its size
 * becomes the file's, a changed mtime marks the file written here (every block dirty, the
 * node's mtime/ctime taken from the data file, journaled) — at getattr, setattr, fsync and
 * release. A file that is not fully local, a `remote` file, or a data file whose size
 * disagrees with the store's (a crash between a write and its commit) is served as before.
 */
import fs, { type BigIntStats } from "node:fs";
import type { Engine } from "../fetch/index.js";
import { type OpenReply, statTimes } from "../fuse/index.js";
import type { Node } from "./nodes.js";

interface Handle {
  ino: number;
  id: string;
  fd: number;
  node: Node;
  /** Data file mtime when last adopted (ns). */
  mtimeNs: bigint;
}

/**
 * First handle number of passthrough opens (other LazyFS handles count up from 1, or from
 * generation x 2^32 in a restarted server); each server generation has its own range, since
 * the kernel may still hold an earlier server's handles.
 */
const FIRST_FH = 2 ** 48;
const GENERATION_FHS = 2 ** 32;

export class LocalPassthrough {
  /** Whether the session negotiated kernel passthrough (set at INIT). */
  enabled = false;
  private readonly handles = new Map<number, Handle>();
  /** The same handles per inode (getattr of an open file looks here, so no scan of all). */
  private readonly byIno = new Map<number, Set<Handle>>();
  private nextFh: number;
  /** Inodes an earlier server left in passthrough mode: their data files are the truth. */
  private readonly inherited = new Set<number>();

  constructor(
    private readonly engine: Engine,
    private readonly changed: (n: Node) => void,
    generation = 0,
  ) {
    this.nextFh = FIRST_FH + generation * GENERATION_FHS;
  }

  /**
   * A server taking over: `inos` are open in passthrough mode (by the kernel, for handles of
   * an earlier server). Each gets a handle of this server's on its data file, so that
   * getattr, opens and releases read back what the kernel writes there; the first read-back
   * takes the data file's size and times as the file's.
   */
  inherit(inos: number[], nodeOf: (ino: number) => Node | undefined): void {
    for (const ino of inos) {
      const n = nodeOf(ino);
      if (!n || n.fileId === undefined) continue;
      const dataPath = this.engine.localDataPath(n.fileId);
      if (!dataPath) continue;
      const fd = fs.openSync(dataPath, fs.constants.O_RDWR);
      this.add(this.nextFh++, { ino, id: n.fileId, fd, node: n, mtimeNs: -1n });
      this.inherited.add(ino);
    }
  }

  /** An open of `n` (file `id`) served from its data file, or undefined to serve it as before. */
  open(n: Node, id: string): OpenReply | undefined {
    if (!this.enabled || n.policy === "remote") return undefined;
    // Writes through open passthrough handles first (their size is the file's): the kernel
    // accepts only passthrough opens of an inode while it has any.
    const live = this.sync(n.ino);
    const dataPath = this.engine.localDataPath(id);
    if (!dataPath) return undefined;
    const fd = fs.openSync(dataPath, fs.constants.O_RDWR);
    const st = fs.fstatSync(fd, { bigint: true });
    if (!live && Number(st.size) !== this.engine.size(id)) {
      fs.closeSync(fd);
      return undefined;
    }
    const fh = this.nextFh++;
    this.add(fh, { ino: n.ino, id, fd, node: n, mtimeNs: st.mtimeNs });
    return { fh, backingFd: fd, passthrough: true };
  }

  private add(fh: number, h: Handle): void {
    this.handles.set(fh, h);
    const same = this.byIno.get(h.ino);
    if (same) same.add(h);
    else this.byIno.set(h.ino, new Set([h]));
  }

  /** Whether `fh` is a passthrough open. */
  has(fh: number): boolean {
    return this.handles.has(fh);
  }

  /**
   * Takes in what passthrough opens of inode `ino` changed in its data file; false if it has
   * none.
   */
  sync(ino: number): boolean {
    const [h] = this.byIno.get(ino) ?? [];
    if (!h) return false;
    this.adopt(h, fs.fstatSync(h.fd, { bigint: true }));
    return true;
  }

  /** RELEASE of a passthrough open: adopt its changes, close the data file fd. */
  release(fh: number, ino: number): void {
    const h = this.handles.get(fh);
    if (!h) {
      // A handle of an earlier server: what it wrote is in the data file.
      if (this.inherited.has(ino)) this.sync(ino);
      return;
    }
    this.handles.delete(fh);
    const same = this.byIno.get(h.ino);
    same?.delete(h);
    if (same?.size === 0) this.byIno.delete(h.ino);
    try {
      this.adopt(h, fs.fstatSync(h.fd, { bigint: true }));
    } finally {
      fs.closeSync(h.fd);
    }
  }

  /** Closes every data file fd (session end). */
  close(): void {
    for (const [fh, h] of [...this.handles]) this.release(fh, h.ino);
  }

  private adopt(h: Handle, st: BigIntStats): void {
    const size = Number(st.size);
    const written = st.mtimeNs !== h.mtimeNs;
    if (!written && size === this.engine.size(h.id)) return;
    if (this.engine.hasFile(h.id)) this.engine.adoptLocalChanges(h.id, size, written);
    if (written) {
      for (const other of this.byIno.get(h.ino) ?? []) other.mtimeNs = st.mtimeNs;
      const t = statTimes(st);
      h.node.mtime = t.mtime;
      h.node.ctime = t.ctime;
      this.changed(h.node);
    }
  }
}
