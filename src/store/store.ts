/**
 * The cache directory (mode 0700): `store.json` (block size), and per file
 * `files/<key>.json` (its metadata as the checkpoint recorded it), `files/<key>.data` (sparse
 * data) and `files/<key>.state` (block states, see BlockFile). Reopening resumes everything.
 */
import { createHash } from "node:crypto";
import { chmod, mkdir, open, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { errnoCode, errorMessage, UserError } from "../common/errors.js";
import { checkStateDir, writeFileAtomic } from "../common/private-files.js";
import { BlockFile } from "./blockfile.js";
import { CacheSpace } from "./space.js";

export type Policy = "lazy" | "eager" | "remote" | "scrub" | "local";
export const POLICIES: readonly Policy[] = ["lazy", "eager", "remote", "scrub", "local"];

/** A migrated file as the checkpoint recorded it on the origin host. */
export interface FileMeta {
  /** Caller's key for the file (unique in this cache). */
  id: string;
  originPath: string;
  size: number;
  mtimeMs: number;
  mode: number;
  uid: number;
  gid: number;
  policy: Policy;
  /** For `local`: the target's own copy, used when its size and mtime match. */
  localPath?: string;
  /** The origin's inode number and status-change time at the checkpoint, when known. */
  ino?: number;
  ctimeMs?: number;
  /**
   * Where the origin's bytes are read, when not `originPath`: a snapshot (a reflink clone
   * taken at the dump); then size, mtime, ctime and inode above are the clone's.
   */
  readPath?: string;
}

/**
 * Block size of a new cache: the smallest fetch (a random 64 KiB page read moves 64 KiB);
 * sequential readers fetch many blocks per origin read (fetch/readahead.ts). Caches made
 * before with 256 KiB blocks keep theirs (store.json).
 */
export const DEFAULT_BLOCK_SIZE = 64 * 1024;

function validBlockSize(n: unknown): n is number {
  return typeof n === "number" && Number.isInteger(n) && n >= 4096 && n % 4096 === 0;
}

/** Where a cache directory keeps file `id`: its metadata, sparse data and block states. */
export function storeFilePaths(
  cacheDir: string,
  id: string,
): { meta: string; data: string; state: string } {
  const key = createHash("sha256").update(id).digest("hex").slice(0, 32);
  const base = join(cacheDir, "files", key);
  return { meta: `${base}.json`, data: `${base}.data`, state: `${base}.state` };
}

/** store.json and files/<key>.json: a fresh O_EXCL|O_NOFOLLOW temp file, flushed, renamed. */
function writeDurably(path: string, text: string) {
  return writeFileAtomic(path, text, { durable: true });
}

async function syncDir(dir: string) {
  const fh = await open(dir, "r");
  await fh.sync().catch(() => {});
  await fh.close();
}

export class Store {
  /** Whether the cache's disk is full (see space.ts). */
  readonly space: CacheSpace;

  private constructor(
    readonly dir: string,
    readonly blockSize: number,
  ) {
    // Room again once a few blocks fit, so that the next fills do not fail at once.
    this.space = new CacheSpace(dir, Math.max(1 << 20, 4 * blockSize));
  }

  /** Opens or creates a cache directory; an existing one keeps the block size it was made with. */
  static async open(dir: string, blockSize = DEFAULT_BLOCK_SIZE): Promise<Store> {
    if (!validBlockSize(blockSize)) {
      throw new UserError(`store: block size ${blockSize} must be a positive multiple of 4096`);
    }
    await checkStateDir(dir, "cache directory");
    try {
      await mkdir(join(dir, "files"), { recursive: true, mode: 0o700 });
      await chmod(dir, 0o700);
      const cfgPath = join(dir, "store.json");
      let cfg: { blockSize: number } | undefined;
      try {
        cfg = JSON.parse(await readFile(cfgPath, "utf8")) as { blockSize: number };
      } catch (err) {
        if (errnoCode(err) !== "ENOENT") throw err;
      }
      if (!cfg) {
        cfg = { blockSize };
        await writeDurably(cfgPath, JSON.stringify(cfg));
        await syncDir(dir);
      }
      if (!validBlockSize(cfg.blockSize)) {
        throw new UserError(
          `store: ${cfgPath} records block size ${String(cfg.blockSize)}, not a multiple of 4096`,
        );
      }
      return new Store(dir, cfg.blockSize);
    } catch (err) {
      if (err instanceof UserError) throw err;
      throw new UserError(`store: cannot open cache directory ${dir}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
  }

  private base(id: string): string {
    return storeFilePaths(this.dir, id).data.slice(0, -".data".length);
  }

  /** Metadata of every file this cache holds. */
  async list(): Promise<FileMeta[]> {
    const names = await readdir(join(this.dir, "files"));
    const out: FileMeta[] = [];
    for (const n of names.filter((n) => n.endsWith(".json")).sort()) {
      out.push(JSON.parse(await readFile(join(this.dir, "files", n), "utf8")) as FileMeta);
    }
    return out;
  }

  /** Records `meta` (durably) and opens its block file; an existing file resumes. */
  async openFile(meta: FileMeta, create: boolean): Promise<BlockFile> {
    const base = this.base(meta.id);
    if (create) {
      await writeDurably(`${base}.json`, JSON.stringify(meta)).catch((err: unknown) => {
        this.space.writeFailed(err);
        throw err;
      });
    }
    const file = await BlockFile.open(
      `${base}.data`,
      `${base}.state`,
      this.blockSize,
      meta.size,
      this.space,
    );
    if (create) await syncDir(join(this.dir, "files"));
    return file;
  }

  async removeFile(id: string): Promise<void> {
    const base = this.base(id);
    for (const ext of [".json", ".data", ".state", ".state.unsynced"])
      await rm(`${base}${ext}`, { force: true });
  }
}
