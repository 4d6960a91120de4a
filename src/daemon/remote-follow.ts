/**
 * Files under policy `remote` follow the origin's live content. Their size and mtime there
 * are polled; when they change, the file is touched (mtime only) through the mount, which the
 * kernel reports to inotify watchers as IN_MODIFY: a `tail -f` restored with its watch wakes
 * up, fstat()s the new size and reads the new lines, as it would on the origin. (FUSE has no
 * way to raise an inotify event from the server; this is the change seen through the VFS.)
 */
import { execFile } from "node:child_process";
import { posix } from "node:path";
import { logger } from "../common/log.js";
import type { Engine } from "../fetch/index.js";
import type { Manifest } from "../migration/index.js";

const log = logger("follow");

export class RemoteFollower {
  private readonly last = new Map<string, string>();
  private timer?: NodeJS.Timeout;
  private busy = false;

  constructor(
    private readonly engine: Engine,
    private manifest: Manifest,
    private readonly intervalMs = 1000,
  ) {}

  /** Follows the remote files of `manifest` (again, after the plan was reloaded). */
  follow(manifest: Manifest): void {
    this.manifest = manifest;
    const remote = manifest.files.some((f) => f.served && f.policy === "remote");
    if (!remote || this.timer) return;
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private async tick(): Promise<void> {
    if (this.busy) return; // a slow origin: never pile up polls
    this.busy = true;
    try {
      for (const f of this.manifest.files) {
        if (!f.served || f.policy !== "remote" || f.type !== "file") continue;
        const now = await this.engine.refreshRemote(f.targetPath).catch(() => undefined);
        if (!now) continue;
        const seen = `${now.size}:${now.mtimeMs}`;
        const before = this.last.get(f.targetPath);
        this.last.set(f.targetPath, seen);
        if (before === undefined || before === seen) continue;
        await touchMtime(posix.join(this.manifest.mountpoint, f.targetPath), now.mtimeMs);
      }
    } finally {
      this.busy = false;
    }
  }
}

/** `touch -m`: sets only the mtime (utimensat with atime omitted), which is IN_MODIFY. */
function touchMtime(path: string, mtimeMs: number): Promise<void> {
  const stamp = `@${(mtimeMs / 1000).toFixed(3)}`;
  return new Promise((resolve) => {
    execFile("touch", ["-m", "-c", "-d", stamp, "--", path], (err) => {
      if (err) log.debug("touch failed", { path, error: err.message });
      resolve();
    });
  });
}
