/**
 * Kernel passthrough (FUSE_PASSTHROUGH, Linux >= 6.9) for one FUSE connection: an open whose
 * reply asks for it (`OpenReply.passthrough` with a `backingFd`) is answered with
 * FOPEN_PASSTHROUGH and a backing id, and from then on the kernel reads, writes and maps that
 * open file from the backing file itself; no READ or WRITE for it reaches the server.
 *
 * The kernel's rules this keeps:
 * - an inode is either in passthrough mode or in caching mode: while it has opens without
 *   passthrough, a passthrough open would fail (EIO), so such an open falls back to serving
 *   `backingFd` from the server (the session's fast path);
 * - all passthrough opens of one inode must share one backing (one id): the id is kept while
 *   the inode has passthrough opens and closed after its last RELEASE;
 * - backing ids are per connection: a server that takes over the device of a dead one must
 *   answer opens of inodes the dead one left in passthrough mode with the same id, and must
 *   not try passthrough on inodes it left open in caching mode. With a `stateFile` the table
 *   (inode -> id and handles, inode -> handles without passthrough) is written before every
 *   reply that changes it, and the next server reads it back (`resume`). Its disk may be
 *   full: the table is padded to whole pages, so that a new one that finds no room for a
 *   fresh file is written over the old one's bytes, and one that does not fit is written
 *   again every second until it does; the server never stops for it.
 * Anything that stops passthrough (koffi missing, kernel without it, EPERM: the server lacks
 * CAP_SYS_ADMIN) leaves the pure-Node path; `status()` says why.
 */
import {
  closeSync,
  constants,
  fstatSync,
  openSync,
  readFileSync,
  renameSync,
  writeSync,
} from "node:fs";
import { errorMessage } from "../common/errors.js";
import { logger } from "../common/log.js";
import { createExclusiveSync, unlinkStaleSync } from "../common/private-files.js";
import { type BackingIoctls, backingIoctls } from "./backing-ioctl.js";
import { Init } from "./protocol.js";

const log = logger("fuse");

const PAGE = 4096;
const RETRY_MS = 1000;

/** Writes all of `bytes` at `position`; a short write (no room) is an ENOSPC error. */
function writeWhole(fd: number, bytes: Buffer, position: number): void {
  if (writeSync(fd, bytes, 0, bytes.length, position) !== bytes.length) {
    throw Object.assign(new Error("short write"), { code: "ENOSPC" });
  }
}

export interface PassthroughStatus {
  /** Negotiated with the kernel and usable. */
  enabled: boolean;
  /** Why it is off (when not enabled), or why it stopped. */
  reason?: string;
  /** Opens served by the kernel from a backing file. */
  opens: number;
  /** Opens that asked for passthrough and were served by the server instead. */
  fallbacks: number;
  /** Backing ids registered now. */
  backingIds: number;
}

interface InodeBacking {
  id: number;
  /** Its passthrough handles (a list: a file system may reuse one handle number). */
  handles: number[];
}

/** The table a server hands to the next one: [ino, id, handles] and [ino, handles]. */
export interface PassthroughState {
  backing: [number, number, number[]][];
  cached: [number, number[]][];
}

export class KernelPassthrough {
  private ioctls?: BackingIoctls;
  private enabled = false;
  private reason = "not asked for";
  private opens = 0;
  private fallbacks = 0;
  private readonly backing = new Map<number, InodeBacking>();
  /**
   * Open handles without passthrough per inode (the inode is then in caching mode); a list,
   * since a file system may give every open the same handle.
   */
  private readonly cached = new Map<number, number[]>();
  /** The last save failed (warned once); `retry` writes the table again. */
  private saveFailing = false;
  private retry?: NodeJS.Timeout;

  constructor(
    private readonly devFd: number,
    /** Where the table is kept for a server taking the connection over (see above). */
    private readonly stateFile?: string,
  ) {}

  /**
   * A server taking an initialised connection over: passthrough is on if the first server
   * negotiated it, and the table its predecessors left (stateFile) is taken over.
   */
  resume(kernelFlags: bigint, flags: bigint): void {
    if (flags & Init.PASSTHROUGH) this.negotiate(kernelFlags);
    else this.reason = "not negotiated by the first server of this connection";
    if (!this.stateFile) return;
    let state: PassthroughState | undefined;
    try {
      state = JSON.parse(readFileSync(this.stateFile, "utf8")) as PassthroughState;
    } catch (err) {
      if ((err as { code?: string }).code !== "ENOENT") {
        log.warn("cannot read the passthrough table of the previous server", {
          file: this.stateFile,
          error: errorMessage(err),
        });
      }
      return;
    }
    for (const [ino, id, fhs] of state.backing) this.backing.set(ino, { id, handles: [...fhs] });
    for (const [ino, fhs] of state.cached) this.cached.set(ino, [...fhs]);
    log.info("took over the passthrough table", {
      backingIds: this.backing.size,
      cachedInodes: this.cached.size,
    });
  }

  /** Writes the table (before the reply that changed it goes out). */
  private save(): void {
    // Without passthrough on this connection the table means nothing to a successor: no
    // write on the open path then.
    if (!this.stateFile || (!this.enabled && this.backing.size === 0)) return;
    const state: PassthroughState = {
      backing: [...this.backing].map(([ino, b]) => [ino, b.id, [...b.handles]]),
      cached: [...this.cached],
    };
    try {
      this.writeTable(this.stateFile, JSON.stringify(state));
    } catch (err) {
      if (!this.saveFailing) {
        log.warn("cannot save the passthrough table; retrying every second", {
          file: this.stateFile,
          error: errorMessage(err),
        });
      }
      this.saveFailing = true;
      this.retry ??= setTimeout(() => {
        this.retry = undefined;
        this.save();
      }, RETRY_MS);
      this.retry.unref();
      return;
    }
    if (this.saveFailing)
      log.info("the passthrough table is saved again", { file: this.stateFile });
    this.saveFailing = false;
    clearTimeout(this.retry);
    this.retry = undefined;
  }

