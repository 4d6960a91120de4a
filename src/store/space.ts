/**
 * Whether the cache's disk is full, as a state rather than a stream of errors: the first
 * write that fails with ENOSPC (or EDQUOT) starts it, with one warning in the log; requests
 * that fail meanwhile are counted; it ends, with one line, once the file system has room
 * again (checked every second while full, and when a write that needed space succeeds: one
 * that fits in the last bytes does not end it, so that a nearly full disk does not flap). `status`
 * and metrics show it.
 */
import { statfsSync } from "node:fs";
import { errnoCode } from "../common/errors.js";
import { logger } from "../common/log.js";

const log = logger("store");

const POLL_MS = 1000;

/** What `status` shows of the cache's disk. */
export interface CacheDiskStatus {
  /** Writes to the cache fail for lack of space now. */
  full: boolean;
  /** Since when (ms since the epoch) while full, else null. */
  fullSinceMs: number | null;
  /** Requests of the process that failed with ENOSPC since it became full (this time). */
  failedRequests: number;
  /** Requests that failed with ENOSPC since the daemon started, and how often it was full. */
  failedRequestsTotal: number;
  fullEpisodes: number;
  /** Free bytes for the daemon on the cache's file system (statfs), null if unknown. */
  freeBytes: number | null;
}

/** Whether `err` says the disk (or the user's quota on it) is full. */
export function isNoSpace(err: unknown): boolean {
  const code = errnoCode(err) ?? errnoCode((err as { cause?: unknown } | null)?.cause);
  return code === "ENOSPC" || code === "EDQUOT";
}

export class CacheSpace {
  private fullSinceMs: number | null = null;
  private failed = 0;
  private failedTotal = 0;
  private episodes = 0;
  private poll?: NodeJS.Timeout;
  private readonly listeners: (() => void)[] = [];

  /**
   * `dir`: the cache directory; `roomBytes`: free space that counts as room again (a block,
   * so that the next fill fits).
   */
  constructor(
    private readonly dir: string,
    private readonly roomBytes: number,
  ) {}

  /** A write to the cache failed: if for lack of space, the disk is full (from now). */
  writeFailed(err: unknown): void {
    if (!isNoSpace(err) || this.fullSinceMs !== null) return;
    this.fullSinceMs = Date.now();
    this.episodes++;
    this.failed = 0;
    log.warn(
      "the cache disk is full: reads of data not yet here fail with ENOSPC until space is freed",
      {
        dir: this.dir,
        freeBytes: this.freeBytes(),
      },
    );
    this.poll = setInterval(() => this.wrote(), POLL_MS);
    this.poll.unref();
  }

  /** A request of the process failed with `err`: counted if for lack of space. */
  requestFailed(err: unknown): void {
    if (!isNoSpace(err)) return;
    this.writeFailed(err);
    this.failed++;
    this.failedTotal++;
  }

  /** A write that needed space succeeded: the disk is not full any more, if it has room. */
  wrote(): void {
    if (this.fullSinceMs === null) return;
    const free = this.freeBytes();
    if (free !== null && free < this.roomBytes) return;
    log.warn("the cache disk has space again", {
      dir: this.dir,
      fullForMs: Date.now() - this.fullSinceMs,
      failedRequests: this.failed,
      freeBytes: this.freeBytes(),
    });
    this.fullSinceMs = null;
    clearInterval(this.poll);
    this.poll = undefined;
    for (const f of this.listeners) f();
  }

  /** Calls `f` each time the disk has space again (e.g. to resume prefetch). */
  onRoom(f: () => void): void {
    this.listeners.push(f);
  }

  get full(): boolean {
    return this.fullSinceMs !== null;
  }

  freeBytes(): number | null {
    try {
      const s = statfsSync(this.dir);
      // Root may use the blocks a file system reserves for it (ext4: 5 %).
      return (process.getuid?.() === 0 ? s.bfree : s.bavail) * s.bsize;
    } catch {
      return null;
    }
  }

  status(): CacheDiskStatus {
    return {
      full: this.full,
      fullSinceMs: this.fullSinceMs,
      failedRequests: this.full ? this.failed : 0,
      failedRequestsTotal: this.failedTotal,
      fullEpisodes: this.episodes,
      freeBytes: this.freeBytes(),
    };
  }

  close(): void {
    clearInterval(this.poll);
    this.poll = undefined;
  }
}
