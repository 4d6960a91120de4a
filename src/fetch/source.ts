/**
 * Where a file's bytes come from, for the engine: each file is prepared once (policy `scrub`:
 * the scrub generator; `local`: the target's own copy if it is identical as the plan judged
 * it; otherwise the origin), and each run of it is read from there rate-limited, checked
 * against the checkpoint when it comes from the origin (integrity.ts), and counted under its
 * real source (accounting.ts). Kept apart so the engine's read and write paths only ask.
 */
import { stat } from "node:fs/promises";
import { logger } from "../common/log.js";
import { LocalOrigin } from "../origin/local.js";
import { isNotFound, type Origin, type ReadPartCallback } from "../origin/types.js";
import type { Accounting, ByteSource } from "./accounting.js";
import type { Integrity } from "./integrity.js";
import type { RateLimiter } from "./ratelimit.js";
import { type Entry, type PreparedSource, sameMtime } from "./types.js";

const log = logger("fetch");

export class Sources {
  constructor(
    private readonly origin: Origin,
    private readonly scrubOrigin: Origin,
    private readonly limiter: RateLimiter,
    private readonly acct: Accounting,
    private readonly integrity: Integrity,
  ) {}

  /** Decides where a file's content comes from, verifying the origin copy once. */
  prepare(e: Entry): Promise<PreparedSource> {
    e.prepared ??= (async () => {
      const m = e.meta;
      if (m.policy === "scrub")
        return { source: this.scrubOrigin, path: m.originPath, fromOrigin: false };
      if (m.policy === "local" && m.localPath) {
        const st = await stat(m.localPath).catch(() => undefined);
        // Identical as the plan judged it: same size, same mtime to the origin's precision.
        const p = this.origin.mtimePrecisionMs;
        if (st && st.size === m.size && sameMtime(st.mtimeMs, m.mtimeMs, p)) {
          e.dependsOnOrigin = false;
          return { source: new LocalOrigin("/"), path: m.localPath, fromOrigin: false };
        }
        log.info("local copy differs; fetching from origin", { path: m.localPath });
      }
      // Checked on every read (originRead); a remote file is the origin's live content.
      return { source: this.origin, path: m.readPath ?? m.originPath, fromOrigin: true };
    })();
    e.prepared.catch(() => {});
    return e.prepared;
  }

  /** A read of a file kept here: from the origin only while it is the checkpoint's file. */
  private async originRead(
    e: Entry,
    source: Origin,
    path: string,
    off: number,
    len: number,
    onPart: ReadPartCallback,
  ): Promise<Buffer> {
    if (source !== this.origin) return source.read(path, off, len, onPart);
    this.integrity.assertServable(e.meta, source.name, off);
    try {
      return await source.read(
        path,
        off,
        len,
        onPart,
        this.integrity.checkFor(e.meta, source.name, off),
      );
    } catch (err) {
      if (isNotFound(err)) this.integrity.refuseMissing(e.meta, source.name, off, err);
      throw err;
    }
  }

  /** Counts `bytes` from `source` for file `e` (origin, scrub or local copy: see accounting.ts). */
  account(e: Entry, source: Origin, bytes: number) {
    this.acct.fetched(e.stats, source, bytes);
  }

  /** Where a fetch for `e` gets its bytes (known once prepared; by policy before). */
  fetchSource(e: Entry): ByteSource {
    if (e.meta.policy === "scrub") return "scrub";
    return e.dependsOnOrigin ? "origin" : "local-copy";
  }

  /** One run's bytes from wherever `e` comes from: rate-limited, checked, counted. */
  async fetchRun(e: Entry, off: number, len: number, onPart: ReadPartCallback): Promise<Buffer> {
    const { source, path } = await this.prepare(e);
    await this.limiter.acquire(len);
    const data = await this.originRead(e, source, path, off, len, onPart);
    this.account(e, source, data.length);
    return data;
  }
}