  /**
   * A new file renamed over the table, padded (JSON allows trailing blanks) to whole pages;
   * without room for it, written over the old table's bytes if it fits there.
   */
  private writeTable(file: string, json: string): void {
    const tmp = `${file}.tmp`;
    try {
      unlinkStaleSync(tmp);
      const fd = createExclusiveSync(tmp);
      try {
        writeWhole(fd, Buffer.from(json.padEnd(Math.ceil((json.length + 1) / PAGE) * PAGE)), 0);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, file);
    } catch (err) {
      try {
        unlinkStaleSync(tmp);
      } catch {
        // left for the next save
      }
      let fd: number;
      try {
        fd = openSync(file, constants.O_WRONLY | constants.O_NOFOLLOW);
      } catch {
        throw err; // no table to write over
      }
      try {
        const size = fstatSync(fd).size;
        if (json.length > size) throw err;
        writeWhole(fd, Buffer.from(json.padEnd(size)), 0);
      } finally {
        closeSync(fd);
      }
    }
  }

  /**
   * INIT: whether to ask the kernel for passthrough, given what it offers. `disabled` is the
   * caller's reason to stay without it (option off, environment).
   */
  negotiate(kernelFlags: bigint, disabled?: string): boolean {
    if (disabled) {
      this.reason = disabled;
      return false;
    }
    if (!(kernelFlags & Init.PASSTHROUGH)) {
      this.reason = "the kernel does not offer FUSE_PASSTHROUGH (Linux >= 6.9 needed)";
      return false;
    }
    const { ioctls, reason } = backingIoctls();
    if (!ioctls) {
      this.reason = reason ?? "ioctl unavailable";
      return false;
    }
    this.ioctls = ioctls;
    this.enabled = true;
    this.reason = "";
    return true;
  }

  /**
   * An OPEN/CREATE reply for inode `ino` with handle `fh` is about to go out. Returns the
   * backing id to send with FOPEN_PASSTHROUGH, or undefined to serve it without.
   */
  opened(
    ino: number,
    fh: number,
    backingFd: number | undefined,
    wanted: boolean,
  ): number | undefined {
    const b = this.backing.get(ino);
    // An inode in passthrough mode accepts only passthrough opens: reuse its backing.
    // (It needs no ioctl: the id is registered already, perhaps by an earlier server.)
    if (b && backingFd !== undefined) {
      b.handles.push(fh);
      this.opens++;
      this.save();
      return b.id;
    }
    if (!wanted || backingFd === undefined) {
      if (b) log.warn("open without passthrough of an inode open with it", { ino });
      this.addCached(ino, fh);
      return undefined;
    }
    if (!this.enabled || this.cached.has(ino)) return this.fallback(ino, fh);
    let id: number;
    try {
      id = this.ioctls!.open(this.devFd, backingFd);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === "EPERM" || code === "ENOTTY" || code === "EINVAL") {
        // Not for this server at all (no CAP_SYS_ADMIN, or the connection refuses).
        this.enabled = false;
        this.reason = `${errorMessage(err)}${code === "EPERM" ? " (the server needs CAP_SYS_ADMIN)" : ""}`;
        log.warn("kernel passthrough off", { reason: this.reason });
      } else {
        log.debug("passthrough refused for one file", { ino, error: errorMessage(err) });
      }
      return this.fallback(ino, fh);
    }
    this.backing.set(ino, { id, handles: [fh] });
    this.opens++;
    this.save();
    return id;
  }

  private addCached(ino: number, fh: number): void {
    const fhs = this.cached.get(ino);
    if (fhs) fhs.push(fh);
    else this.cached.set(ino, [fh]);
    this.save();
  }

  private fallback(ino: number, fh: number): undefined {
    this.fallbacks++;
    this.addCached(ino, fh);
    return undefined;
  }

  /** RELEASE of `fh` on `ino`: the last passthrough handle of an inode frees its backing id. */
  released(ino: number, fh: number): void {
    const b = this.backing.get(ino);
    const at = b?.handles.indexOf(fh) ?? -1;
    if (b && at >= 0) {
      b.handles.splice(at, 1);
      if (b.handles.length > 0) {
        this.save();
        return;
      }
      this.backing.delete(ino);
      this.save();
      try {
        // An id left by an earlier server is closed here too: ioctls load on first use.
        (this.ioctls ?? backingIoctls().ioctls)?.close(this.devFd, b.id);
      } catch (err) {
        log.debug("backing close failed", { ino, error: errorMessage(err) });
      }
      return;
    }
    const fhs = this.cached.get(ino);
    const atCached = fhs?.indexOf(fh) ?? -1;
    if (fhs && atCached >= 0) {
      fhs.splice(atCached, 1);
      if (fhs.length === 0) this.cached.delete(ino);
      this.save();
    }
  }

  /** Inodes in passthrough mode now (with an earlier server's ids after `resume`). */
  passthroughInodes(): number[] {
    return [...this.backing.keys()];
  }

  /** Whether `ino` is open with passthrough now. */
  isPassthrough(ino: number): boolean {
    return this.backing.has(ino);
  }

  status(): PassthroughStatus {
    return {
      enabled: this.enabled,
      ...(this.enabled ? {} : { reason: this.reason }),
      opens: this.opens,
      fallbacks: this.fallbacks,
      backingIds: this.backing.size,
    };
  }
}
