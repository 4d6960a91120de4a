/**
 * Which processes still use files under a directory: open fds, cwd, root, exe and mapped
 * files, read from /proc. `unmount` refuses while this is non-empty (unless forced).
 */
import { readdir, readFile, readlink } from "node:fs/promises";

export interface Holder {
  pid: number;
  comm: string;
  uses: string[];
}

function under(path: string, dir: string): boolean {
  const p = path.replace(/ \(deleted\)$/, "");
  return p === dir || p.startsWith(`${dir}/`);
}

async function link(p: string): Promise<string | undefined> {
  try {
    return await readlink(p);
  } catch {
    return undefined;
  }
}

/**
 * Processes using `dir`; with `mountNs`, also every process living in that mount namespace
 * (the restored tree sees the served files at their original paths there).
 */
export async function findHolders(
  dir: string,
  ignorePids: number[] = [],
  mountNs?: string,
): Promise<Holder[]> {
  const out: Holder[] = [];
  const pids = (await readdir("/proc")).filter((n) => /^\d+$/.test(n)).map(Number);
  for (const pid of pids) {
    if (ignorePids.includes(pid)) continue;
    const uses: string[] = [];
    if (mountNs && (await link(`/proc/${pid}/ns/mnt`)) === mountNs) {
      uses.push(`its mount namespace ${mountNs}`);
    }
    for (const what of ["cwd", "root", "exe"]) {
      const target = await link(`/proc/${pid}/${what}`);
      if (target && target !== "/" && under(target, dir)) uses.push(`${what} ${target}`);
    }
    let fds: string[] = [];
    try {
      fds = await readdir(`/proc/${pid}/fd`);
    } catch {
      continue; // gone, or a kernel thread
    }
    for (const fd of fds) {
      const target = await link(`/proc/${pid}/fd/${fd}`);
      if (target && under(target, dir)) uses.push(`fd ${fd} ${target}`);
    }
    try {
      const maps = await readFile(`/proc/${pid}/maps`, "utf8");
      const seen = new Set<string>();
      for (const line of maps.split("\n")) {
        const i = line.indexOf("/");
        if (i < 0) continue;
        const path = line.slice(i);
        if (under(path, dir) && !seen.has(path)) {
          seen.add(path);
          uses.push(`map ${path}`);
        }
      }
    } catch {
      // gone
    }
    if (uses.length > 0) {
      const comm = (await readFile(`/proc/${pid}/comm`, "utf8").catch(() => "?")).trim();
      out.push({ pid, comm, uses });
    }
  }
  return out;
}

/** The first few holders, for a message. */
export function holdersText(holders: Holder[]): string {
  return holders
    .slice(0, 3)
    .map((h) => `pid ${h.pid} (${h.comm}): ${h.uses.slice(0, 2).join(", ")}`)
    .join("; ");
}
