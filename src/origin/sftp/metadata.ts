/**
 * What the origin says about names over SFTP: stat, lstat, readlink and a directory's
 * entries, its attributes mapped to OriginStat (read.ts's toStat). Each is the SFTP call of
 * one request; the request (timeout, retry) is origin.ts's.
 */
import type { Stats } from "ssh2";
import type { OriginDirEntry, OriginStat } from "../types.js";
import type { Connection } from "./connection.js";
import { cb, toStat } from "./read.js";

export async function statOf(c: Connection, path: string): Promise<OriginStat> {
  return toStat(await new Promise<Stats>((res, rej) => c.sftp.stat(path, cb(res, rej))));
}

export async function lstatOf(c: Connection, path: string): Promise<OriginStat> {
  return toStat(await new Promise<Stats>((res, rej) => c.sftp.lstat(path, cb(res, rej))));
}

export function readlinkOf(c: Connection, path: string): Promise<string> {
  return new Promise<string>((res, rej) => c.sftp.readlink(path, cb(res, rej)));
}

export async function readdirOf(c: Connection, path: string): Promise<OriginDirEntry[]> {
  const list = await new Promise<{ filename: string; attrs: Stats }[]>((res, rej) =>
    c.sftp.readdir(path, cb(res, rej)),
  );
  return list.map((e) => ({ name: e.filename, stat: toStat(e.attrs) }));
}
