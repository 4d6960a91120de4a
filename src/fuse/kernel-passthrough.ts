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
 * - backing ids are per connection; a server that takes over the device of a dead one does
 *   not know the ids it left (see the README).
 * Anything that stops passthrough (koffi missing, kernel without it, EPERM: the server lacks
 * CAP_SYS_ADMIN) leaves the pure-Node path; `status()` says why.
 */
import { errorMessage } from "../common/errors.js";
import { logger } from "../common/log.js";
import { type BackingIoctls, backingIoctls } from "./backing-ioctl.js";
import { Init } from "./protocol.js";

const log = logger("fuse");

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
  handles: Set<number>;
}

export class KernelPassthrough {
  private ioctls?: BackingIoctls;
  private enabled = false;
  private reason = "not asked for";
  private opens = 0;
  private fallbacks = 0;
  private readonly backing = new Map<number, InodeBacking>();
  /** Opens without passthrough per inode (the inode is then in caching mode). */
  private readonly cached = new Map<number, number>();

  constructor(private readonly devFd: number) {}

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
    if (b && backingFd !== undefined && this.enabled) {
      b.handles.add(fh);
      this.opens++;
      return b.id;
    }
    if (!wanted || backingFd === undefined) {
      if (b) log.warn("open without passthrough of an inode open with it", { ino });
      this.cached.set(ino, (this.cached.get(ino) ?? 0) + 1);
      return undefined;
    }
    if (!this.enabled || (this.cached.get(ino) ?? 0) > 0) return this.fallback(ino);
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
      return this.fallback(ino);
    }
    this.backing.set(ino, { id, handles: new Set([fh]) });
    this.opens++;
    return id;
  }

  private fallback(ino: number): undefined {
    this.fallbacks++;
    this.cached.set(ino, (this.cached.get(ino) ?? 0) + 1);
    return undefined;
  }

  /** RELEASE of `fh` on `ino`: the last passthrough handle of an inode frees its backing id. */
  released(ino: number, fh: number): void {
    const b = this.backing.get(ino);
    if (b?.handles.delete(fh)) {
      if (b.handles.size > 0) return;
      this.backing.delete(ino);
      try {
        this.ioctls?.close(this.devFd, b.id);
      } catch (err) {
        log.debug("backing close failed", { ino, error: errorMessage(err) });
      }
      return;
    }
    const left = (this.cached.get(ino) ?? 1) - 1;
    if (left > 0) this.cached.set(ino, left);
    else this.cached.delete(ino);
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
