/**
 * Changing files on the origin over SFTP: writes and truncation for the `remote` policy
 * (whose writes go to the origin), and whole-file uploads (a bundle pushed to the origin).
 * Each is the SFTP call of one request; the request (timeout, retry) is origin.ts's.
 */
import { stat } from "node:fs/promises";
import { errorMessage, UserError } from "../../common/errors.js";
import { type Connection, openHandle } from "./connection.js";

const WRITE_CHUNK = 32 * 1024;
/** fastPut's write size and writes in flight (OpenSSH takes up to 256 KiB per message). */
const UPLOAD_CHUNK = 128 * 1024;
const UPLOAD_CONCURRENCY = 16;

/** Writes `data` at `offset` of `path` (opened for writing once per connection). */
export async function writeAt(
  c: Connection,
  path: string,
  offset: number,
  data: Buffer,
): Promise<void> {
  const handle = await openHandle(c, path, true);
  const parts: Promise<void>[] = [];
  for (let pos = 0; pos < data.length; pos += WRITE_CHUNK) {
    const len = Math.min(WRITE_CHUNK, data.length - pos);
    parts.push(
      new Promise<void>((res, rej) =>
        c.sftp.write(handle, data, pos, len, offset + pos, (err) => (err ? rej(err) : res())),
      ),
    );
  }
  await Promise.all(parts);
}

export function truncateTo(c: Connection, path: string, size: number): Promise<void> {
  return new Promise<void>((res, rej) =>
    c.sftp.setstat(path, { size }, (err) => (err ? rej(err) : res())),
  );
}

/** The size of the local file to upload; unreadable: a UserError naming the origin `name`. */
export async function uploadSize(localPath: string, name: () => string): Promise<number> {
  try {
    return (await stat(localPath)).size;
  } catch (err) {
    throw new UserError(`${name()}: upload: cannot read ${localPath}: ${errorMessage(err)}`);
  }
}

/** Copies `localPath` to `remotePath` with many large writes in flight (ssh2's fastPut). */
export function putFile(
  c: Connection,
  localPath: string,
  remotePath: string,
  mode: number,
): Promise<void> {
  return new Promise<void>((res, rej) =>
    c.sftp.fastPut(
      localPath,
      remotePath,
      { concurrency: UPLOAD_CONCURRENCY, chunkSize: UPLOAD_CHUNK, mode },
      (err) => (err ? rej(err) : res()),
    ),
  );
}
