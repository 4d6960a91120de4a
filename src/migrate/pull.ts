/**
 * Bringing a dump's images from the origin to the target over SFTP, and with them the
 * checkpoint's view of every referenced file (stat taken as soon as the file table is here,
 * in parallel with the rest of the transfer, while nothing has touched the files yet).
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { UserError } from "../common/errors.js";
import { componentProblem, normalizeAbsolute } from "../common/paths.js";
import { loadFileTable } from "../criu/index.js";
import {
  exactStatScript,
  type OriginStat,
  parseExactStat,
  type SftpOrigin,
} from "../origin/index.js";

const TABLES = new Set(["files.img", "reg-files.img"]);

/** An image name from the origin is one plain path component, never a way out of `dir`. */
function checkImageName(host: string, remoteDir: string, name: string): void {
  const problem = componentProblem(name);
  if (problem) {
    throw new UserError(
      `${host}: the dump directory ${remoteDir} lists an entry named ${JSON.stringify(name)} (${problem}), which is not a file name; refusing the dump, nothing was written`,
    );
  }
}

export async function pullImages(
  origin: SftpOrigin,
  remoteDir: string,
  dir: string,
  /** How the referenced files are stat'ed (migrate: in the dump's own SSH session). */
  statPaths: (paths: string[]) => Promise<Record<string, OriginStat>> = (p) =>
    statOnOrigin(origin, p),
  /** Where the origin shows a path of the process's view (a chained migration's origin). */
  viewPath: (path: string) => string = (p) => p,
): Promise<{ bytes: number; stats: Record<string, OriginStat> }> {
  const entries = (await origin.readdir(remoteDir)).filter((e) => !e.stat.isDirectory);
  for (const e of entries) checkImageName(origin.name, remoteDir, e.name);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  let bytes = 0;
  const pull = async (name: string, size: number) => {
    const data = await origin.read(`${remoteDir}/${name}`, 0, size);
    await writeFile(join(dir, name), data, { mode: 0o600, flag: "wx" });
    bytes += data.length;
  };
  const stats: Record<string, OriginStat> = {};
  const tables = entries.filter((e) => TABLES.has(e.name));
  const statting = Promise.all(tables.map((e) => pull(e.name, e.stat.size))).then(async () => {
    const table = await loadFileTable(dir);
    const paths = new Set<string>();
    for (const e of table.values()) {
      const name = e.reg?.name;
      if (typeof name === "string" && name.startsWith("/")) paths.add(normalizeAbsolute(name));
    }
    // Not on the origin's file system (deleted, kernel fs): the plan skips or reports it.
    const list = [...paths];
    const found = await statPaths(list.map(viewPath));
    for (const p of list) {
      const st = found[viewPath(p)];
      if (st) stats[p] = st;
    }
  });
  await Promise.all([
    statting,
    ...entries.filter((e) => !TABLES.has(e.name)).map((e) => pull(e.name, e.stat.size)),
  ]);
  return { bytes, stats };
}

/**
 * `stat` of many paths on the origin in one SSH exchange, with what SFTP does not tell:
 * inode numbers (a migrated SQLite compares its database's inode with the path's) and
 * nanosecond times. Paths missing there are left out.
 */
export async function statOnOrigin(
  origin: SftpOrigin,
  paths: readonly string[],
): Promise<Record<string, OriginStat>> {
  const out: Record<string, OriginStat> = {};
  if (paths.length === 0) return out;
  const lines = (await origin.exec(exactStatScript(paths))).stdout.split("\n");
  paths.forEach((path, i) => {
    const st = parseExactStat(lines[i]);
    if (st) out[path] = st;
  });
  return out;
}
