/**
 * Origin on this machine: a directory tree whose root stands for the origin host's `/`
 * (tests, and the `local` policy's fallback). Paths are resolved under `root` and may not
 * escape it.
 */
import { type FileHandle, lstat, open, readdir, readlink, stat, truncate } from "node:fs/promises";
import { join, normalize } from "node:path";
import { errnoCode, errorMessage, UserError } from "../common/errors.js";
import type { Origin, OriginDirEntry, OriginStat, ReadCheck, ReadPartCallback } from "./types.js";

function toStat(s: import("node:fs").Stats): OriginStat {
  return {
    size: s.size,
    mtimeMs: s.mtimeMs,
    mode: s.mode,
    uid: s.uid,
    gid: s.gid,
    isDirectory: s.isDirectory(),
    atimeMs: s.atimeMs,
  };
}

export class LocalOrigin implements Origin {
  readonly name: string;
  readonly mtimePrecisionMs = 1;

  constructor(readonly root = "/") {
    this.name = `local:${root}`;
  }

  private resolve(path: string): string {
    return join(this.root, normalize(`/${path}`));
  }

  private fail(op: string, path: string, err: unknown): never {
    throw new UserError(`${this.name}: ${op} ${path}: ${errnoCode(err) ?? errorMessage(err)}`, {
      cause: err,
    });
  }

  async stat(path: string): Promise<OriginStat> {
    try {
      return toStat(await stat(this.resolve(path)));
    } catch (err) {
      return this.fail("stat", path, err);
    }
  }

  async lstat(path: string): Promise<OriginStat> {
    try {
      return toStat(await lstat(this.resolve(path)));
    } catch (err) {
      return this.fail("lstat", path, err);
    }
  }

  async readlink(path: string): Promise<string> {
    try {
      return await readlink(this.resolve(path));
    } catch (err) {
      return this.fail("readlink", path, err);
    }
  }

  async read(
    path: string,
    offset: number,
    length: number,
    _onPart?: ReadPartCallback,
    check?: ReadCheck,
  ): Promise<Buffer> {
    let fh: FileHandle | undefined;
    try {
      fh = await open(this.resolve(path), "r");
      const buf = Buffer.allocUnsafe(length);
      let got = 0;
      while (got < length) {
        const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      const data = buf.subarray(0, got);
      if (check) {
        const st = await fh.stat();
        check({ ...toStat(st), ino: st.ino, ctimeMs: st.ctimeMs });
      }
      return data;
    } catch (err) {
      if (err instanceof UserError) throw err;
      return this.fail(`read @${offset}+${length}`, path, err);
    } finally {
      await fh?.close();
    }
  }

  async readdir(path: string): Promise<OriginDirEntry[]> {
    try {
      const dir = this.resolve(path);
      const names = await readdir(dir);
      const entries = await Promise.all(
        names.map(async (name) => {
          // A name removed between readdir and lstat is simply not listed.
          const st = await lstat(join(dir, name)).catch(() => undefined);
          return st ? { name, stat: toStat(st) } : undefined;
        }),
      );
      return entries.filter((e) => e !== undefined);
    } catch (err) {
      return this.fail("readdir", path, err);
    }
  }

  async write(path: string, offset: number, data: Buffer): Promise<void> {
    let fh: FileHandle | undefined;
    try {
      fh = await open(this.resolve(path), "r+");
      await fh.write(data, 0, data.length, offset);
    } catch (err) {
      return this.fail(`write @${offset}+${data.length}`, path, err);
    } finally {
      await fh?.close();
    }
  }

  async truncate(path: string, size: number): Promise<void> {
    try {
      await truncate(this.resolve(path), size);
    } catch (err) {
      return this.fail(`truncate to ${size}`, path, err);
    }
  }

  async close(): Promise<void> {}
}
