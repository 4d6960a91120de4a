/**
 * A ranged read over SFTP: the range split into requests of at most the server's read limit,
 * all in flight at once on one channel; with a verification, an fstat of the handle goes
 * right behind them (the server answers it after serving the reads). Pieces are handed over
 * as they arrive, with a promise of the verification's verdict (the store writes them early
 * and records them only once it passed).
 */
import type { SFTPWrapper, Stats } from "ssh2";
import type { OriginStat, ReadPartCallback } from "../types.js";

export function toStat(s: Stats): OriginStat {
  return {
    size: s.size,
    mtimeMs: s.mtime * 1000,
    mode: s.mode,
    uid: s.uid,
    gid: s.gid,
    isDirectory: s.isDirectory(),
    atimeMs: s.atime * 1000,
  };
}

export function cb<T>(resolve: (v: T) => void, reject: (e: unknown) => void) {
  return (err: Error | null | undefined, value: T) => (err ? reject(err) : resolve(value));
}

/**
 * Bytes offset..offset+length of the open `handle` (fewer only at end of file). `verify`
 * gets the handle's attributes taken after the data; throwing rejects the read, as does a
 * rejection of `alsoVerified` (another check running beside the read).
 */
export async function readRange(
  sftp: SFTPWrapper,
  handle: Buffer,
  offset: number,
  length: number,
  chunk: number,
  onPart?: ReadPartCallback,
  verify?: (st: OriginStat) => void,
  alsoVerified?: Promise<void>,
): Promise<Buffer> {
  const out = Buffer.allocUnsafe(length);
  const parts: Promise<number>[] = [];
  // Set right after the reads go out, before any of them can answer.
  let verified: Promise<void> | undefined;
  for (let pos = 0; pos < length; pos += chunk) {
    const len = Math.min(chunk, length - pos);
    parts.push(
      new Promise<number>((res, rej) =>
        sftp.read(handle, out, pos, len, offset + pos, (err, nb) => {
          if (err) return rej(err);
          if (nb === len) onPart?.(pos, nb, out, verified);
          res(nb);
        }),
      ),
    );
  }
  // The fstat goes out after the reads, so the server answers it after serving them.
  if (verify) {
    const attrs = new Promise<Stats>((res, rej) => sftp.fstat(handle, cb(res, rej))).then((st) =>
      verify(toStat(st)),
    );
    verified = Promise.all([attrs, alsoVerified]).then(() => {});
    verified.catch(() => {});
  }
  const got = await Promise.all(parts);
  await verified;
  let total = 0;
  for (let i = 0; i < got.length; i++) {
    total += got[i]!;
    if (got[i]! < Math.min(chunk, length - i * chunk)) break;
  }
  return out.subarray(0, total);
}
