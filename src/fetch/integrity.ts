/**
 * Origin integrity: a migrated file is served from the origin only while it is still the file
 * the checkpoint recorded (size, mtime, ctime, inode at the dump). Every origin read carries a
 * check (the origin runs it on its open file after reading, see ReadCheck); a file found
 * changed is refused for good, torn or not, unless changed files are allowed: then the new
 * content is accepted once and everything not yet local comes from it.
 *
 * Verdicts are kept in `<cacheDir>/integrity.json`, so a restarted daemon refuses the same
 * files (and serves an accepted change from the same new content) and `status` shows them.
 */
import { readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { type FileIdentity, identityDiffers } from "../origin/exact-stat.js";
import type { OriginStat, ReadCheck } from "../origin/types.js";
import type { FileMeta } from "../store/store.js";

const log = logger("integrity");

/** Why a file is not served from the origin (status: per file, and counted in the total). */
export interface Refusal {
  reason: string;
  /** Offset of the read that found it. */
  offset: number;
  atMs: number;
}

/** A change accepted with allowChanged: the file is served from this new content. */
export interface AcceptedChange {
  reason: string;
  atMs: number;
  identity: FileIdentity;
}

interface Verdicts {
  refused: Record<string, Refusal>;
  changed: Record<string, AcceptedChange>;
}

/** The error a read of a refused file gets (EIO for the process). */
export class RefusedError extends UserError {}

export class Integrity {
  private writing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly file: string,
    private readonly verdicts: Verdicts,
    private readonly allowChanged: boolean,
  ) {}

  static async load(cacheDir: string, allowChanged: boolean): Promise<Integrity> {
    const file = join(cacheDir, "integrity.json");
    let v: Verdicts = { refused: {}, changed: {} };
    try {
      const parsed = JSON.parse(await readFile(file, "utf8")) as Partial<Verdicts>;
      v = { refused: parsed.refused ?? {}, changed: parsed.changed ?? {} };
    } catch {
      // none yet
    }
    return new Integrity(file, v, allowChanged);
  }

  /** What file `meta` must still be on the origin (the dump's, or an accepted change). */
  private expected(meta: FileMeta): FileIdentity {
    const accepted = this.verdicts.changed[meta.id];
    if (accepted) return accepted.identity;
    return {
      size: meta.size,
      mtimeMs: meta.mtimeMs,
      ...(meta.ctimeMs !== undefined ? { ctimeMs: meta.ctimeMs } : {}),
      ...(meta.ino !== undefined ? { ino: meta.ino } : {}),
    };
  }

  /** Throws the refusal of file `meta` if it has one (a read that would need the origin). */
  assertServable(meta: FileMeta, originName: string, offset: number): void {
    const r = this.verdicts.refused[meta.id];
    if (!r) return;
    log.warn("refused read: the file changed on the origin", {
      path: meta.originPath,
      offset,
      reason: r.reason,
    });
    throw this.refusedError(meta, originName, r.reason);
  }

  private refusedError(meta: FileMeta, originName: string, reason: string): RefusedError {
    return new RefusedError(
      `${meta.originPath} on ${originName} changed since the checkpoint: ${reason} (not served; allow changed files to serve it anyway)`,
    );
  }

  /** The check an origin read of `meta` at `offset` carries. */
  checkFor(meta: FileMeta, originName: string, offset: number): ReadCheck {
    return (st: OriginStat) => {
      const why = identityDiffers(this.expected(meta), st);
      if (!why) return;
      const atMs = Date.now();
      if (this.allowChanged) {
        const prev = this.expected(meta);
        const identity: FileIdentity =
          st.ctimeMs !== undefined
            ? {
                size: st.size,
                mtimeMs: st.mtimeMs,
                ctimeMs: st.ctimeMs,
                ...(st.ino !== undefined ? { ino: st.ino } : {}),
              }
            : { ...prev, size: st.size, mtimeMs: st.mtimeMs };
        this.verdicts.changed[meta.id] = { reason: why, atMs, identity };
        log.warn("serving a file changed since the checkpoint (allowed)", {
          path: meta.originPath,
          offset,
          reason: why,
        });
        this.persist();
        return;
      }
      this.verdicts.refused[meta.id] ??= { reason: why, offset, atMs };
      log.warn("refused: the file changed on the origin since the checkpoint", {
        path: meta.originPath,
        offset,
        reason: why,
      });
      this.persist();
      throw this.refusedError(meta, originName, why);
    };
  }

  /** A file that is gone from the origin is a changed file too. */
  refuseMissing(meta: FileMeta, originName: string, offset: number, err: unknown): never {
    const why = `no longer on the origin (${errorMessage(err)})`;
    if (!this.verdicts.refused[meta.id]) {
      this.verdicts.refused[meta.id] = { reason: why, offset, atMs: Date.now() };
      log.warn("refused: the file is gone from the origin", { path: meta.originPath, offset });
      this.persist();
    }
    throw this.refusedError(meta, originName, why);
  }

  /** Status fields of file `id`: `refused` and/or `changed`, each with its reason. */
  statusOf(id: string): {
    refused?: { reason: string; offset: number; atMs: number };
    changed?: { reason: string; atMs: number };
  } {
    const r = this.verdicts.refused[id];
    const c = this.verdicts.changed[id];
    return {
      ...(r ? { refused: { ...r } } : {}),
      ...(c ? { changed: { reason: c.reason, atMs: c.atMs } } : {}),
    };
  }

  forget(id: string): void {
    if (!this.verdicts.refused[id] && !this.verdicts.changed[id]) return;
    delete this.verdicts.refused[id];
    delete this.verdicts.changed[id];
    this.persist();
  }

  /** Resolves once every verdict so far is on disk. */
  flush(): Promise<void> {
    return this.writing;
  }

  private persist(): void {
    const text = `${JSON.stringify(this.verdicts)}\n`;
    this.writing = this.writing
      .then(async () => {
        const tmp = `${this.file}.tmp`;
        await writeFile(tmp, text, { mode: 0o600 });
        await rename(tmp, this.file);
      })
      .catch((err) => log.warn("cannot record integrity verdicts", { error: errorMessage(err) }));
  }
}
