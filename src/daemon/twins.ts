/**
 * Identical copies on the target (the whole view): a file of the origin's tree that the
 * target also has at the same path is served from the target's copy, without a fetch, when
 * it is the same file. Judged once per file, at its first open: the same size and mtime
 * (cheap, rules out most) and then the same SHA-256, computed on the origin over the
 * migration's SSH connection (`sha256sum`, one exec channel, at most a few at a time) and
 * here at once. A file whose size or mtime differ is never hashed; a hash that cannot be had
 * means "not identical" (the file is fetched). The engine checks size and mtime again when it
 * opens the copy (fetch/source.ts).
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat } from "node:fs/promises";
import { viewPathOn } from "../chain/index.js";
import { errorMessage } from "../common/errors.js";
import { logger } from "../common/log.js";
import { shq } from "../common/shell.js";
import { sameMtime } from "../fetch/index.js";
import type { LocalTwin } from "../lazy/index.js";
import { type Manifest, mapPath } from "../migration/index.js";
import type { SftpOrigin } from "../origin/index.js";
import type { TwinFigures } from "./status.js";

const log = logger("twins");

/** SSH servers allow 10 sessions per connection by default; leave room for the rest. */
const MAX_HASHES = 3;

/**
 * Up to this size a file is hashed in the connection's long-lived shell (one round trip);
 * a larger one on an exec channel of its own, so as not to hold up the shell's other scripts.
 */
const SHELL_HASH_MAX_BYTES = 16 * 1024 * 1024;

function localSha256(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(path)
      .on("data", (d) => h.update(d))
      .on("error", reject)
      .on("end", () => resolve(h.digest("hex")));
  });
}

export class Twins {
  private found = { files: 0, bytes: 0 };
  private mismatches = 0;
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private manifest: Manifest,
    private readonly origin: SftpOrigin,
  ) {}

  /** The plan arrived (migrate mounts before the dump). */
  plan(manifest: Manifest): void {
    this.manifest = manifest;
  }

  get figures(): TwinFigures {
    // The plan serves the process's own files from identical copies too (size and mtime).
    const planned = this.manifest.files.filter(
      (f) => f.served && f.type === "file" && f.policy === "local",
    );
    return {
      identicalFiles: planned.length + this.found.files,
      identicalBytes: planned.reduce((n, f) => n + f.size, 0) + this.found.bytes,
      hashMismatches: this.mismatches,
    };
  }

  readonly find: LocalTwin = async (originPath, size, mtimeMs) => {
    const localPath = mapPath(originPath, this.manifest.maps);
    const st = await lstat(localPath).catch(() => undefined);
    if (!st?.isFile() || st.size !== size) return undefined;
    if (!sameMtime(st.mtimeMs, mtimeMs, this.origin.mtimePrecisionMs)) return undefined;
    const same = size === 0 || (await this.sameContent(originPath, localPath, size));
    if (!same) return undefined;
    this.found.files++;
    this.found.bytes += size;
    return localPath;
  };

  private async sameContent(originPath: string, localPath: string, size: number) {
    await this.slot();
    try {
      // A chained migration's origin shows the file in its own view, under its mount.
      const chain = this.manifest.chain;
      const there = chain ? viewPathOn(chain, originPath) : originPath;
      const command = `sha256sum -- ${shq(there)} 2>/dev/null`;
      const [theirs, ours] = await Promise.all([
        size <= SHELL_HASH_MAX_BYTES
          ? this.origin.shellScript(command)
          : this.origin.exec(command, { timeoutMs: 600_000 }).then((r) => r.stdout),
        localSha256(localPath),
      ]);
      const hash = /^[0-9a-f]{64} /.test(theirs) ? theirs.slice(0, 64) : undefined;
      if (hash === ours) return true;
      if (hash) this.mismatches++;
      return false;
    } catch (err) {
      log.debug("no hash; fetching instead", { path: originPath, error: errorMessage(err) });
      return false;
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }

  private async slot(): Promise<void> {
    while (this.running >= MAX_HASHES) await new Promise<void>((r) => this.waiting.push(r));
    this.running++;
  }
}
