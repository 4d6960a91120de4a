/**
 * A ranged read over SFTP: the range split into requests of at most the server's read limit,
 * all in flight at once on one channel; with a verification, an fstat of the handle goes
 * right behind them (the server answers it after serving the reads) and no piece is handed
 * over before the attributes passed.
 */
import type { SFTPWrapper, Stats } from "ssh2";
import type { OriginStat, ReadPartCallback } from "./types.js";

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
 * gets the handle's attributes taken after the data; throwing rejects the read.
 */
export async function readRange(
  sftp: SFTPWrapper,
  handle: Buffer,
  offset: number,
  length: number,
  chunk: number,
  onPart?: ReadPartCallback,
  verify?: (st: OriginStat) => void,
): Promise<Buffer> {
  const out = Buffer.allocUnsafe(length);
  const parts: Promise<number>[] = [];
  // With a verification, pieces are handed over only once it passed.
  const held: [number, number][] = [];
  for (let pos = 0; pos < length; pos += chunk) {
    const len = Math.min(chunk, length - pos);
    parts.push(
      new Promise<number>((res, rej) =>
        sftp.read(handle, out, pos, len, offset + pos, (err, nb) => {
          if (err) return rej(err);
          if (nb === len) {
            if (verify) held.push([pos, nb]);
            else onPart?.(pos, nb, out);
          }
          res(nb);
        }),
      ),
    );
  }
  const attrs = verify
    ? new Promise<Stats>((res, rej) => sftp.fstat(handle, cb(res, rej)))
    : undefined;
  attrs?.catch(() => {});
  const got = await Promise.all(parts);
  if (verify && attrs) {
    verify(toStat(await attrs));
    for (const [pos, nb] of held) onPart?.(pos, nb, out);
  }
  let total = 0;
  for (let i = 0; i < got.length; i++) {
    total += got[i]!;
    if (got[i]! < Math.min(chunk, length - i * chunk)) break;
  }
  return out.subarray(0, total);
}
