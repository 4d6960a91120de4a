/**
 * The checks a read may carry (ReadCheck), as the SFTP origin runs them: the file's exact
 * identity through the connection's shell, once per file and connection (cached in the
 * connection's `verified`), and the handle's attributes fetched behind the data. A refusal is
 * a CheckFailed: the read fails with its cause and is never retried (request.ts).
 */
import { UserError } from "../../common/errors.js";
import type { OriginStat, ReadCheck } from "../types.js";
import type { Connection } from "./connection.js";
import { CheckFailed } from "./request.js";

/**
 * Checks a handle just opened on `c` against the file's exact identity (one `stat` in a
 * shell, after the open: a path replaced in between shows as a different inode). `name` is
 * the origin's name, for the message when the file is gone.
 */
export function verifyHandle(
  c: Connection,
  name: () => string,
  path: string,
  check: ReadCheck,
): Promise<void> {
  let v = c.verified.get(path);
  if (!v) {
    v = (async () => {
      const st = await c.exactStats.stat(path);
      if (!st) {
        const gone = new UserError(`${name()}: stat ${path}: no such file`, {
          cause: { code: 2 },
        });
        throw new CheckFailed("gone", { cause: gone });
      }
      try {
        check(st);
      } catch (err) {
        throw new CheckFailed("check", { cause: err });
      }
    })();
    c.verified.set(path, v);
    v.catch(() => c.verified.delete(path));
  }
  return v;
}

/** `check` for the attributes fetched right behind a read's data (readRange's `verify`). */
export function attrsCheck(check: ReadCheck): (st: OriginStat) => void {
  return (st: OriginStat) => {
    try {
      check(st);
    } catch (err) {
      throw new CheckFailed("check", { cause: err });
    }
  };
}
